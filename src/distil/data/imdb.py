"""IMDB movie reviews (Maas et al., "Learning Word Vectors for Sentiment Analysis", ACL 2011) from
the shared folder: 25,000 labelled training reviews, 25,000 labelled test reviews and 50,000
unlabelled ones, the pool semi-supervised distillation adds to a few labels.

`train_split: unsup` makes the unlabelled reviews the training split (labels -100), so a recipe
names them as its transfer set (`transfer: {name: imdb, params: {train_split: unsup}}`) while its
own data is the labelled subset; both read the same word vocabulary, built from the whole labelled
training file, so their token ids agree whatever the subset sizes.
"""

from __future__ import annotations

import functools
import gzip
import json
import random
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field

from distil.data.base import DATASETS
from distil.data.text import IGNORE_INDEX, MaxLength, TextBundle, _classification_bundle, _require, _tokenizers
from distil.errors import DistilError
from distil.types import PositiveInt, Seed, validated

def read_reviews(path: Path) -> tuple[list[str], list[int]]:
    """(texts, labels) of one of the folder's files, the HTML line breaks turned into spaces."""
    with gzip.open(path, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [r["text"].replace("<br />", " ") for r in rows], [int(r["label"]) for r in rows]


def _sample(rows: tuple[list[str], list[int]], order: list[int]) -> tuple[list[str], list[int]]:
    return [rows[0][i] for i in order], [rows[1][i] for i in order]


@functools.lru_cache(maxsize=2)
def _words(path: str, stamp: int, vocab_size: int) -> Any:
    """The word vocabulary of a labelled training file, built once per process: a run builds the
    labelled set and its transfer set from one vocabulary, and training it takes seconds."""
    _require("tokenizers")
    from distil.text.tokenize import word_tokenizer

    return word_tokenizer(read_reviews(Path(path))[0], vocab_size=vocab_size)


@DATASETS.register
@validated
def imdb(
    root: str = "../shared/data/imdb",
    max_train: PositiveInt | None = None,
    val_size: Annotated[int, Field(ge=1, le=24_000)] = 1000,
    max_test: PositiveInt | None = None,
    train_split: Literal["train", "unsup"] = "train",
    max_length: MaxLength = 256,
    vocab_size: Annotated[int, Field(gt=5, le=2**24)] = 20000,
    tokenizer: str | None = None,
    student_tokenizer: str = "words",
    seed: Seed = 0,
) -> TextBundle:
    """IMDB binary sentiment. Validation is `val_size` labelled training reviews (a seeded
    draw), training `max_train` of the others (all by default) or, with `train_split: unsup`,
    of the 50,000 unlabelled reviews; the test split is `max_test` test reviews (a seeded draw,
    all by default). `tokenizer` / `student_tokenizer`: as for `sst2`. Reviews are cut to
    `max_length` tokens (the first ones)."""
    folder = Path(root)
    needed = ("train", "test", "unsup") if train_split == "unsup" else ("train", "test")
    missing = [f"{s}.jsonl.gz" for s in needed if not (folder / f"{s}.jsonl.gz").is_file()]
    if missing:
        raise DistilError(f"imdb: {folder} lacks {', '.join(missing)} (expected the shared IMDB folder with "
                          "train/test/unsup.jsonl.gz, see its README.md); set data.params.root")
    labelled = read_reviews(folder / "train.jsonl.gz")
    file = folder / "train.jsonl.gz"
    words = lambda: _words(str(file.resolve()), file.stat().st_mtime_ns, vocab_size)  # noqa: E731
    teacher, student = _tokenizers(tokenizer, student_tokenizer, words)
    rng = random.Random(seed)
    order = rng.sample(range(len(labelled[0])), len(labelled[0]))
    val, rest = _sample(labelled, order[:val_size]), order[val_size:]
    if train_split == "unsup":
        pool = read_reviews(folder / "unsup.jsonl.gz")
        train = _sample(pool, rng.sample(range(len(pool[0])), min(max_train or len(pool[0]), len(pool[0]))))
        train = (train[0], [IGNORE_INDEX] * len(train[0]))
    else:
        train = _sample(labelled, rest[:max_train])
    test = read_reviews(folder / "test.jsonl.gz")
    if max_test is not None and max_test < len(test[0]):
        test = _sample(test, sorted(random.Random(seed + 1).sample(range(len(test[0])), max_test)))
    splits = {"train": train, "val": val, "test": test}
    return _classification_bundle(teacher, splits, [], max_length, 2, student)
