"""Fuzzed recipes: every mutation of a shipped recipe is accepted or refused with one line, quickly.

Hypothesis mutates each recipe under recipes/ (a value of another type or out of range, a key
removed or unknown, a value nested or wrapped, registry names swapped, YAML aliases that share,
explode or recurse, unicode) or its YAML text (tags, stray characters, truncation), then runs what
`distil validate` runs: `load_recipe`, `build_data`, `check_recipe`. The outcome must be success
or a `DistilError` whose message is one line per problem, within TIME_LIMIT seconds; anything
else (a traceback, a hang) is a bug. A few cases go through the CLI as well. Recipes that read
`../shared`, data/cifar100.npz or a teacher another recipe trains get small stand-ins (the data
or weights are swapped, not the checks), so the test runs without them; a cifar10 recipe whose shared data is missing is a one-line refusal.
Examples are derandomised: the same mutations every run (FUZZ_EXAMPLES=N explores more).
"""

from __future__ import annotations

import copy
import os
import re
import signal
import time
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, currently_in_test_context, event, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from distil.build import build_data, check_recipe
from distil.cli.main import app
from distil.checkpoint import save_weights
from distil.config import load_recipe
from distil.data import DATASETS
from distil.errors import DistilError
from distil.losses import LOSSES
from distil.models import MODELS

ROOT = Path(__file__).resolve().parents[2]
RECIPES = sorted((ROOT / "recipes").rglob("*.yaml"))
# mnist_* are their digits_* twins on the shared 60k MNIST (a second or more to load): validated as
# shipped, mutated through the twins
FUZZED = [p for p in RECIPES if not p.name.startswith("mnist_")]
TIME_LIMIT = 20  # seconds per recipe, a hang detector: validating a shipped recipe takes well under one
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "6"))  # FUZZ_EXAMPLES=500: explore, with fresh random examples
SEEDED = "FUZZ_EXAMPLES" not in os.environ
FUZZ = settings(max_examples=EXAMPLES, deadline=timedelta(seconds=TIME_LIMIT), derandomize=SEEDED, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large], print_blob=True)
SLOW_DATA = {"sst2", "imdb"}  # read and tokenise 67k phrases / 75k reviews (~8 s): never swapped in

INTERESTING = [0, -1, 1, 2, 2.5, -0.5, 1e30, -1e30, 2**31, 2**32, 2**63, 10**30, float("nan"), float("inf"),
               "", "x", "1e30", "ünïcødé", "名前", "🙂", "\x00", "a: b", [], {}, None, True, False, [0], {"a": 1}]
VALUES = st.one_of(
    st.sampled_from(INTERESTING), st.integers(-3, 300), st.floats(-1e3, 1e3), st.text(max_size=8), st.booleans(),
    st.lists(st.integers(-2, 64), max_size=3), st.dictionaries(st.text(max_size=4), st.integers(0, 9), max_size=2),
)
KEYS = st.one_of(st.text(min_size=1, max_size=10), st.sampled_from([1, 2.5, True, None, "name", "params", "ß"]))
NAMES = {"data": DATASETS.names(), "model": MODELS.names(), "loss": LOSSES.names()}
# Placeholders replaced in the YAML text: structures PyYAML's emitter cannot write (it recurses).
TEXT_VALUES = {
    "__DEEP__": "[" * 3000 + "]" * 3000,
    "__TAG__": '!!python/object/apply:os.system ["echo pwned"]',
    "__CUSTOM_TAG__": "!include other.yaml",
    "__FLOAT_TAG__": "!!float abc",
    "__TIMESTAMP__": "2024-13-45",
    "__HUGE_INT__": "9" * 5000,
    "__UNDEFINED_ALIAS__": "*nowhere",
}


# ----- stand-ins for data the test machine may not have -----

@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A folder with a small 100-class CIFAR-style .npz for the cifar100 recipes, and the teacher
    weights that two of them expect another recipe to have trained."""
    folder = tmp_path_factory.mktemp("fuzz")
    rng = np.random.default_rng(0)
    labels = np.arange(300) % 100
    np.savez(folder / "cifar100.npz", x_train=rng.integers(0, 256, (300, 32, 32, 3), dtype=np.uint8),
             y_train=labels, x_test=rng.integers(0, 256, (100, 32, 32, 3), dtype=np.uint8), y_test=labels[:100])
    save_weights(MODELS.get("resnet32x4")(num_classes=100), folder / "resnet32x4.safetensors")
    return folder


def shipped(path: Path, workdir: Path) -> dict[str, Any]:
    """A shipped recipe, with stand-in data where it reads files the test may lack or that are slow."""
    raw = yaml.safe_load(path.read_text())
    data = raw["data"]
    if data["name"] == "cifar_npz":
        data["params"]["path"] = str(workdir / "cifar100.npz")
    teacher = raw.get("teacher")
    if isinstance(teacher, dict) and teacher.get("checkpoint"):
        teacher["checkpoint"] = str(workdir / f"{teacher['model']}.safetensors")
    elif data["name"] == "sst2":
        raw["data"] = {**data, "name": "toy_sentiment", "params": {"n_train": 100, "n_val": 20, "n_test": 20,
                                                                   "augment": {"n_per_sentence": 2}}}
    elif data["name"] == "imdb":  # reads 75,000 reviews and trains a vocabulary (~10 s): toy sentences instead
        toy = {"name": "toy_sentiment", "params": {"n_train": 100, "n_val": 20, "n_test": 20}}
        raw["data"] = {**data, **toy}
        raw["transfer"] = {**raw["transfer"], **toy}
    elif data["name"] == "tiny_shakespeare":  # and a smaller teacher: 10.8M parameters take 1 s to build
        raw["data"] = {**data, "name": "toy_text", "params": {"n_chars": 5000, "block_size": 128, "stride": 64}}
        if raw["teacher"]["model"] == "hf_pretrained":  # a GGUF file (SmolLM2): a small GPT-2 to train in its place
            raw["teacher"] = {"model": "hf_causal_lm", "params": {}, "epochs": 1,
                              "cache": {**raw["teacher"].get("cache", {}), "top_k": 8}}
        raw["teacher"]["params"].update(hidden_size=96, num_layers=2)
    raw["output_dir"] = str(workdir / "run")
    return raw


# ----- mutations -----

def slots(tree: Any, here: tuple = (), seen: set[int] | None = None) -> list[tuple]:
    """Paths of every value in a recipe tree (the root excluded), each shared collection once."""
    seen = set() if seen is None else seen
    if id(tree) in seen:
        return []
    seen.add(id(tree))
    found = []
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else []
    for key, value in items:
        found.append(here + (key,))
        found += slots(value, here + (key,), seen)
    return found


def registry_family(path: tuple) -> str | None:
    """Which registry the value at `path` names: data.name, student.model, teacher[1].model, losses[0].name."""
    if path == ("data", "name"):
        return "data"
    if path[-1] == "model" and path[0] in ("student", "teacher"):
        return "model"
    return "loss" if len(path) == 3 and path[0] == "losses" and path[-1] == "name" else None


def parent(tree: Any, path: tuple) -> Any:
    for key in path[:-1]:
        tree = tree[key]
    return tree


def laughs(levels: int) -> list:
    """The "billion laughs": 9 ** levels strings, in few lines of YAML (each level aliases the last)."""
    layer: Any = ["lol"] * 9
    for _ in range(levels - 1):
        layer = [layer] * 9
    return layer


def recursive() -> list:
    loop: list = []
    loop.append(loop)
    return loop


@st.composite
def mutation(draw, tree: dict) -> dict:
    """A copy of the recipe tree with one change."""
    tree = copy.deepcopy(tree)
    kind = draw(st.sampled_from(["replace", "replace", "delete", "unknown", "wrap", "name", "alias", "text"]))
    everywhere = slots(tree)
    named = [p for p in everywhere if registry_family(p)]
    path = draw(st.sampled_from(named if kind == "name" and named else everywhere))
    holder, key = parent(tree, path), path[-1]
    if kind == "replace":
        holder[key] = draw(VALUES)
    elif kind == "delete":
        del holder[key]
    elif kind == "unknown":
        target = holder if isinstance(holder, dict) else tree
        target[draw(KEYS)] = draw(VALUES)
    elif kind == "wrap":
        holder[key] = draw(st.sampled_from([[holder[key]], {"value": holder[key]}, [[[[[holder[key]]]]]]]))
    elif kind == "name":
        family = registry_family(path) or "model"
        holder[key] = draw(st.sampled_from([n for n in NAMES[family] if n not in SLOW_DATA]))
    elif kind == "alias":  # YAML anchors and aliases: shared (fine), exponential or recursive (refused)
        other = parent(tree, draw(st.sampled_from(slots(tree))) + (None,))
        holder[key] = draw(st.sampled_from([other, laughs(2), laughs(5), laughs(9), recursive()]))
    else:
        holder[key] = draw(st.sampled_from(sorted(TEXT_VALUES)))
    return tree


def to_text(tree: dict, unicode: bool) -> str:
    text = yaml.safe_dump(tree, allow_unicode=unicode, sort_keys=False)
    for placeholder, raw in TEXT_VALUES.items():
        text = text.replace(placeholder, raw)
    return text


@st.composite
def text_edit(draw, text: str) -> str:
    """A raw edit of the YAML text: stray characters, a cut, a byte-order mark, a tab indent."""
    at = draw(st.integers(0, len(text)))
    kind = draw(st.sampled_from(["insert", "cut", "bom", "tab"]))
    if kind == "insert":
        extra = draw(st.one_of(st.text(max_size=6), st.sampled_from([": ", "- ", "&a ", "*a", "!x ", "{", "]", '"',
                                                                     "\t", "%YAML 1.1\n", "---\n", "\x07", "\ufeff"])))
        return text[:at] + extra + text[at:]
    if kind == "cut":
        return text[:at]
    return "\ufeff" + text if kind == "bom" else text[:at] + "\t" + text[at:]


# ----- the oracle -----

class Hang(BaseException):
    """Raised by the alarm: BaseException, so no `except Exception` in the code under test hides it."""


@contextmanager
def time_limit(seconds: float):
    def ring(signum, frame):
        raise Hang(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def validate(path: Path) -> str | None:
    """What `distil validate` does; None when the recipe is accepted, else the one-line error."""
    with time_limit(TIME_LIMIT):
        try:
            recipe = load_recipe(path)
            check_recipe(recipe, build_data(recipe))
        except DistilError as e:
            return str(e)
    return None


def assert_one_line_per_problem(message: str) -> None:
    lines = message.splitlines()
    assert lines and all(line.strip() for line in lines), repr(message)
    assert len(lines) <= 10, message  # a mutation makes a problem or a few (one per teacher of a list)
    for line in lines:
        assert re.match(r"\S[^\n]*?: \S", line) and "Traceback" not in line, line


def check(text: str, workdir: Path) -> str | None:
    path = workdir / "recipe.yaml"
    path.write_text(text, encoding="utf-8")
    started = time.monotonic()
    message = validate(path)
    assert time.monotonic() - started < TIME_LIMIT
    if currently_in_test_context():  # outcomes for --hypothesis-show-statistics
        event("accepted" if message is None else f"refused: {message.split(':')[0][:30]}")
    if message is not None:
        assert_one_line_per_problem(message)
    return message


# ----- the tests -----

@pytest.mark.parametrize("path", RECIPES, ids=lambda p: str(p.relative_to(ROOT / "recipes")))
def test_shipped_recipe_validates_or_is_refused_in_one_line(path, workdir):
    message = check(to_text(shipped(path, workdir), unicode=True), workdir)
    if message is not None:  # only data or an optional package the machine lacks may stop a shipped recipe
        assert "../shared" in message or "not found" in message or "no installed package" in message, message


@pytest.mark.parametrize("path", FUZZED, ids=lambda p: str(p.relative_to(ROOT / "recipes")))
@FUZZ
@given(data=st.data())
def test_mutated_recipe_is_accepted_or_refused_in_one_line(path, workdir, data):
    tree = data.draw(mutation(shipped(path, workdir)))
    if data.draw(st.booleans()):
        tree = data.draw(mutation(tree))  # a second change now and then
    check(to_text(tree, unicode=data.draw(st.booleans())), workdir)


@FUZZ
@given(data=st.data())
def test_edited_yaml_text_is_accepted_or_refused_in_one_line(workdir, data):
    path = data.draw(st.sampled_from(FUZZED))
    text = to_text(shipped(path, workdir), unicode=True)
    check(data.draw(text_edit(text)), workdir)


@pytest.mark.parametrize("value", sorted(TEXT_VALUES))
def test_hostile_yaml_values_are_refused_naming_the_line(value, workdir):
    tree = shipped(ROOT / "recipes" / "digits_kd.yaml", workdir)
    tree["student"]["params"]["hidden"] = value
    message = check(to_text(tree, unicode=True), workdir)
    assert message is not None and re.match(f"{re.escape(str(workdir / 'recipe.yaml'))}: (not valid YAML: )?line ", message), message


@pytest.mark.parametrize("levels, refused", [(2, False), (5, True), (9, True)])
def test_alias_expansion_is_bounded(levels, refused, workdir):
    tree = shipped(ROOT / "recipes" / "digits_kd.yaml", workdir)
    plain = to_text(tree, unicode=False)
    tree["model_inputs"] = {"lols": laughs(levels)}
    text = to_text(tree, unicode=False)
    assert len(text) - len(plain) < 2000 and "*id" in text  # 9 ** levels values in a few lines
    message = check(text, workdir)
    assert (message is not None and "more than 10000 values once its aliases are expanded" in message) == refused


# ----- through the command line -----

runner = CliRunner()
SET_VALUES = st.one_of(st.sampled_from(["!!python/object/apply:os.system [true]", "[" * 2000, "{a: [1, 2", "&a [*a]",
                                        "1e30", "-1", "null", "[]", "{}", "2024-13-45", "9" * 5000, "ünï"]),
                       st.text(max_size=8))
SET_KEYS = st.sampled_from(["seed", "epochs", "data.params.n_train", "data.batch_size", "student.params.hidden",
                            "student.params.hidden[0]", "losses[0].temperature", "losses[9].name", "teacher.epochs",
                            "teacher", "optimizer.lr", "data.name", "student.model", "a..b", "[", "losses[²]", ""])


@settings(max_examples=max(EXAMPLES, 10), deadline=timedelta(seconds=TIME_LIMIT), derandomize=SEEDED, database=None)
@given(key=SET_KEYS, value=SET_VALUES)
def test_cli_validate_with_any_override_exits_cleanly(key, value):
    with time_limit(TIME_LIMIT):
        result = runner.invoke(app, ["validate", str(ROOT / "recipes/text/toy_bert_to_bilstm.yaml"), "--set", f"{key}={value}"])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code in (0, 2) and "Traceback" not in result.output and "Aborted" not in result.output
    if result.exit_code == 2:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert 1 <= len(lines) <= 3 and all(line.startswith("error: ") for line in lines), result.stderr
