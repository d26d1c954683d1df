"""Part-of-speech taggers for Tang et al.'s same-tag word replacement (`distil.text.augment`).

A tagger maps the word lists of all sentences to their tag lists, one tag per word, in one call.

`pattern`: the Brill-style tagger of the Pattern library (De Smedt & Daelemans, "Pattern for
Python", JMLR 13, 2012) as TextBlob ships it: a lexicon plus contextual and morphological rules, as
plain text files inside the wheel. So it installs from the package registry and runs offline (no
model download, nothing unpickled), and it is fast beside anything a model does.
Its tags are the Penn Treebank's. Tagging is contextual: the same word can take different tags in
different sentences, and each occurrence goes to its own tag's pool.
"""

from __future__ import annotations

from typing import Callable

from distil.errors import DistilError

Tagger = Callable[[list[list[str]]], list[list[str]]]


def pattern_tagger() -> Tagger:
    """Pattern's English tagger (via TextBlob): tags whitespace-split words as given, never re-tokenising."""
    try:
        from textblob.en import parser
    except ImportError:
        raise DistilError("the pattern tagger needs the `textblob` package: pip install distil[pos]") from None

    def tag(sentences: list[list[str]]) -> list[list[str]]:
        return [[t for _, t in parser.find_tags(words)] for words in sentences]

    return tag


TAGGERS: dict[str, Callable[[], Tagger]] = {"pattern": pattern_tagger}


def get_tagger(name: str) -> Tagger:
    if name not in TAGGERS:
        raise DistilError(f"tagger: unknown {name!r}; choose one of {sorted(TAGGERS)}")
    return TAGGERS[name]()
