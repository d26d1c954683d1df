"""Transfer-set augmentation for distilling a text classifier (Tang et al. 2019, sec. 3.3).

Tang, Lu, Liu, Mou, Vechtomova & Lin, "Distilling Task-Specific Knowledge from BERT into Simple
Neural Networks", arXiv:1903.12136, 2019. A small labelled set is too small to transfer a teacher's
function, so it is grown with perturbed copies that the teacher then labels (soft logits, trained
with logit MSE). For each word: with probability p_mask it becomes [MASK]; else with probability
p_pos it is replaced; then with probability p_ng the example is cut to a random n-gram, n in 1..max_ng.

The paper replaces a word with another word *of the same POS tag*, drawn from the corpus unigram
distribution renormalised within that tag. Given a `tagger` (words of each sentence -> their tags,
e.g. `distil.text.taggers.pattern_tagger()`), `augment` does exactly that. Without one the
replacement is drawn from the whole corpus unigram distribution (never the word itself): plausible
vocabulary and broken semantics, as in the paper, but not the syntax the tag preserves.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from distil.teacher import as_logits, call_model


def _check_probability(name: str, value: float) -> None:
    if not 0 <= value <= 1:
        raise ValueError(f"{name}: must be in [0, 1], got {value}")


Pool = tuple[list[str], list[int]]  # words to draw a replacement from, and their cumulative counts


def _pool(counts: Counter) -> Pool:
    vocab = sorted(counts)  # sorted, so the draw does not depend on hash order
    cum, total = [], 0
    for w in vocab:
        total += counts[w]
        cum.append(total)
    return vocab, cum


def perturb(words: list[str], rng: random.Random, vocab: list[str], cum_weights: list[int], *,
            p_mask: float, p_pos: float, p_ng: float, max_ng: int, mask_token: str,
            pools: Sequence[Pool] | None = None) -> list[str]:
    """One synthetic example from `words` (Tang et al.'s per-word rule, then n-gram sampling).
    A replacement is drawn from `vocab`, or from `pools[i]` for word i (its tag's words) when given."""
    out = []
    for i, w in enumerate(words):
        if pools is not None:
            vocab, cum_weights = pools[i]
        u = rng.random()
        if u < p_mask:
            out.append(mask_token)
        elif u < p_mask + p_pos and len(vocab) > 1:
            pick = w
            for _ in range(8):  # resample a few times to avoid drawing the same word
                pick = rng.choices(vocab, cum_weights=cum_weights)[0]
                if pick != w:
                    break
            out.append(pick)
        else:
            out.append(w)
    if out and rng.random() < p_ng:
        n = rng.randint(1, max_ng)
        if n < len(out):
            start = rng.randint(0, len(out) - n)
            out = out[start:start + n]
    return out


def augment(
    sentences: Sequence[str],
    *,
    n_iter: int = 20,
    p_mask: float = 0.1,
    p_pos: float = 0.1,
    p_ng: float = 0.25,
    max_ng: int = 5,
    mask_token: str = "[MASK]",
    seed: int = 0,
    include_original: bool = True,
    tagger: Callable[[list[list[str]]], list[list[str]]] | None = None,
) -> list[str]:
    """The augmented transfer set: up to `n_iter` distinct perturbed copies of every sentence.

    Defaults are the paper's (p_mask = p_pos = 0.1, p_ng = 0.25, n_iter = 20). Words are
    whitespace-separated tokens; duplicates (and copies equal to an original) are dropped. The
    result is deterministic for a given `seed`. Originals come first when `include_original`.
    `tagger` maps the word lists of all sentences to their tag lists (one call; `distil.text.taggers`
    has Pattern's); a word is then replaced by a corpus word of its own tag.
    """
    for name, p in (("p_mask", p_mask), ("p_pos", p_pos), ("p_ng", p_ng)):
        _check_probability(name, p)
    if p_mask + p_pos > 1:
        raise ValueError(f"p_mask + p_pos: must be <= 1, got {p_mask + p_pos}")
    if n_iter < 0 or max_ng < 1:
        raise ValueError(f"n_iter, max_ng: must be >= 0 and >= 1, got {n_iter}, {max_ng}")
    rng = random.Random(seed)
    split = [s.split() for s in sentences]
    vocab, cum = _pool(Counter(w for words in split for w in words))
    pools: list[list[Pool] | None] = [None] * len(split)
    if tagger is not None:
        pools = _tag_pools(split, tagger)
    seen = set(sentences)
    out = list(dict.fromkeys(sentences)) if include_original else []
    for words, own in zip(split, pools):
        for _ in range(n_iter):
            new = " ".join(perturb(words, rng, vocab, cum, p_mask=p_mask, p_pos=p_pos, p_ng=p_ng,
                                   max_ng=max_ng, mask_token=mask_token, pools=own))
            if new and new not in seen:
                seen.add(new)
                out.append(new)
    return out


def _tag_pools(split: list[list[str]], tagger: Callable[[list[list[str]]], list[list[str]]]) -> list[list[Pool]]:
    """For every word of every sentence, the pool of corpus words that carry its tag."""
    tags = tagger(split)
    if len(tags) != len(split) or any(len(t) != len(w) for t, w in zip(tags, split)):
        raise ValueError("tagger: must return one tag per word of every sentence")
    by_tag: dict[str, Counter] = {}
    for words, marks in zip(split, tags):
        for w, t in zip(words, marks):
            by_tag.setdefault(t, Counter())[w] += 1
    pools = {t: _pool(c) for t, c in by_tag.items()}
    return [[pools[t] for t in marks] for marks in tags]


@torch.no_grad()
def predict(model: nn.Module, inputs: dict[str, Tensor] | Tensor, batch_size: int = 256) -> Tensor:
    """The model's outputs (logits, or embeddings) for every row of `inputs`, in eval mode.

    This is how the teacher labels an augmented transfer set once, before training: put the result
    in each batch as `teacher_logits` and the Distiller skips the teacher forward pass.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size: must be > 0, got {batch_size}")
    was_training = model.training
    model.eval()
    n = next(iter(inputs.values())).shape[0] if isinstance(inputs, dict) else inputs.shape[0]
    outs = []
    for i in range(0, n, batch_size):
        chunk: Any = ({k: v[i:i + batch_size] for k, v in inputs.items()} if isinstance(inputs, dict)
                      else inputs[i:i + batch_size])
        outs.append(as_logits(call_model(model, chunk)).float())
    model.train(was_training)
    return torch.cat(outs)
