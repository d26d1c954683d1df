"""Every example runs and prints what it claims, and every Python block in the docs is one of them.

Docs cannot drift from code that runs: a ```python block in README.md or docs/*.md starts with a
comment naming its example (`# examples/quickstart.py`) and the rest of the block must equal, line
for line, a part of that file marked `# [start:NAME]` ... `# [end:NAME]`. The examples run in
subprocesses (two at a time, one thread each) and each has a check of its printed claims below.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHARED_MODELS = ROOT.parent / "shared" / "models" / "cifar10_resnet_akamaster"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.M | re.S)
NAMES = re.compile(r"^# (examples/[\w-]+\.py)\b[^\n]*\n")
MARK = re.compile(r"^# \[(start|end):([\w-]+)\]$")


def number(pattern: str, out: str) -> float:
    match = re.search(pattern, out, re.M)
    assert match, f"no line matching {pattern!r} in:\n{out}"
    return float(match.group(1))


def floats(pattern: str, out: str) -> list[float]:
    match = re.search(pattern, out, re.M)
    assert match, f"no line matching {pattern!r} in:\n{out}"
    return [float(g) for g in match.groups()]


def check_quickstart(out):
    first = floats(r"^epoch 1: ce ([\d.]+)  kd ([\d.]+)  hint ([\d.]+)  loss ([\d.]+)$", out)
    last = floats(r"^epoch 20: ce ([\d.]+)  kd ([\d.]+)  hint ([\d.]+)  loss ([\d.]+)$", out)
    assert all(b < 0.5 * a for a, b in zip(first, last)), (first, last)  # every part falls, none blows up
    assert number(r"^teacher test accuracy: ([\d.]+)%$", out) > 93
    assert number(r"^student test accuracy: ([\d.]+)%$", out) > 90


def check_trainer(out):
    assert number(r"^best val accuracy ([\d.]+)% at epoch \d+ of 15$", out) > 88
    assert number(r"^reloaded student: test accuracy ([\d.]+)%$", out) > 88
    assert re.search(r"^run folder: best checkpoints metrics\.jsonl$", out, re.M), out


def check_batches(out):
    assert "direct batches: True" in out
    assert "dict batch -> ['inputs', 'labels', 'teacher_logits']" in out
    assert "tuple batch -> ['inputs', 'labels', 'sample_weight']" in out
    assert number(r"^from precomputed logits: val accuracy ([\d.]+)%$", out) > 85
    assert number(r"^with sample weights: val accuracy ([\d.]+)%$", out) > 85


def check_lightning(out):
    metrics = dict(re.findall(r"'([\w/]+)': ([\d.]+)", out))
    assert {"train/ce", "train/kd", "train/loss", "val/ce", "val/kd", "val/loss"} <= set(metrics), out
    assert number(r"^teacher test accuracy: ([\d.]+)%$", out) > 90
    assert number(r"^student test accuracy: ([\d.]+)%$", out) > 85


def check_hf(out):
    kd = [float(v) for v in re.findall(r"'kd': '([\d.e-]+)'", out)]
    assert len(kd) == 3 and kd[-1] < 0.5 * kd[0], kd  # logged every 50 of 150 steps, falling
    assert number(r"^teacher test accuracy: ([\d.]+)%$", out) > 90
    assert number(r"^student test accuracy: ([\d.]+)%$", out) > 75


def check_lm_distiller(out):
    before, after = floats(r"^validation JSD\(0\.5\) to the teacher: ([\d.]+) before, ([\d.]+) after", out)
    assert after < 0.5 * before
    fused, plain = floats(r"^one batch: chunked_token_kd ([\d.]+), token_jsd on full logits ([\d.]+)$", out)
    assert fused == pytest.approx(plain, rel=1e-3)


def check_lm_teacher_cache(out):
    assert "cache: 500 sequences, 388 bytes per token" in out  # 6k + 4 at k = 64
    first, last = floats(r"^sparse_token_kd: ([\d.]+) over the first 5 steps, ([\d.]+) over the last 5$", out)
    assert last < 0.5 * first
    fused, plain = floats(r"^one batch: chunked_sparse_token_kd ([\d.]+), sparse_token_kd on full logits ([\d.]+)$", out)
    assert fused == pytest.approx(plain, rel=1e-3)


def check_lm_uld(out):
    assert "check_same_vocab: teacher predicts over 128 tokens but the student over 27" in out
    before, after = floats(r"^uld on 64 training windows: ([\d.]+) before, ([\d.]+) after", out)
    assert after < 0.5 * before


def check_text_bilstm(out):
    assert number(r"^transfer set: (\d+) sentences from 4$", out) > 20
    assert number(r"^student agrees with the teacher on (\d+)% of the transfer set$", out) >= 90


def check_text_tinybert(out):
    epochs = [[float(v) for v in line] for line in re.findall(
        r"^epoch \d: embd ([\d.]+)  hidn ([\d.]+)  attn ([\d.]+)  pred ([\d.]+)$", out, re.M)]
    assert len(epochs) == 7, out
    assert all(e[3] == 0 for e in epochs[:5]) and all(e[:3] == [0, 0, 0] for e in epochs[5:])  # the two stages
    assert all(b < 0.5 * a for a, b in zip(epochs[0][:3], epochs[4][:3])), epochs
    assert epochs[6][3] < epochs[5][3]
    assert number(r"^student test accuracy: ([\d.]+)%$", out) > 70
    assert number(r"^minilm loss on one batch: ([\d.]+)$", out) > 0


def check_text_embeddings(out):
    before, after = floats(r"^held-out cosine to the teacher: ([-\d.]+) before, ([\d.]+) after", out)
    assert after > 0.9 and after > before + 0.5


def check_cifar100_npz(out):
    assert "x_train (50, 32, 32, 3) uint8 y_train (50,) x_test (20, 32, 32, 3)" in out
    assert "first image unchanged: True labels unchanged: True" in out
    assert "cifar_npz: 40 train, 10 val, 20 test images, 100 classes" in out


def check_pretrained_teacher(out):
    assert "resnet56: 853,018 parameters" in out
    assert "safetensors export rebuilds it: True" in out
    if "accuracy on" in out:  # the shared JPEG test set was there
        assert number(r"^accuracy on 256 JPEG CIFAR-10 test images: ([\d.]+)%$", out) > 70


def check_schemes(out):
    for line in ("peer a", "peer b", "mean-teacher student", "its mean teacher"):
        assert number(rf"^{line} test accuracy: ([\d.]+)%$", out) > 85


CHECKS = {
    "quickstart.py": check_quickstart,
    "schemes.py": check_schemes,
    "trainer.py": check_trainer,
    "batches.py": check_batches,
    "lightning_distill.py": check_lightning,
    "hf_distill.py": check_hf,
    "lm_distiller.py": check_lm_distiller,
    "lm_teacher_cache.py": check_lm_teacher_cache,
    "lm_uld.py": check_lm_uld,
    "text_bilstm.py": check_text_bilstm,
    "text_tinybert.py": check_text_tinybert,
    "text_embeddings.py": check_text_embeddings,
    "cifar100_npz.py": check_cifar100_npz,
    "pretrained_teacher.py": check_pretrained_teacher,
}
NEEDS = {  # optional packages (dev extras) and shared files an example cannot run without
    "lightning_distill.py": ["lightning"],
    "hf_distill.py": ["transformers"],
    "lm_distiller.py": ["transformers"],
    "lm_teacher_cache.py": ["transformers"],
    "lm_uld.py": ["transformers"],
    "text_bilstm.py": ["transformers", "tokenizers"],
    "text_tinybert.py": ["transformers", "tokenizers"],
    "text_embeddings.py": ["transformers", "tokenizers"],
}
SHARED = {"pretrained_teacher.py"}


def missing(name: str) -> str | None:
    """Why `name` cannot run here, or None."""
    absent = [m for m in NEEDS.get(name, []) if importlib.util.find_spec(m) is None]
    if absent:
        return f"needs {', '.join(absent)} (pip install -e '.[dev]')"
    if name in SHARED and not SHARED_MODELS.is_dir():
        return f"needs {SHARED_MODELS} (../shared)"
    return None


def run(name: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([sys.executable, str(EXAMPLES / name)], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=300)


@pytest.fixture(scope="module")
def results(request) -> dict[str, subprocess.CompletedProcess]:
    """The selected, runnable examples, run two at a time (the test machines have two cores)."""
    selected = [item.callspec.params["name"] for item in request.session.items
                if getattr(item, "originalname", "") == "test_example_runs_and_prints_its_claims"]
    names = [n for n in selected if missing(n) is None]
    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(names, pool.map(run, names)))


def test_every_example_has_a_check():
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(CHECKS)


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_example_runs_and_prints_its_claims(name, results):
    reason = missing(name)
    if reason:
        pytest.skip(reason)
    result = results[name]
    assert result.returncode == 0, f"examples/{name} exited {result.returncode}:\n{result.stderr[-3000:]}"
    CHECKS[name](result.stdout)


def excerpts(path: Path) -> dict[str, str]:
    """name -> text between `# [start:name]` and `# [end:name]` (marker lines excluded)."""
    found: dict[str, str] = {}
    open_name, lines = None, []
    for number_, line in enumerate(path.read_text().splitlines(), 1):
        mark = MARK.match(line)
        if not mark:
            if open_name:
                lines.append(line)
            continue
        kind, name = mark.groups()
        where = f"{path.name}:{number_}"
        if kind == "start":
            assert open_name is None, f"{where}: [start:{name}] inside [start:{open_name}]"
            assert name not in found, f"{where}: a second [start:{name}]"
            open_name, lines = name, []
        else:
            assert open_name == name, f"{where}: [end:{name}] does not close [start:{open_name}]"
            found[name], open_name = "\n".join(lines) + "\n", None
    assert open_name is None, f"{path.name}: [start:{open_name}] is never closed"
    return found


def doc_blocks() -> list[tuple[str, str, str]]:
    """(doc location, example path named in the block's first line or '', rest of the block)."""
    out = []
    for doc in DOCS:
        text = doc.read_text()
        for match in BLOCK.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            code = match.group(1)
            named = NAMES.match(code)
            where = f"{doc.relative_to(ROOT)}:{line}"
            out.append((where, named.group(1), code[named.end():]) if named else (where, "", code))
    return out


def test_every_python_block_in_the_docs_is_an_example_excerpt():
    blocks = doc_blocks()
    assert len(blocks) >= 10
    for where, example, code in blocks:
        assert example, f"{where}: start the block with a comment naming its example, e.g. '# examples/x.py'"
        path = ROOT / example
        assert path.is_file(), f"{where}: {example} does not exist"
        parts = excerpts(path)
        assert code in parts.values(), (
            f"{where}: the block is not one of the marked parts of {example} ({', '.join(parts)}); "
            "copy the part between its # [start:...] / # [end:...] markers into the doc"
        )


def test_every_marked_excerpt_is_shown_in_the_docs():
    shown = {(example, code) for _, example, code in doc_blocks()}
    for path in sorted(EXAMPLES.glob("*.py")):
        for name, code in excerpts(path).items():
            assert (f"examples/{path.name}", code) in shown, f"examples/{path.name} [{name}] is in no doc"
