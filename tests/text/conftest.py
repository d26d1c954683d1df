"""Toy sentiment data and tiny randomly initialised BERTs for the text tests (CPU, seconds)."""

from __future__ import annotations

import random

import pytest

POSITIVE = ["great", "wonderful", "superb", "fun", "brilliant", "charming", "delightful", "moving"]
NEGATIVE = ["dull", "boring", "awful", "bad", "tedious", "weak", "messy", "bland"]
NOUNS = ["movie", "film", "story", "plot", "cast", "script", "ending", "show"]
TEMPLATES = [
    "the {n} was {a}",
    "a {a} {n}",
    "what a {a} {n} this is",
    "i found the {n} quite {a}",
    "the {n} is really {a} and the {n2} too",
    "{a} {n} overall",
]


def toy_sentiment(n: int, seed: int = 0) -> tuple[list[str], list[int]]:
    """`n` template sentences, each with one sentiment word; label 1 = positive."""
    rng = random.Random(seed)
    texts, labels = [], []
    for _ in range(n):
        y = rng.randint(0, 1)
        adj = rng.choice(POSITIVE if y else NEGATIVE)
        texts.append(rng.choice(TEMPLATES).format(a=adj, n=rng.choice(NOUNS), n2=rng.choice(NOUNS)))
        labels.append(y)
    return texts, labels


def tiny_bert(vocab_size: int, hidden: int = 32, layers: int = 2, heads: int = 2, num_labels: int = 2,
              encoder_only: bool = False):
    """A randomly initialised BERT classifier (or bare encoder), small enough for CPU tests."""
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(
        vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=2 * hidden, max_position_embeddings=64, num_labels=num_labels,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )
    cls = transformers.BertModel if encoder_only else transformers.BertForSequenceClassification
    return cls(config)


@pytest.fixture
def toy_tokenizer():
    pytest.importorskip("tokenizers")
    from distil.text import word_tokenizer

    texts, _ = toy_sentiment(400, seed=1)
    return word_tokenizer(texts)


@pytest.fixture
def make_bert():
    """Factory fixture: `make_bert(vocab_size, hidden=..., layers=..., heads=...)`."""
    return tiny_bert


@pytest.fixture
def sentiment():
    """Factory fixture: `sentiment(n, seed)` -> (texts, labels)."""
    return toy_sentiment
