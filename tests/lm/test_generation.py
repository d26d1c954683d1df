"""Sequence-level KD targets (teacher generates) and on-policy batches (student generates)."""

import pytest
import torch

from distil.distiller import Distiller
from distil.errors import ConfigError
from distil.lm.generation import OnPolicy, generate_teacher_targets, on_policy_batch
from distil.losses.lm.token_jsd import TokenJSD

V = 30


def greedy(model, prompt, steps):
    ids = prompt.clone()
    with torch.no_grad():
        for _ in range(steps):
            ids = torch.cat([ids, model(input_ids=ids[None]).logits[0, -1].argmax()[None]])
    return ids[len(prompt):]


@pytest.fixture
def teacher(make_gpt2):
    torch.manual_seed(2)
    return make_gpt2(V, hidden=32).eval()


def test_teacher_targets_are_greedy_continuations_with_masked_prompts(teacher):
    prompts = [torch.tensor([3, 4, 5]), torch.tensor([7]), torch.tensor([9, 8, 7, 6, 5])]
    examples = generate_teacher_targets(teacher, prompts, max_new_tokens=6, batch_size=2, pad_token_id=0)
    for prompt, ex in zip(prompts, examples):
        n = len(prompt)
        assert torch.equal(ex["input_ids"][:n], prompt)
        assert torch.equal(ex["input_ids"][n:], greedy(teacher, prompt, 6))  # left padding changed nothing
        assert ex["labels"][:n].eq(-100).all() and torch.equal(ex["labels"][n:], ex["input_ids"][n:])


def test_generation_stops_after_eos(teacher):
    prompt = torch.tensor([3, 4, 5])
    first = int(greedy(teacher, prompt, 1)[0])  # make the first generated token the eos
    ex = generate_teacher_targets(teacher, [prompt], max_new_tokens=5, eos_token_id=first, pad_token_id=0)[0]
    assert ex["input_ids"].tolist() == [3, 4, 5, first]
    teacher.generation_config.eos_token_id = first  # without an explicit id the model's own eos counts
    ex = generate_teacher_targets(teacher, [prompt], max_new_tokens=5, pad_token_id=0)[0]
    assert ex["input_ids"].tolist() == [3, 4, 5, first]


def test_on_policy_batch_feeds_the_token_losses(teacher, make_gpt2):
    student = make_gpt2(V, hidden=16).train()
    prompts = {"input_ids": torch.tensor([[5, 6, 7, 0], [8, 9, 0, 0]]), "attention_mask": torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])}
    batch = on_policy_batch(student, prompts, max_new_tokens=4, temperature=1.5, top_k=10, eos_token_id=V + 1)
    assert student.training  # mode restored
    # Prompts of 3 and 2 tokens plus 4 sampled tokens each (the eos id never occurs), right-padded.
    assert batch["input_ids"].shape == (2, 7) and batch["attention_mask"].sum().item() == (3 + 4) + (2 + 4)
    assert batch["input_ids"][1, :2].tolist() == [8, 9] and batch["labels"][1, :2].eq(-100).all()
    assert batch["labels"][1, 6].item() == -100 and batch["labels"][0, 3:].ne(-100).all()
    out = Distiller(student, teacher, {"gkd": TokenJSD(beta=0.5)})(batch)
    out["loss"].backward()
    assert out["loss"].item() > 0 and student.transformer.wte.weight.grad.abs().sum() > 0


def test_bad_arguments(teacher):
    with pytest.raises(ValueError, match="max_new_tokens: must be > 0"):
        generate_teacher_targets(teacher, [[1, 2]], max_new_tokens=0)
    with pytest.raises(ValueError, match="temperature: must be > 0"):
        on_policy_batch(teacher, [[1, 2]], max_new_tokens=2, temperature=0.0)
    with pytest.raises(ConfigError, match="cannot generate"):
        on_policy_batch(torch.nn.Linear(2, 2), [[1, 2]], max_new_tokens=2)


def test_on_policy_mixes_own_text_in_with_the_given_fraction(teacher):
    batch = {"input_ids": torch.randint(1, 30, (4, 12)), "attention_mask": torch.ones(4, 12, dtype=torch.long)}
    batch["labels"] = batch["input_ids"].clone()
    assert OnPolicy(fraction=0.0)(teacher, batch) is batch
    own = OnPolicy(fraction=1.0, prompt_tokens=5, max_new_tokens=3)(teacher, batch)
    assert torch.equal(own["input_ids"][:, :5], batch["input_ids"][:, :5])  # the prompts are kept
    assert (own["labels"][:, :5] == -100).all() and own["input_ids"].shape[1] <= 5 + 3
    torch.manual_seed(0)
    picks = [OnPolicy(fraction=0.3, prompt_tokens=5, max_new_tokens=1)(teacher, batch) is not batch for _ in range(200)]
    assert 0.2 < sum(picks) / len(picks) < 0.4
    with pytest.raises(ConfigError, match="on_policy: needs batches of token ids"):
        OnPolicy()(teacher, torch.zeros(2, 3))
    with pytest.raises(ValueError, match="fraction"):
        OnPolicy(fraction=1.5)
