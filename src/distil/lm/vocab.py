"""Vocabulary checks and fingerprints: token-level distillation only makes sense over one shared vocabulary.

Token-level losses compare distributions index by index, so teacher and student must map token
ids to the same strings. A mismatch does not crash (shapes may even agree); it silently teaches
nonsense, hence the explicit checks here. Nothing in this module imports `transformers`.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from distil.errors import ConfigError, DistilError
from distil.teacher import CallableTeacher, FrozenTeacher, TeacherEnsemble


def unwrap(model: nn.Module) -> nn.Module:
    """The real network inside a `distil.teacher.FrozenTeacher` (or the model itself)."""
    if isinstance(model, FrozenTeacher):
        return model.module
    if isinstance(model, (TeacherEnsemble, CallableTeacher)):
        raise ConfigError(
            f"a {type(model).__name__} has no single output layer; token-level losses that read the "
            "output head need one nn.Module teacher"
        )
    return model


def output_head(model: nn.Module) -> tuple[Tensor, Tensor | None]:
    """(weight (V, H), bias (V,) or None) of a causal LM's output projection (`get_output_embeddings()`)."""
    net = unwrap(model)
    getter = getattr(net, "get_output_embeddings", None)
    head = getter() if callable(getter) else None
    if head is None or not isinstance(getattr(head, "weight", None), Tensor):
        raise ConfigError(
            f"{type(net).__name__} has no output head: it needs `get_output_embeddings()` returning a "
            "linear layer with a (vocab, hidden) weight, as Hugging Face causal LMs have"
        )
    bias = getattr(head, "bias", None)
    return head.weight, bias if isinstance(bias, Tensor) else None


def vocab_size(model: nn.Module) -> int:
    """Number of output tokens: the output head's rows, else `config.vocab_size`."""
    net = unwrap(model)
    try:
        return int(output_head(net)[0].shape[0])
    except ConfigError:
        size = getattr(getattr(net, "config", None), "vocab_size", None)
        if size is None:
            raise ConfigError(f"cannot tell the vocabulary size of {type(net).__name__}") from None
        return int(size)


def tokenizer_vocab(tokenizer: Any) -> dict[str, int]:
    """token -> id of a Hugging Face tokenizer, a `tokenizers.Tokenizer` or a plain mapping."""
    if isinstance(tokenizer, Mapping):
        return {str(k): int(v) for k, v in tokenizer.items()}
    get = getattr(tokenizer, "get_vocab", None)
    if not callable(get):
        raise ConfigError(f"tokenizer: cannot read the vocabulary of a {type(tokenizer).__name__}")
    return {str(k): int(v) for k, v in get().items()}


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """sha256 of the sorted (token, id) pairs: equal iff the two vocabularies are the same mapping.

    Normalisation and pre-tokenisation rules are not included, so two tokenizers with one vocabulary
    but different splitting rules fingerprint alike (the token ids in the data then differ, which the
    cache's data fingerprint catches).
    """
    pairs = sorted(tokenizer_vocab(tokenizer).items(), key=lambda kv: (kv[1], kv[0]))
    return hashlib.sha256(json.dumps(pairs, ensure_ascii=False).encode()).hexdigest()


def model_fingerprint(model: nn.Module) -> str:
    """A cheap fingerprint of a network's weights (not a full cryptographic hash of every byte).

    Hashes each tensor's name, shape, dtype, float64 sum and its first and last 256 values, so a
    retrained or different model changes it while hashing a multi-GB model stays fast.
    """
    h = hashlib.sha256()
    with torch.no_grad():
        for name, t in sorted(unwrap(model).state_dict().items()):
            flat = t.detach().reshape(-1)
            h.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
            if flat.numel():
                probe = torch.cat([flat[:256], flat[-256:]]).double().cpu()
                h.update(f"{flat.sum(dtype=torch.float64).item():.10e}|".encode())
                h.update(probe.numpy().tobytes())
    return h.hexdigest()


CROSS_TOKENIZER_HINT = (
    "to distil across vocabularies use the `uld` loss (Universal Logit Distillation, Boizard et al. 2024), "
    "which compares sorted probabilities and needs no shared vocabulary"
)


def check_same_vocab(teacher: nn.Module, student: nn.Module, teacher_tokenizer: Any = None,
                     student_tokenizer: Any = None) -> int:
    """Raise `DistilError` unless teacher and student predict over one vocabulary; return its size.

    Compares the output heads' sizes and, when both tokenizers are given, their token -> id maps.
    Families whose checkpoints pad the embedding matrix differently fail here on purpose: resize
    one model's embeddings (`resize_token_embeddings`) so the logits line up. Genuinely different
    tokenizers need the `uld` loss (distil.losses.lm.uld) instead of the token-level ones.
    """
    vt, vs = vocab_size(teacher), vocab_size(student)
    if vt != vs:
        raise DistilError(
            f"teacher predicts over {vt} tokens but the student over {vs}: token-level distillation "
            f"needs one shared vocabulary (same tokenizer, same embedding size); {CROSS_TOKENIZER_HINT}"
        )
    if teacher_tokenizer is not None and student_tokenizer is not None:
        a, b = tokenizer_vocab(teacher_tokenizer), tokenizer_vocab(student_tokenizer)
        if a != b:
            diff = sorted(set(a.items()) ^ set(b.items()), key=lambda kv: kv[1])[:3]
            raise DistilError(
                f"teacher and student tokenizers differ ({len(a)} vs {len(b)} tokens; e.g. "
                f"{', '.join(f'{t!r}->{i}' for t, i in diff)}): token ids would mean different strings; "
                f"{CROSS_TOKENIZER_HINT}"
            )
    return vt
