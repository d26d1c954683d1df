"""The part-of-speech tagger behind Tang et al.'s same-tag replacement (Pattern's, via TextBlob)."""

import sys
from pathlib import Path

import pytest
import yaml

from distil.build import build_data
from distil.config import recipe_from_dict
from distil.data.base import DATASETS
from distil.errors import ConfigError, DistilError
from distil.text.augment import augment
from distil.text.taggers import get_tagger

pytest.importorskip("textblob", reason="the pattern tagger needs textblob (pip install distil[pos])")

RECIPES = Path(__file__).resolve().parents[2] / "recipes" / "text"
CORPUS = ["the movie was a wonderful surprise", "a dull and boring film", "she loved the quiet story",
          "what a charming story this is", "the actors played their parts well", "it runs too long"]


def test_penn_tags_one_per_word_as_given():
    tag = get_tagger("pattern")
    assert tag([["the", "movie", "was", "a", "wonderful", "surprise"], []]) == [["DT", "NN", "VBD", "DT", "JJ", "NN"], []]
    words = ["a", "w/o", "1/2", "film", "--", "[MASK]"]  # `/` is Pattern's own separator: still one tag each
    assert len(tag([words])[0]) == len(words)


def test_every_replacement_keeps_the_tag_the_tagger_gave_the_word():
    from textblob.en import parser  # tags the corpus independently of distil's adapter

    tagged = [parser.find_tags(s.split()) for s in CORPUS]
    pairs = {(w, t) for sentence in tagged for w, t in sentence}
    tags_of = {" ".join(s.split()): [t for _, t in sentence] for s, sentence in zip(CORPUS, tagged)}

    def kept(out: list[str]) -> bool:
        for sentence in out:
            words = sentence.split()
            if not any(len(words) == len(t) and all((w, tag) in pairs for w, tag in zip(words, t))
                       for t in tags_of.values()):
                return False
        return True

    same_tag = augment(CORPUS, n_iter=20, p_mask=0, p_pos=1, p_ng=0, seed=0, include_original=False,
                       tagger=get_tagger("pattern"))
    assert len(same_tag) > 20 and kept(same_tag)
    unigram = augment(CORPUS, n_iter=20, p_mask=0, p_pos=1, p_ng=0, seed=0, include_original=False)
    assert not kept(unigram)  # the check can fail: the whole-corpus draw breaks the tags


def test_a_data_set_augments_with_the_tagger_named_in_the_recipe():
    plain = DATASETS.get("toy_sentiment")(n_train=40, n_val=10, n_test=10, augment={"n_per_sentence": 3})
    tagged = DATASETS.get("toy_sentiment")(n_train=40, n_val=10, n_test=10,
                                           augment={"n_per_sentence": 3, "tagger": "pattern"})
    assert len(tagged.train) > 40
    assert not all((a["input_ids"] == b["input_ids"]).all() for a, b in zip(plain.train, tagged.train))
    raw = yaml.safe_load((RECIPES / "toy_bert_to_bilstm.yaml").read_text())
    raw["data"]["params"]["augment"] = {"tagger": "spacy"}
    with pytest.raises(ConfigError, match=r"^data.params.augment.tagger: .*'pattern'"):
        build_data(recipe_from_dict(raw))


def test_missing_textblob_is_one_line_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "textblob.en", None)  # makes `import textblob.en` fail
    with pytest.raises(DistilError, match=r"needs the `textblob` package: pip install distil\[pos\]"):
        get_tagger("pattern")
    with pytest.raises(DistilError, match="unknown 'spacy'"):
        get_tagger("spacy")
