"""The shared IMDB reviews: the labelled subset and the unlabelled pool read one vocabulary, the
pool's labels are hidden, and the shipped semi-supervised recipe runs in miniature."""

import gzip
import json
from pathlib import Path

import pytest
import torch
import yaml

from distil.config import recipe_from_dict
from distil.data.base import DATASETS
from distil.errors import DistilError
from distil.pipeline import run_recipe
from helpers import TeacherCallsInSteps

ROOT = Path(__file__).resolve().parents[3] / "shared" / "data" / "imdb"
RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "transfer" / "imdb_unlabelled_pool.yaml"
SMALL = {"val_size": 20, "max_test": 30, "max_length": 48}


@pytest.fixture(scope="module")
def sets():
    pytest.importorskip("tokenizers")
    if not ROOT.is_dir():
        pytest.skip(f"{ROOT} not found")
    imdb = DATASETS.get("imdb")
    return imdb(root=str(ROOT), max_train=50, **SMALL), imdb(root=str(ROOT), max_train=70, train_split="unsup", **SMALL)


def first_reviews(name: str, n: int) -> list[dict]:
    rows = []
    with gzip.open(ROOT / f"{name}.jsonl.gz", "rt", encoding="utf-8") as f:
        for line in f:
            rows.append(json.loads(line))
            if len(rows) == n:
                break
    return rows


def test_the_labelled_subset_and_the_pool_share_one_vocabulary_and_the_pool_has_no_labels(sets):
    labelled, pool = sets
    assert (len(labelled.train), len(labelled.val), len(labelled.test), len(pool.train)) == (50, 20, 30, 70)
    assert labelled.model_kwargs == pool.model_kwargs == {"vocab_size": 20000}
    assert labelled.input_shape == pool.input_shape == (48,)  # every review is longer than 48 words
    assert set(labelled.train.columns["labels"].tolist()) <= {0, 1}
    assert pool.train.columns["labels"].tolist() == [-100] * 70
    assert torch.equal(labelled.test.columns["input_ids"], pool.test.columns["input_ids"])  # the same draw, ids
    review = first_reviews("unsup", 1)[0]["text"]
    assert labelled.tokenizer.encode(review).ids == pool.tokenizer.encode(review).ids
    assert labelled.tokenizer.encode(review).ids.count(1) < 20  # [UNK]: the vocabulary covers the reviews' words


def test_html_line_breaks_are_not_words(sets):
    labelled, _ = sets
    vocab = labelled.tokenizer.get_vocab()  # ids by frequency: "<br />" is in most reviews, some times over
    assert vocab.get("br", 10**6) > 1000 and vocab.get("/>", 10**6) > 1000


def test_a_missing_folder_is_one_line_naming_it(tmp_path):
    with pytest.raises(DistilError, match=rf"^imdb: {tmp_path} lacks train.jsonl.gz, test.jsonl.gz, unsup.jsonl.gz "
                                          r"\(expected the shared IMDB folder"):
        DATASETS.get("imdb")(root=str(tmp_path), train_split="unsup")


def test_the_shipped_recipe_runs_in_miniature_with_its_pool_from_the_cache(tmp_path):
    pytest.importorskip("transformers")
    if not ROOT.is_dir():
        pytest.skip(f"{ROOT} not found")
    raw = yaml.safe_load(RECIPE.read_text())
    for section in (raw["data"], raw["transfer"]):
        section["params"].update(root=str(ROOT), **SMALL)
    raw["data"]["params"]["max_train"], raw["transfer"]["params"]["max_train"] = 40, 60
    # a small BERT trained here in MiniLM's place (the package may be absent); the rest as shipped
    raw["teacher"] = {"model": "hf_bert_classifier", "params": {"hidden_size": 32, "num_layers": 1, "num_heads": 2},
                      "epochs": 1, "cache": raw["teacher"]["cache"]}
    raw["student"]["params"].update(embed_dim=16, hidden=8, fc_dim=8)
    raw.update(epochs=1, output_dir=str(tmp_path / "run"))
    with TeacherCallsInSteps() as calls:
        result = run_recipe(recipe_from_dict(raw), progress=False)
    assert calls.count == 0  # the labelled rows and the pool both read the cache
    cache = tmp_path / "run" / "teacher_cache"
    assert json.loads((cache / "manifest.json").read_text())["data"]["num_samples"] == 40
    assert json.loads((cache / "transfer" / "manifest.json").read_text())["data"]["num_samples"] == 60
    assert {"teacher", "baseline", "distilled"} <= set(result.metrics)
