import pytest
import torch

from distil.text.augment import augment, predict

CORPUS = ["the movie was great", "a dull and boring film", "great acting", "what a charming story this is"]


def test_deterministic_for_a_seed_and_keeps_originals_first():
    a = augment(CORPUS, n_iter=5, seed=3)
    assert a == augment(CORPUS, n_iter=5, seed=3)
    assert a != augment(CORPUS, n_iter=5, seed=4)
    assert a[: len(CORPUS)] == CORPUS and len(set(a)) == len(a)
    assert augment(CORPUS, n_iter=5, seed=3, include_original=False) == a[len(CORPUS):]


def test_no_perturbation_adds_nothing():
    assert augment(CORPUS, n_iter=10, p_mask=0, p_pos=0, p_ng=0) == CORPUS


def test_masking_everything():
    out = augment(["a b c"], n_iter=3, p_mask=1.0, p_pos=0.0, p_ng=0.0, include_original=False)
    assert out == ["[MASK] [MASK] [MASK]"]


def test_replacements_come_from_the_corpus_and_differ():
    vocab = {w for s in CORPUS for w in s.split()}
    out = augment(CORPUS, n_iter=20, p_mask=0.0, p_pos=1.0, p_ng=0.0, seed=1, include_original=False)
    assert out
    for sentence in out:
        words = sentence.split()
        assert set(words) <= vocab
        assert any(len(w.split()) == len(words) and all(a != b for a, b in zip(w.split(), words)) for w in CORPUS)


LEXICON = {"the": "DT", "a": "DT", "this": "DT", "movie": "NN", "film": "NN", "story": "NN", "acting": "NN",
           "was": "VBD", "is": "VBZ", "great": "JJ", "dull": "JJ", "boring": "JJ", "charming": "JJ", "and": "CC",
           "what": "WDT"}


def lexicon_tagger(sentences):
    """A lookup tagger over the corpus's words: one call for every sentence, as a real tagger is called."""
    return [[LEXICON[w] for w in words] for words in sentences]


def test_a_tagger_makes_every_replacement_keep_the_words_tag():
    out = augment(CORPUS, n_iter=30, p_mask=0.0, p_pos=1.0, p_ng=0.0, seed=2, include_original=False,
                  tagger=lexicon_tagger)
    assert len(out) > 10
    originals = {tuple(LEXICON[w] for w in s.split()) for s in CORPUS}
    for sentence in out:
        words = sentence.split()
        assert tuple(LEXICON[w] for w in words) in originals  # every position kept its tag
        for w, tag in zip(words, (LEXICON[w] for w in words)):
            if tag in ("CC", "WDT", "VBZ"):  # a tag with one word in the corpus: nothing else to draw
                assert w in ("and", "what", "is")
    untagged = augment(CORPUS, n_iter=30, p_mask=0.0, p_pos=1.0, p_ng=0.0, seed=2, include_original=False)
    assert any(tuple(LEXICON[w] for w in s.split()) not in originals for s in untagged)  # the unigram draw does not


def test_same_tag_words_are_drawn_by_their_corpus_frequency():
    import random
    from collections import Counter

    from distil.text.augment import _tag_pools, perturb

    corpus = [["x", "a"]] * 30 + [["y", "b"]] * 10 + [["z", "c"]]  # x, y, z share tag N; a, b, c tag V
    tags = {"x": "N", "y": "N", "z": "N", "a": "V", "b": "V", "c": "V"}
    pools = _tag_pools(corpus, lambda ss: [[tags[w] for w in words] for words in ss])
    rng = random.Random(0)
    drawn = Counter(perturb(["z", "c"], rng, [], [], p_mask=0.0, p_pos=1.0, p_ng=0.0, max_ng=1, mask_token="[MASK]",
                            pools=pools[-1])[0] for _ in range(2000))
    assert set(drawn) == {"x", "y"}  # never z itself, never a verb
    assert 2.4 < drawn["x"] / drawn["y"] < 3.7  # 30 : 10 in the corpus
    with pytest.raises(ValueError, match="^tagger: must return one tag per word"):
        augment([" ".join(w) for w in corpus], tagger=lambda ss: [["N"] for _ in ss])


def test_ngram_sampling_keeps_contiguous_spans():
    long = " ".join(f"w{i}" for i in range(10))
    out = augment([long], n_iter=30, p_mask=0.0, p_pos=0.0, p_ng=1.0, max_ng=3, include_original=False)
    assert out and all(1 <= len(s.split()) <= 3 and s in long for s in out)


def test_paper_rates_are_roughly_respected():
    words = [f"w{i}" for i in range(50)]
    out = augment([" ".join(words)], n_iter=40, p_mask=0.3, p_pos=0.0, p_ng=0.0, seed=0, include_original=False)
    masked = sum(s.split().count("[MASK]") for s in out) / (50 * len(out))
    assert 0.2 < masked < 0.4


def test_bad_arguments():
    for kwargs in ({"p_mask": 1.5}, {"p_ng": -0.1}, {"p_mask": 0.6, "p_pos": 0.6}, {"max_ng": 0}, {"n_iter": -1}):
        with pytest.raises(ValueError, match="must be"):
            augment(CORPUS, **kwargs)


def test_predict_batches_and_restores_mode():
    model = torch.nn.Linear(3, 2).train()
    x = torch.randn(7, 3)
    out = predict(model, x, batch_size=3)
    assert torch.allclose(out, model(x)) and model.training and not out.requires_grad
    with pytest.raises(ValueError, match="batch_size"):
        predict(model, x, batch_size=0)
