"""Shared-vocabulary checks and fingerprints."""

import pytest
import torch
from torch import nn

from distil.errors import ConfigError, DistilError
from distil.lm.vocab import check_same_vocab, model_fingerprint, output_head, tokenizer_fingerprint
from distil.teacher import FrozenTeacher


class TinyLM(nn.Module):
    def __init__(self, vocab, hidden=4, bias=False):
        super().__init__()
        self.embed, self.head = nn.Embedding(vocab, hidden), nn.Linear(hidden, vocab, bias=bias)

    def get_output_embeddings(self):
        return self.head


def word_tokenizer(words):
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace

    tok = tokenizers.Tokenizer(WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = Whitespace()
    return tok


def test_same_vocab_passes_and_unwraps_frozen_teacher():
    assert check_same_vocab(FrozenTeacher(TinyLM(7)), TinyLM(7, hidden=3)) == 7


def test_different_sizes_raise():
    with pytest.raises(DistilError, match="teacher predicts over 9 tokens but the student over 7"):
        check_same_vocab(TinyLM(9), TinyLM(7))


def test_different_tokenizers_raise():
    a = word_tokenizer(["[UNK]", "to", "be", "or", "not"])
    b = word_tokenizer(["[UNK]", "to", "be", "or", "NOT"])
    assert tokenizer_fingerprint(a) == tokenizer_fingerprint(word_tokenizer(["[UNK]", "to", "be", "or", "not"]))
    assert tokenizer_fingerprint(a) != tokenizer_fingerprint(b)
    assert check_same_vocab(TinyLM(5), TinyLM(5), a, a) == 5
    with pytest.raises(DistilError, match="tokenizers differ"):
        check_same_vocab(TinyLM(5), TinyLM(5), a, b)


def test_output_head_and_fingerprint():
    model = TinyLM(6, bias=True)
    weight, bias = output_head(model)
    assert weight.shape == (6, 4) and bias.shape == (6,)
    with pytest.raises(ConfigError, match="get_output_embeddings"):
        output_head(nn.Linear(3, 3))
    before = model_fingerprint(model)
    assert before == model_fingerprint(FrozenTeacher(model))
    with torch.no_grad():
        model.embed.weight[3, 1] += 1.0  # a weight in the middle, outside the probed ends
    assert model_fingerprint(model) != before
