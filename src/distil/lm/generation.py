"""Generation-based language-model distillation: teacher-written targets and student-written batches.

Sequence-level KD: Kim & Rush, "Sequence-Level Knowledge Distillation", EMNLP 2016 — train the
student with plain cross-entropy on the teacher's own outputs (beam search / greedy / sampled)
instead of the references; `generate_teacher_targets` builds such a data set.

On-policy KD: Agarwal et al., "On-Policy Distillation of Language Models: Learning from
Self-Generated Mistakes" (GKD), ICLR 2024, and Gu et al., "MiniLLM", ICLR 2024 — the student
writes the continuation and the teacher scores every token of it, so the student learns on the
states it actually visits. `on_policy_batch` produces such a batch; feed it to the Distiller with
`token_jsd` / `token_reverse_kl` / `token_kl` (GKD mixes it with fixed data with probability lambda:
`batch = on_policy_batch(...) if random.random() < lam else batch`).

Both return Hugging Face style examples: `input_ids` = prompt + continuation, `labels` = the same
ids with -100 on the prompt (so only generated tokens are learned), right-padded in batches.
`transformers` is needed only to call `model.generate`; it is never imported here.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from distil.errors import ConfigError
from distil.lm.tokens import IGNORE_INDEX, pad_batch
from distil.lm.vocab import unwrap


def _prompts(prompts: Any) -> list[Tensor]:
    """A list of 1-D token-id tensors from a list of sequences or a padded {"input_ids", "attention_mask"} batch."""
    if isinstance(prompts, dict):
        ids = prompts["input_ids"]
        mask = prompts.get("attention_mask", torch.ones_like(ids))
        return [row[m.bool()].cpu() for row, m in zip(ids, mask)]  # left or right padding alike
    return [torch.as_tensor(p, dtype=torch.long).reshape(-1) for p in prompts]


def _sampling_args(do_sample: bool, temperature: float, top_k: int | None, top_p: float | None) -> dict:
    if temperature <= 0:
        raise ValueError(f"temperature: must be > 0, got {temperature}")
    if not do_sample:
        return {"do_sample": False}
    args = {"do_sample": True, "temperature": temperature}
    args.update({k: v for k, v in (("top_k", top_k), ("top_p", top_p)) if v is not None})
    return args


@torch.no_grad()
def _continue(model: nn.Module, prompts: list[Tensor], *, max_new_tokens: int, pad_token_id: int,
              eos_token_id: int | None, **generate_kwargs) -> list[Tensor]:
    """Continuations (without the prompt, cut after the first eos) of left-padded prompts."""
    net = unwrap(model)
    if not callable(getattr(net, "generate", None)):
        raise ConfigError(f"{type(net).__name__} cannot generate text: it needs a Hugging Face `generate` method")
    if max_new_tokens <= 0:
        raise ValueError(f"max_new_tokens: must be > 0, got {max_new_tokens}")
    device = next(net.parameters()).device
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):  # left padding: decoder-only models continue from the last column
        ids[i, width - len(p):], mask[i, width - len(p):] = p, 1
    was_training = net.training
    net.eval()
    try:
        out = net.generate(input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=max_new_tokens,
                           pad_token_id=pad_token_id, eos_token_id=eos_token_id, **generate_kwargs)
    finally:
        net.train(was_training)
    if eos_token_id is None:  # generate() then stopped at the model's own eos token(s)
        eos_token_id = getattr(getattr(net, "generation_config", None), "eos_token_id", None)
    eos = torch.tensor([] if eos_token_id is None else eos_token_id, dtype=torch.long).reshape(-1)
    result = []
    for row in out[:, width:].cpu():
        hits = torch.isin(row, eos).nonzero()
        result.append(row[: int(hits[0]) + 1] if len(hits) else row)  # keep the eos itself, drop padding
    return result


def _examples(prompts: list[Tensor], continuations: list[Tensor]) -> list[dict[str, Tensor]]:
    return [
        {"input_ids": torch.cat([p, c]), "labels": torch.cat([torch.full_like(p, IGNORE_INDEX), c])}
        for p, c in zip(prompts, continuations)
    ]


def generate_teacher_targets(
    teacher: nn.Module,
    prompts: Sequence[Any] | dict,
    *,
    max_new_tokens: int,
    pad_token_id: int = 0,
    eos_token_id: int | None = None,
    batch_size: int = 8,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    **generate_kwargs,
) -> list[dict[str, Tensor]]:
    """Sequence-level KD data (Kim & Rush 2016): one `{"input_ids", "labels"}` example per prompt.

    Greedy by default; `do_sample=True` samples at `temperature` (with optional top-k / top-p);
    extra keyword arguments go to `generate` (e.g. `num_beams=5`, the paper's beam search).
    Args:
        prompts: token-id sequences, or a padded batch dict with input_ids (B, P) and attention_mask.
    Batch the result with `distil.lm.tokens.pad_batch` and train with a cross-entropy loss on labels.
    """
    prompts = _prompts(prompts)
    args = _sampling_args(do_sample, temperature, top_k, top_p) | generate_kwargs
    out: list[dict[str, Tensor]] = []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start:start + batch_size]
        out += _examples(chunk, _continue(teacher, chunk, max_new_tokens=max_new_tokens,
                                          pad_token_id=pad_token_id, eos_token_id=eos_token_id, **args))
    return out


def on_policy_batch(
    student: nn.Module,
    prompts: Sequence[Any] | dict,
    *,
    max_new_tokens: int,
    pad_token_id: int = 0,
    eos_token_id: int | None = None,
    do_sample: bool = True,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    **generate_kwargs,
) -> dict[str, Tensor]:
    """A training batch whose continuations the student sampled (no gradient), for the token losses.

    Returns right-padded input_ids (B, L), attention_mask (B, L) and labels (B, L) with -100 on the
    prompt and padding, on the student's device. The teacher scores it when the Distiller runs it.
    """
    prompts = _prompts(prompts)
    args = _sampling_args(do_sample, temperature, top_k, top_p) | generate_kwargs
    continuations = _continue(student, prompts, max_new_tokens=max_new_tokens,
                              pad_token_id=pad_token_id, eos_token_id=eos_token_id, **args)
    device = next(unwrap(student).parameters()).device
    batch = pad_batch(_examples(prompts, continuations), pad_token_id)
    return {k: v.to(device) for k, v in batch.items()}


class OnPolicy:
    """GKD's mix of data (Agarwal et al., ICLR 2024): called with the student and a training batch,
    it returns, with probability `fraction`, a batch of the student's own sampled continuations of
    the batch's first `prompt_tokens` tokens instead (see `on_policy_batch`); otherwise the batch
    itself. The draw uses torch's global generator, which checkpoints save, so resumed runs repeat
    it. Give it to `Distiller(on_policy=...)`, or set `on_policy` in a recipe.

    `score` (batch -> teacher_logits) is for runs whose other steps read a teacher cache: the
    student's fresh text is in no cache, so the live teacher scores it into the same packed top-k
    form (`distil.cache.recipe.live_top_k`) and the one sparse loss reads both kinds of step.
    """

    def __init__(self, fraction: float = 0.5, prompt_tokens: int = 16, max_new_tokens: int = 16,
                 temperature: float = 1.0, pad_token_id: int = 0, score: Callable[[dict], Tensor] | None = None):
        if not 0 <= fraction <= 1:
            raise ValueError(f"fraction: must be in [0, 1], got {fraction}")
        self.fraction, self.prompt_tokens, self.max_new_tokens = fraction, prompt_tokens, max_new_tokens
        self.temperature, self.pad_token_id, self.score = temperature, pad_token_id, score

    def __call__(self, student: nn.Module, batch: Any) -> Any:
        if not isinstance(batch, dict) or "input_ids" not in batch:
            raise ConfigError("on_policy: needs batches of token ids (dicts with input_ids), got "
                              f"{type(batch).__name__}")
        if self.fraction == 0 or (self.fraction < 1 and torch.rand(()) >= self.fraction):
            return batch
        ids = batch["input_ids"][:, : self.prompt_tokens]
        mask = batch.get("attention_mask", torch.ones_like(batch["input_ids"]))[:, : self.prompt_tokens]
        batch = on_policy_batch(student, {"input_ids": ids, "attention_mask": mask}, max_new_tokens=self.max_new_tokens,
                                temperature=self.temperature, pad_token_id=self.pad_token_id)
        if self.score is not None:
            batch["teacher_logits"] = self.score(batch)
        return batch
