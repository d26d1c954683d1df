"""End to end on CPU: a character-level GPT-2 teacher trained here, distilled into a smaller Llama.

Uses the Distiller with Hugging Face style dict batches ({"input_ids", "attention_mask", "labels"})
and a hand-written loop; held-out distillation loss and cross-entropy must fall and next-token
agreement with the teacher must rise.
"""

import math

import torch
import torch.nn.functional as F

from distil.distiller import Distiller
from distil.lm.vocab import check_same_vocab
from distil.losses.lm.token_kl import TokenKL

L = 32  # characters per window


def windows(ids, n, gen):
    starts = torch.randint(0, len(ids) - L, (n,), generator=gen)
    x = torch.stack([ids[s:s + L] for s in starts])
    return {"input_ids": x, "attention_mask": torch.ones_like(x), "labels": x.clone()}


def train_teacher(teacher, train_ids, gen, steps=250):
    opt = torch.optim.AdamW(teacher.parameters(), lr=3e-3)
    teacher.train()
    for _ in range(steps):
        loss = teacher(**windows(train_ids, 16, gen)).loss  # HF shifts labels internally
        opt.zero_grad()
        loss.backward()
        opt.step()
    return teacher.eval()


@torch.no_grad()
def evaluate(distiller, batch):
    distiller.student.eval()
    out = distiller(batch)
    distiller.student.train()
    student, teacher = out["output"][:, :-1], out["teacher_output"][:, :-1]  # (B, L - 1, V)
    targets = batch["labels"][:, 1:]
    ce = F.cross_entropy(student.reshape(-1, student.shape[-1]), targets.reshape(-1)).item()
    agree = (student.argmax(-1) == teacher.argmax(-1)).float().mean().item()
    return out["loss"].item(), ce, agree


def test_character_lm_distillation(text, char_vocab, make_gpt2, make_llama):
    ids = torch.tensor([char_vocab[c] for c in text])
    split = int(0.9 * len(ids))
    train_ids, held_ids = ids[:split], ids[split:]
    vocab, gen = len(char_vocab), torch.Generator().manual_seed(0)
    teacher = train_teacher(make_gpt2(vocab, hidden=64, positions=L), train_ids, gen)
    student = make_llama(vocab, hidden=32, positions=L)
    check_same_vocab(teacher, student)

    distiller = Distiller(student, teacher, {"kd": TokenKL(temperature=1.0)})
    opt = torch.optim.AdamW(list(distiller.trainable_parameters()), lr=3e-3)
    held = windows(held_ids, 32, torch.Generator().manual_seed(1))
    history = [evaluate(distiller, held)]
    for step in range(1, 151):
        out = distiller(windows(train_ids, 16, gen))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        if step % 75 == 0:
            history.append(evaluate(distiller, held))

    (kd0, ce0, agree0), (kd1, ce1, agree1), (kd2, ce2, agree2) = history
    with torch.no_grad():
        teacher_ce = teacher(**held).loss.item()
    assert ce0 > math.log(vocab) - 0.5 and teacher_ce < ce0 - 1.0  # student starts near chance; teacher learned
    assert kd2 < kd1 < kd0 and kd2 < 0.5 * kd0, history
    assert ce2 < ce1 < ce0 and ce2 < ce0 - 0.8, history
    assert agree2 > agree0 + 0.25, history
