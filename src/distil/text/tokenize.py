"""Word-level tokenisation for small students and from-scratch teachers, and dict batches for them.

Uses the `tokenizers` package (the `text` extra), imported only when called. The special tokens
match BERT's names, so `[MASK]` written by `distil.text.augment` maps to one id.
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset

SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def word_tokenizer(texts: Sequence[str], *, vocab_size: int = 30000, min_frequency: int = 1,
                   lowercase: bool = True) -> Any:
    """A `tokenizers.Tokenizer` with a WordLevel vocabulary trained on `texts`.

    [PAD] has id 0 (the students' default `padding_idx`), unknown words map to [UNK], and every
    encoding is wrapped as `[CLS] ... [SEP]` as BERT expects.
    """
    from tokenizers import Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import WordLevel
    from tokenizers.trainers import WordLevelTrainer

    if vocab_size <= len(SPECIALS):
        raise ValueError(f"vocab_size: must be > {len(SPECIALS)}, got {vocab_size}")
    tok = Tokenizer(WordLevel(unk_token="[UNK]"))
    if lowercase:
        tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(
        list(texts), WordLevelTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=list(SPECIALS))
    )
    return _wrap_cls_sep(tok)


def fixed_word_tokenizer(words: Sequence[str], *, lowercase: bool = True) -> Any:
    """Like `word_tokenizer`, but over a given word list: the specials get ids 0-4 and `words[i]` id 5 + i.

    The ids then depend on nothing but the list, so data sets built with different sizes or seeds
    (a teacher trained on more data than the student, say) still share one vocabulary.
    """
    from tokenizers import Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import WordLevel

    words = list(dict.fromkeys(w.lower() if lowercase else w for w in words))
    clash = [w for w in words if w in SPECIALS]
    if clash:
        raise ValueError(f"words: must not contain the special tokens, got {clash}")
    vocab = {t: i for i, t in enumerate([*SPECIALS, *words])}
    tok = Tokenizer(WordLevel(vocab=vocab, unk_token="[UNK]"))
    if lowercase:
        tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(list(SPECIALS))  # so "[MASK]" in text is one token, as the trainer does
    return _wrap_cls_sep(tok)


def _wrap_cls_sep(tok: Any) -> Any:
    """Wrap every encoding as `[CLS] ... [SEP]`, as BERT expects."""
    from tokenizers import processors

    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    return tok


def encode(tokenizer: Any, texts: Sequence[str], *, max_length: int = 64) -> dict[str, Tensor]:
    """Token ids and attention mask (N, T), right-padded with [PAD] to the longest text (at most max_length)."""
    if max_length < 2:
        raise ValueError(f"max_length: must be >= 2, got {max_length}")
    pad = tokenizer.token_to_id("[PAD]")
    encodings = tokenizer.encode_batch(list(texts))
    ids = [e.ids[: max_length - 1] + e.ids[-1:] if len(e.ids) > max_length else e.ids for e in encodings]
    t = max((len(i) for i in ids), default=1)
    input_ids = torch.full((len(ids), t), pad if pad is not None else 0, dtype=torch.long)
    mask = torch.zeros((len(ids), t), dtype=torch.long)
    for row, seq in enumerate(ids):
        input_ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    return {"input_ids": input_ids, "attention_mask": mask}


class TextDataset(Dataset):
    """Rows of encoded inputs plus optional `labels` / `teacher_logits`, as dict items.

    The default collate stacks them into the dict batches the Distiller splits: model inputs,
    plus `labels` and precomputed `teacher_logits` that are kept out of the model call.
    """

    def __init__(self, inputs: dict[str, Tensor], **extra: Tensor | None):
        n = next(iter(inputs.values())).shape[0]
        self.columns = {**inputs, **{k: v for k, v in extra.items() if v is not None}}
        bad = {k: v.shape[0] for k, v in self.columns.items() if v.shape[0] != n}
        if bad:
            raise ValueError(f"columns: must all have {n} rows, got {bad}")
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {k: v[i] for k, v in self.columns.items()}

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        return (self[i] for i in range(self.n))
