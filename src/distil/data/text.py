"""Text data sets for recipes: sentiment classification (toy, SST-2) and character-level language
modelling (toy, TinyShakespeare), as dict batches that Hugging Face models and the text students read.

Every item is `{"input_ids", "attention_mask", "labels"}`, padded to one width per data set so the
default DataLoader collate stacks them. Classification labels are class ids, with -100 on the
unlabelled rows of an augmented transfer set (Tang et al., "Distilling Task-Specific Knowledge from
BERT into Simple Neural Networks", arXiv:1903.12136, 2019, sec. 3.3). Language-modelling labels are
a copy of `input_ids`: the model (or the token loss) shifts them, as Hugging Face does.

SST-2: Socher et al., "Recursive Deep Models for Semantic Compositionality Over a Sentiment
Treebank", EMNLP 2013, via GLUE (Wang et al., ICLR 2019). TinyShakespeare: Karpathy's char-rnn corpus.
"""

from __future__ import annotations

import gzip
import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor
from torch.utils.data import Dataset

from distil.data.base import DATASETS, DataBundle
from distil.errors import DistilError
from distil.packaged import local_folder
from distil.types import Count, Fraction, Length, PositiveInt, Seed, validated

IGNORE_INDEX = -100
MaxLength = Length


@dataclass
class TextBundle(DataBundle):
    """A DataBundle that also carries its tokenizer. Its `model_kwargs` hold `vocab_size`, which
    `distil run` passes to every model factory that takes it (text students, Hugging Face models)."""

    tokenizer: Any = None

    @property
    def vocab_size(self) -> int:
        return int(self.model_kwargs["vocab_size"])


class AugmentOptions(BaseModel):
    """Tang et al.'s transfer-set augmentation (see `distil.text.augment`); the paper's defaults."""

    model_config = ConfigDict(extra="forbid")
    n_per_sentence: Annotated[int, Field(gt=0, le=1000)] = 20  # copies of every training sentence
    p_mask: Fraction = 0.1
    p_pos: Fraction = 0.1
    p_ng: Fraction = 0.25
    max_ng: PositiveInt = 5
    seed: Seed = 0
    # the paper's same-tag replacement with a part-of-speech tagger (`distil.text.taggers`; needs
    # pip install distil[pos]); None draws the replacement from the whole corpus's unigrams
    tagger: Literal["pattern"] | None = None


def _require(package: str) -> None:
    try:
        __import__(package)
    except ImportError:
        raise DistilError(f"text data sets need the `{package}` package: pip install distil[text]") from None


def _augmented(texts: list[str], options: AugmentOptions | None) -> list[str]:
    """Only the new, unlabelled sentences of the transfer set (originals excluded)."""
    if options is None:
        return []
    from distil.text.augment import augment
    from distil.text.taggers import get_tagger

    return augment(texts, n_iter=options.n_per_sentence, p_mask=options.p_mask, p_pos=options.p_pos,
                   p_ng=options.p_ng, max_ng=options.max_ng, seed=options.seed, include_original=False,
                   tagger=get_tagger(options.tagger) if options.tagger else None)


def _encode(tokenizer: Any, texts: list[str], max_length: int) -> dict[str, Tensor]:
    """input_ids / attention_mask (N, T), right-padded to the longest text (at most max_length)."""
    if hasattr(tokenizer, "encode_batch"):  # a `tokenizers.Tokenizer`
        from distil.text.tokenize import encode

        return encode(tokenizer, texts, max_length=max_length)
    out = tokenizer(texts, padding="longest", truncation=True, max_length=max_length, return_tensors="pt")
    return {"input_ids": out["input_ids"].long(), "attention_mask": out["attention_mask"].long()}


def vocab_size_of(tokenizer: Any) -> int:
    return tokenizer.get_vocab_size() if hasattr(tokenizer, "get_vocab_size") else len(tokenizer)


class TokenPairs(Dataset):
    """Texts tokenized twice (cross-tokenizer pairs): the student's ids as the model inputs and the
    teacher's under `teacher_inputs`, which frozen teachers read (`distil.distiller`). Batches are
    gathered straight from the tensors, like `TextDataset`."""

    def __init__(self, student: dict[str, Tensor], teacher: dict[str, Tensor], labels: Tensor):
        self.student, self.teacher, self.labels = student, teacher, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {**{k: v[i] for k, v in self.student.items()}, "labels": self.labels[i],
                "teacher_inputs": {k: v[i] for k, v in self.teacher.items()}}

    def batch_gatherer(self, device: torch.device | None = None):
        move = (lambda t: t.to(device)) if device is not None else (lambda t: t)  # noqa: E731
        student, teacher = {k: move(v) for k, v in self.student.items()}, {k: move(v) for k, v in self.teacher.items()}
        labels = move(self.labels)
        return lambda index: {**{k: v[index] for k, v in student.items()}, "labels": labels[index],
                              "teacher_inputs": {k: v[index] for k, v in teacher.items()}}


def _classification_bundle(tokenizer: Any, splits: dict[str, tuple[list[str], list[int]]], extra: list[str],
                           max_length: int, num_classes: int, student_tokenizer: Any = None) -> TextBundle:
    """Encode every split in one call (one padded width for all), unlabelled `extra` rows join train.
    A `student_tokenizer` of its own makes cross-tokenizer pairs: the splits carry both encodings and
    `teacher_data` the teacher's alone (the student's vocabulary then need not be the teacher's)."""
    from distil.text.tokenize import TextDataset

    texts, labels, bounds = [], [], {}
    for name, (t, y) in splits.items():
        bounds[name] = (len(texts), len(texts) + len(t) + (len(extra) if name == "train" else 0))
        texts += t
        labels += y
        if name == "train":
            texts += extra
            labels += [IGNORE_INDEX] * len(extra)
    y = torch.tensor(labels, dtype=torch.long)

    def bundle(tok: Any, make: Callable[[int, int], Dataset], inputs: dict[str, Tensor]) -> TextBundle:
        """The splits as `make(start, end)` cuts them from rows encoded by `tok`."""
        data = {name: make(a, b) for name, (a, b) in bounds.items()}
        width, size = inputs["input_ids"].shape[1], vocab_size_of(tok)
        return TextBundle(data["train"], data["val"], data["test"], num_classes, (width,), "classification",
                          tokenizer=tok, model_kwargs={"vocab_size": size},
                          preprocessing=tokenizer_preprocessing(tok, width, size))

    teacher = _encode(tokenizer, texts, max_length)
    plain = bundle(tokenizer, lambda a, b: TextDataset({k: v[a:b] for k, v in teacher.items()}, labels=y[a:b]), teacher)
    if student_tokenizer is None or student_tokenizer is tokenizer:
        return plain
    student = _encode(student_tokenizer, texts, max_length)
    pairs = bundle(student_tokenizer, lambda a, b: TokenPairs({k: v[a:b] for k, v in student.items()},
                                                               {k: v[a:b] for k, v in teacher.items()}, y[a:b]), student)
    pairs.teacher_data = plain
    pairs.preprocessing["teacher_tokenizer"] = plain.preprocessing["tokenizer"]
    return pairs


def _tokenizers(tokenizer: str | None, student_tokenizer: str, words: Callable[[], Any]) -> tuple[Any, Any]:
    """(the teacher's tokenizer, the student's). `tokenizer` names a local Hugging Face folder for the
    teacher (a pre-trained one reads its own ids); the student then gets `words()`, the data set's word
    vocabulary built from the training text, unless `student_tokenizer` is "teacher" (the teacher's
    ids: a student initialised from the teacher) or a folder of its own. Without `tokenizer` both
    read the word vocabulary, unless `student_tokenizer` names a folder."""
    own = words() if tokenizer is None or student_tokenizer == "words" else None
    teacher = _hf_tokenizer(tokenizer, "tokenizer") if tokenizer is not None else own
    if student_tokenizer == "words":
        return teacher, own
    if student_tokenizer == "teacher":
        return teacher, teacher
    return teacher, _hf_tokenizer(student_tokenizer, "student_tokenizer")


def tokenizer_preprocessing(tokenizer: Any, length: int, vocab_size: int) -> dict[str, Any]:
    """What a caller must do to text before the model: which tokenizer, padded to what length."""
    name = getattr(tokenizer, "name_or_path", None) or type(tokenizer).__name__
    return {"text": f"token ids from the {name} tokenizer, padded or cut to {length}", "tokenizer": name,
            "max_length": length, "vocab_size": vocab_size}


# ----- toy sentiment: generated from templates, so tests and recipes need no files -----

POSITIVE = ["great", "wonderful", "superb", "fun", "brilliant", "charming", "delightful", "moving", "clever", "beautiful"]
NEGATIVE = ["dull", "boring", "awful", "bad", "tedious", "weak", "messy", "bland", "clumsy", "forgettable"]
NOUNS = ["movie", "film", "story", "plot", "cast", "script", "ending", "show", "soundtrack", "acting"]
INTENSIFIERS = ["very", "really", "quite", "truly", "rather"]
# (template, which adjective decides the label, whether "not" flips it)
TEMPLATES = [
    ("the {n} was {i}{a}", "a", False),
    ("a {i}{a} {n}", "a", False),
    ("what a {a} {n}", "a", False),
    ("i found the {n} {i}{a}", "a", False),
    ("the {n} was not {a}", "a", True),
    ("i did not think the {n} was {a}", "a", True),
    ("the {n} was {a} but the {n2} was {i}{b}", "b", False),
]
TOY_WORDS = sorted(
    {w for t, _, _ in TEMPLATES for w in t.split() if "{" not in w} | set(POSITIVE + NEGATIVE + NOUNS + INTENSIFIERS)
)
TOY_SENTIMENT_VOCAB_SIZE = 5 + len(TOY_WORDS)  # the five specials [PAD] [UNK] [CLS] [SEP] [MASK] first


def toy_sentences(n: int, seed: int) -> tuple[list[str], list[int]]:
    """`n` template sentences, label 1 = positive. Negation and "X but Y" make word order matter."""
    rng = random.Random(seed)
    texts, labels = [], []
    for _ in range(n):
        template, decides, negated = rng.choice(TEMPLATES)
        a, b = rng.choice(POSITIVE + NEGATIVE), rng.choice(POSITIVE + NEGATIVE)
        intensifier = rng.choice(INTENSIFIERS) + " " if rng.random() < 0.4 else ""
        nouns = rng.sample(NOUNS, 2)
        texts.append(template.format(a=a, b=b, n=nouns[0], n2=nouns[1], i=intensifier))
        positive = (a if decides == "a" else b) in POSITIVE
        labels.append(int(positive != negated))
    return texts, labels


@DATASETS.register
@validated
def toy_sentiment(
    n_train: Count = 1000,
    n_val: Count = 200,
    n_test: Count = 400,
    max_length: MaxLength = 24,
    augment: AugmentOptions | None = None,
    tokenizer: str | None = None,
    student_tokenizer: str = "words",
    seed: Seed = 0,
) -> TextBundle:
    """Binary sentiment over template sentences (seeded), with a fixed word vocabulary of
    TOY_SENTIMENT_VOCAB_SIZE tokens, so its ids never depend on the sizes or seed.

    `augment` adds Tang et al.'s unlabelled perturbed copies (label -100) to the training split.
    `tokenizer` / `student_tokenizer`: as for `sst2`.
    """
    _require("tokenizers")
    from distil.text.tokenize import fixed_word_tokenizer

    teacher, student = _tokenizers(tokenizer, student_tokenizer, lambda: fixed_word_tokenizer(TOY_WORDS))
    train = toy_sentences(n_train, seed)
    splits = {"train": train, "val": toy_sentences(n_val, seed + 1), "test": toy_sentences(n_test, seed + 2)}
    return _classification_bundle(teacher, splits, _augmented(train[0], augment), max_length, 2, student)


# ----- SST-2 from the shared folder -----

def _read_jsonl(path: Path) -> tuple[list[str], list[int]]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [r["text"] for r in rows], [int(r["label"]) for r in rows]


@DATASETS.register
@validated
def sst2(
    root: str = "../shared/data/sst2",
    max_train: PositiveInt | None = None,
    max_length: MaxLength = 64,
    vocab_size: Annotated[int, Field(gt=5, le=2**24)] = 12000,
    min_frequency: Annotated[int, Field(gt=0, le=2**31)] = 1,
    augment: AugmentOptions | None = None,
    tokenizer: str | None = None,
    student_tokenizer: str = "words",
    seed: Seed = 0,
) -> TextBundle:
    """SST-2 binary sentiment: GLUE train (67,349 phrases), validation (872), labelled test (1,821).

    The word vocabulary (at most `vocab_size` words, by frequency) is built from the *whole*
    training file, so `max_train` (a seeded random subset) and `augment` never change token ids.
    `tokenizer` names a local Hugging Face tokenizer folder (never downloaded) for a pre-trained
    teacher; `distil run` fills it from an `hf_pretrained` teacher's folder. The student keeps the
    small word vocabulary (the teacher reads its own ids beside it, `TokenPairs`) unless
    `student_tokenizer` is "teacher" or a folder of its own.
    """
    folder = Path(root)
    files = {s: folder / f"{s}.jsonl.gz" for s in ("train", "validation", "test")}
    missing = [p.name for p in files.values() if not p.is_file()]
    if missing:
        raise DistilError(
            f"sst2: {folder} lacks {', '.join(missing)} (expected the shared SST-2 folder with "
            "train/validation/test.jsonl.gz, see its README.md); set data.params.root"
        )
    train = _read_jsonl(files["train"])

    def words() -> Any:
        _require("tokenizers")
        from distil.text.tokenize import word_tokenizer

        return word_tokenizer(train[0], vocab_size=vocab_size, min_frequency=min_frequency)

    teacher, student = _tokenizers(tokenizer, student_tokenizer, words)
    if max_train is not None and max_train < len(train[0]):
        keep = sorted(random.Random(seed).sample(range(len(train[0])), max_train))
        train = ([train[0][i] for i in keep], [train[1][i] for i in keep])
    splits = {"train": train, "val": _read_jsonl(files["validation"]), "test": _read_jsonl(files["test"])}
    return _classification_bundle(teacher, splits, _augmented(train[0], augment), max_length, 2, student)


def _hf_tokenizer(path: str, field: str) -> Any:
    """A local tokenizer folder or `.gguf` file (or `package:NAME/sub`, one an installed package carries)."""
    folder = local_folder(path)
    if folder.suffix == ".gguf":
        from distil.models.hf import gguf_source

        source = gguf_source(folder)
    elif folder.is_dir():
        source = {"pretrained_model_name_or_path": folder}
    else:
        raise DistilError(f"{field}: {path} is not a folder; give a local tokenizer saved with save_pretrained "
                          "or a .gguf file")
    _require("transformers")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(**source, local_files_only=True)
    tokenizer.name_or_path = str(path)  # as the recipe names it, wherever the package lives
    return tokenizer


# ----- character-level language modelling -----

class CharTokenizer:
    """Characters <-> ids over a fixed character list (id = position in `chars`)."""

    def __init__(self, chars: Sequence[str]):
        self.chars = list(dict.fromkeys(chars))
        self.ids = {c: i for i, c in enumerate(self.chars)}

    def __len__(self) -> int:
        return len(self.chars)

    def get_vocab(self) -> dict[str, int]:
        return dict(self.ids)

    def encode(self, text: str) -> list[int]:
        unknown = sorted(set(text) - set(self.ids))
        if unknown:
            raise DistilError(f"characters outside the vocabulary: {unknown[:10]}")
        return [self.ids[c] for c in text]

    def decode(self, ids: Sequence[int] | Tensor) -> str:
        return "".join(self.chars[int(i)] for i in ids)

    def save(self, path: str) -> None:
        """`{"chars": [...]}` as JSON: a character's id is its position (as `tokenizers.Tokenizer.save`)."""
        Path(path).write_text(json.dumps({"chars": self.chars}, ensure_ascii=False))


def save_tokenizer(tokenizer: Any, folder: Path) -> str:
    """Save a text bundle's tokenizer into `folder` for whoever runs the exported student without
    distil; returns the name written: `tokenizer.json` (a `tokenizers.Tokenizer`),
    `characters.json` (`CharTokenizer`) or `tokenizer/` (a Hugging Face tokenizer's folder)."""
    from distil.integrity import atomic_write

    if hasattr(tokenizer, "save_pretrained"):
        tokenizer.save_pretrained(str(folder / "tokenizer"))
        return "tokenizer/"
    name = "characters.json" if isinstance(tokenizer, CharTokenizer) else "tokenizer.json"
    atomic_write(folder / name, lambda tmp: tokenizer.save(str(tmp)))
    return name


class TokenBlocks(Dataset):
    """Windows of `block_size` tokens every `stride` tokens of a stream, as
    `{"input_ids", "attention_mask", "labels"}` (labels = input_ids; the model shifts)."""

    def __init__(self, ids: Tensor, block_size: int, stride: int, limit: int | None = None):
        if len(ids) < block_size:
            raise DistilError(f"block_size: the text has only {len(ids)} tokens, fewer than block_size={block_size}")
        self.ids, self.block_size = ids, block_size
        self.starts = list(range(0, len(ids) - block_size + 1, stride))[:limit]

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        block = self.ids[self.starts[i]:self.starts[i] + self.block_size]
        return {"input_ids": block, "attention_mask": torch.ones_like(block), "labels": block.clone()}

    def batch_gatherer(self, device: torch.device | None = None):
        """index tensor (B,) -> the collated batch of those windows, cut from the token stream kept on
        `device` (the Trainer's direct path: no per-window copies, no host-to-device copy per step)."""
        ids = self.ids.to(device) if device is not None else self.ids
        starts = torch.tensor(self.starts, device=ids.device)
        offsets = torch.arange(self.block_size, device=ids.device)

        def gather(index: Tensor) -> dict[str, Tensor]:
            block = ids[starts[index][:, None] + offsets]  # (B, block_size)
            return {"input_ids": block, "attention_mask": torch.ones_like(block), "labels": block.clone()}

        return gather


def _token_ids(tokenizer: Any, text: str) -> Tensor:
    if isinstance(tokenizer, CharTokenizer):
        return torch.tensor(tokenizer.encode(text), dtype=torch.long)
    ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]  # one stream: no BOS/EOS
    return torch.tensor(ids, dtype=torch.long)


def _lm_bundle(text: str, tokenizer: Any, bounds: tuple[float, float], block_size: int,
               stride: int | None, max_train: int | None, max_eval: int | None = None) -> TextBundle:
    """Split the text at the character fractions `bounds` into train / val / test streams of blocks
    (at characters, so every tokenizer holds out the same text)."""
    a, b = int(len(text) * bounds[0]), int(len(text) * bounds[1])
    train, val, test = (_token_ids(tokenizer, part) for part in (text[:a], text[a:b], text[b:]))
    train = TokenBlocks(train, block_size, stride or block_size, max_train)
    val, test = (TokenBlocks(ids, block_size, block_size, max_eval) for ids in (val, test))
    return TextBundle(train, val, test, len(tokenizer), (block_size,), "language_modeling",
                      tokenizer=tokenizer, model_kwargs={"vocab_size": len(tokenizer)})


@DATASETS.register
@validated
def tiny_shakespeare(
    root: str = "../shared/data/lm_text",
    block_size: MaxLength = 64,
    stride: PositiveInt | None = None,
    max_train: PositiveInt | None = None,
    max_eval: PositiveInt | None = None,
    tokenizer: str | None = None,
) -> TextBundle:
    """TinyShakespeare (1.1M characters) at the character level (65 symbols, nanoGPT's set), or in
    the tokens of a pre-trained teacher's `tokenizer` (a local folder or `.gguf` file, as for `sst2`).

    Split as nanoGPT does, first 90% of the characters train, then the last 10% halved into
    validation and test. Training windows start every `stride` tokens (default: `block_size`, no
    overlap); `max_train` keeps only the first that many training windows, `max_eval` the first that
    many validation and test windows (as Hugging Face's run_clm `max_eval_samples`: a large teacher
    scores every evaluation).
    """
    path = Path(root) / "tinyshakespeare.txt"
    if not path.is_file():
        raise DistilError(f"tiny_shakespeare: {path} not found (the shared lm_text folder); set data.params.root")
    text = path.read_text(encoding="utf-8")
    tok = _hf_tokenizer(tokenizer, "tokenizer") if tokenizer is not None else CharTokenizer(sorted(set(text)))
    return _lm_bundle(text, tok, (0.9, 0.95), block_size, stride, max_train, max_eval)


TOY_SUBJECTS = ["the cat", "the dog", "a bird", "my friend", "the old man", "a child", "the teacher"]
TOY_VERBS = ["sees", "likes", "follows", "finds", "helps", "watches"]
TOY_OBJECTS = ["the ball", "a red box", "the garden", "the river", "a small house", "the moon"]
TOY_ENDINGS = [".", " today.", " at night.", " again."]
TOY_CHARS = sorted(set("".join(TOY_SUBJECTS + TOY_VERBS + TOY_OBJECTS + TOY_ENDINGS) + " \n"))


def toy_story(n_chars: int, seed: int) -> str:
    """Sentences from a tiny grammar (seeded), one line of four sentences after another."""
    rng = random.Random(seed)
    lines, size = [], 0
    while size < n_chars:
        line = " ".join(f"{rng.choice(TOY_SUBJECTS)} {rng.choice(TOY_VERBS)} {rng.choice(TOY_OBJECTS)}"
                        f"{rng.choice(TOY_ENDINGS)}" for _ in range(4))
        lines.append(line)
        size += len(line) + 1
    return "\n".join(lines)[:n_chars]


@DATASETS.register
@validated
def toy_text(
    n_chars: Annotated[int, Field(ge=1000, le=10_000_000)] = 40_000,
    block_size: MaxLength = 32,
    stride: PositiveInt | None = None,
    max_train: PositiveInt | None = None,
    seed: Seed = 0,
) -> TextBundle:
    """Generated English-like text at the character level (fixed vocabulary of len(TOY_CHARS)), for
    tests and CPU demos of language-model distillation: 80% train, 10% validation, 10% test."""
    return _lm_bundle(toy_story(n_chars, seed), CharTokenizer(TOY_CHARS), (0.8, 0.9), block_size, stride, max_train)
