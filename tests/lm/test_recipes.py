"""Causal-LM distillation from recipes: the character-level data sets, the GPT-2 / Llama factories,
and `distil run` on the toy recipe (teacher trained with token_ce, then token-level KD)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from typer.testing import CliRunner

from distil.build import build_data, build_model, check_recipe
from distil.checkpoint import load_weights
from distil.cli.main import app
from distil.config import load_recipe, recipe_from_dict
from distil.data import DATASETS
from distil.data.text import TOY_CHARS, CharTokenizer
from distil.distiller import Distiller
from distil.errors import ConfigError, DistilError
from distil.evaluate import language_model_metrics
from distil.models import MODELS
from distil.pipeline import run_recipe

pytest.importorskip("transformers")
RECIPES = Path(__file__).resolve().parents[2] / "recipes" / "lm"


def test_toy_text_blocks():
    bundle = DATASETS.get("toy_text")(n_chars=4000, block_size=16, stride=8)
    assert bundle.task == "language_modeling" and bundle.num_outputs == len(TOY_CHARS) == 26
    assert bundle.model_kwargs == {"vocab_size": 26} and bundle.input_shape == (16,)
    # 80% train (3200 chars) in windows of 16 every 8: (3200 - 16) // 8 + 1; val/test: 400 // 16.
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (399, 25, 25)
    item = bundle.train[1]
    assert set(item) == {"input_ids", "attention_mask", "labels"}
    assert torch.equal(item["labels"], item["input_ids"]) and item["attention_mask"].sum() == 16
    assert torch.equal(item["input_ids"][:8], bundle.train[0]["input_ids"][8:])  # stride 8 overlaps
    text = bundle.tokenizer.decode(bundle.train[0]["input_ids"])
    assert len(text) == 16 and set(text) <= set(TOY_CHARS)
    assert len(DATASETS.get("toy_text")(n_chars=4000, block_size=16, max_train=10).train) == 10


def test_char_tokenizer_round_trip_and_unknown_characters():
    tok = CharTokenizer("abc ")
    assert tok.encode("cab a") == [2, 0, 1, 3, 0] and tok.decode([2, 0, 1]) == "cab"
    assert tok.get_vocab() == {"a": 0, "b": 1, "c": 2, " ": 3}
    with pytest.raises(DistilError, match=r"outside the vocabulary: \['z'\]"):
        tok.encode("abz")


def test_tiny_shakespeare_from_the_shared_folder(shared_dir):
    bundle = DATASETS.get("tiny_shakespeare")(root=str(shared_dir / "data" / "lm_text"), block_size=64)
    assert bundle.num_outputs == 65  # nanoGPT's character set
    n = 1_115_394  # characters (ASCII, so also bytes)
    assert len(bundle.train) == int(n * 0.9) // 64
    assert len(bundle.val) == (int(n * 0.95) - int(n * 0.9)) // 64
    assert bundle.tokenizer.decode(bundle.train[0]["input_ids"]).startswith("First Citizen:")


def test_missing_lm_folder(tmp_path):
    with pytest.raises(DistilError, match="tinyshakespeare.txt not found.*data.params.root"):
        DATASETS.get("tiny_shakespeare")(root=str(tmp_path))


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_hf_causal_lm_takes_the_vocabulary_from_the_data(arch):
    model = MODELS.get("hf_causal_lm")(arch=arch, num_classes=26, hidden_size=16, num_heads=2, num_layers=1)
    ids = torch.randint(0, 26, (2, 9))
    assert model(input_ids=ids).logits.shape == (2, 9, 26)
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight  # tied by default
    bigger = MODELS.get("hf_causal_lm")(arch=arch, vocab_size=32, num_classes=26, hidden_size=16, num_layers=1)
    assert bigger.config.vocab_size == 32


def test_hf_causal_lm_argument_checks():
    make = MODELS.get("hf_causal_lm")
    with pytest.raises(ValueError, match="vocab_size: must be >= the data's vocabulary of 26 tokens, got 20"):
        make(vocab_size=20, num_classes=26)
    with pytest.raises(ValueError, match="vocab_size: required"):
        make()
    with pytest.raises(ValueError, match="num_kv_heads: only for arch='llama'"):
        make(vocab_size=10, num_kv_heads=1)
    with pytest.raises(ValueError, match="num_kv_heads: must divide num_heads=4, got 3"):
        make(arch="llama", vocab_size=10, hidden_size=16, num_heads=4, num_kv_heads=3)
    gqa = make(arch="llama", vocab_size=10, hidden_size=16, num_heads=4, num_kv_heads=2, num_layers=1)
    assert gqa.model.layers[0].self_attn.k_proj.out_features == 8  # 2 key/value heads of 4 dims


def test_hf_pretrained_causal_lm(tmp_path):
    model = MODELS.get("hf_causal_lm")(vocab_size=26, hidden_size=16, num_layers=1)
    model.save_pretrained(tmp_path)
    loaded = MODELS.get("hf_pretrained")(str(tmp_path), task="language_modeling", num_classes=26).eval()
    ids = torch.randint(0, 26, (1, 6))
    assert torch.allclose(loaded(input_ids=ids).logits, model.eval()(input_ids=ids).logits)
    with pytest.raises(ValueError, match="predicts 26 tokens but the data has 30"):
        MODELS.get("hf_pretrained")(str(tmp_path), task="language_modeling", num_classes=30)


def test_models_and_data_register_without_the_text_extra():
    code = (
        "import sys; sys.modules['transformers'] = None; sys.modules['tokenizers'] = None\n"
        "from distil.models import MODELS; from distil.data import DATASETS; from distil.errors import DistilError\n"
        "for call in (lambda: MODELS.get('hf_causal_lm')(vocab_size=8), lambda: DATASETS.get('toy_sentiment')()):\n"
        "    try: call()\n"
        "    except DistilError as e: print(e)\n"
        "print(len(DATASETS.get('toy_text')(n_chars=2000).train))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "need the `transformers` package: pip install distil[text]" in lines[0]
    assert "need the `tokenizers` package: pip install distil[text]" in lines[1]
    assert lines[2] == "50"  # the character-level data sets need neither


@pytest.mark.parametrize("name", ["toy_gpt2_kd.yaml", "shakespeare_gpt2_kd.yaml"])
def test_lm_recipes_validate_and_build(name, tmp_path):
    recipe = load_recipe(RECIPES / name, [f"output_dir={tmp_path}"])
    assert recipe.task == "language_modeling" and recipe.teachers[0].epochs
    if recipe.data.name == "tiny_shakespeare":
        assert recipe.data.params["root"] == "../shared/data/lm_text"
        return
    bundle = build_data(recipe)
    check_recipe(recipe, bundle)
    assert build_model(recipe.student, bundle, "student").config.vocab_size == 26


SHRINK = ["data.params.n_chars=12000", "teacher.epochs=4", "epochs=4", "data.batch_size=16"]


def test_run_toy_gpt2_kd(tmp_path):
    recipe = load_recipe(RECIPES / "toy_gpt2_kd.yaml", SHRINK + [f"output_dir={tmp_path}"])
    run_recipe(recipe, progress=False)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert {"token_accuracy", "nll", "perplexity", "params", "latency_ms"} <= set(saved["teacher"])
    assert {"token_accuracy", "perplexity", "agreement", "kl", "params"} <= set(saved["distilled"])
    log = [json.loads(line) for line in (tmp_path / "teacher" / "metrics.jsonl").read_text().splitlines()]
    assert "train/token_ce" in log[0] and len(log) == 4  # the teacher stage trains with next-token CE
    assert saved["teacher"]["perplexity"] < 8  # far better than uniform over 26 characters

    bundle = build_data(recipe)
    teacher = load_weights(build_model(recipe.teachers[0], bundle, "teacher"), tmp_path / "teacher" / "best" / "student.safetensors")
    set_seed(recipe.seed)  # the distilled student started from these weights
    untrained = build_model(recipe.student, bundle, "student")
    before = language_model_metrics(untrained, DataLoader(bundle.test, batch_size=8), teacher=teacher)
    assert saved["distilled"]["agreement"] > before["agreement"] + 0.3, (before, saved["distilled"])
    assert saved["distilled"]["kl"] < before["kl"] / 2


def test_cli_runs_the_toy_recipe_with_a_llama_student_and_jsd(tmp_path):
    sets = SHRINK + ["teacher.epochs=3", "epochs=3", "student.params.arch=llama", "losses=[{name: token_jsd, beta: 0.5}]",
                     f"output_dir={tmp_path}"]
    result = CliRunner().invoke(app, ["run", str(RECIPES / "toy_gpt2_kd.yaml"), "--no-progress",
                                      *[a for s in sets for a in ("--set", s)]])
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["distilled"]["agreement"] > 0.3 and saved["distilled"]["params"] < saved["teacher"]["params"]


def test_model_inputs_let_the_chunked_loss_skip_the_full_logits(tmp_path):
    """`model_inputs: {logits_to_keep: 1}` reaches both models in every distillation step (their
    logits shrink to the last position) and leaves a chunked-loss run's results unchanged."""
    chunked = ["losses=[{name: chunked_token_kd, student_layers: [transformer.ln_f], teacher_layers: [transformer.ln_f]}]",
               "teacher.epochs=2", "epochs=2"]
    shapes = []

    def record(module, args, kwargs, output):
        if type(module).__name__ == "GPT2LMHeadModel" and "logits_to_keep" in kwargs:
            shapes.append((module.training, tuple(output.logits.shape)))

    results = {}
    for name, extra in (("full", []), ("lean", ["model_inputs={logits_to_keep: 1}"])):
        recipe = load_recipe(RECIPES / "toy_gpt2_kd.yaml", SHRINK + chunked + extra + [f"output_dir={tmp_path / name}"])
        handle = torch.nn.modules.module.register_module_forward_hook(record, with_kwargs=True)
        try:
            results[name] = run_recipe(recipe, progress=False).metrics["distilled"]
        finally:
            handle.remove()
    assert {training for training, _ in shapes} == {True, False}  # student and frozen teacher, lean run only
    assert all(shape[1] == 1 for _, shape in shapes)
    for key in ("nll", "agreement", "kl"):
        assert results["lean"][key] == pytest.approx(results["full"][key], rel=1e-5)


def test_on_policy_steps_train_on_the_students_own_text(tmp_path, monkeypatch):
    """`on_policy: {fraction: 1}`: every distillation step sees prompt + sampled continuation (not
    the 32-token windows of the data), and the student still learns from the teacher's scores."""
    sets = SHRINK + ["losses=[{name: token_jsd, beta: 0.5}]", f"output_dir={tmp_path}",
                     "on_policy={fraction: 1.0, prompt_tokens: 8, max_new_tokens: 6}"]
    lengths, forward = [], Distiller.forward

    def spy(self, batch):
        out = forward(self, batch)
        if self.training and self.teacher is not None:  # distillation steps, not the teacher's stage
            lengths.append(out["output"].shape[1])
        return out

    monkeypatch.setattr(Distiller, "forward", spy)
    result = run_recipe(load_recipe(RECIPES / "toy_gpt2_kd.yaml", sets), progress=False)
    assert lengths and max(lengths) <= 8 + 6 < 32
    assert result.metrics["distilled"]["agreement"] > 0.3


def test_on_policy_steps_of_a_cached_run_are_scored_by_the_live_teacher(tmp_path, monkeypatch):
    """With `teacher.cache`, the data's windows read the cache (no teacher call) and the student's own
    text, which no cache holds, is scored by the live teacher in the cache's top-k form."""
    from torch.nn.modules.module import register_module_forward_hook

    sets = SHRINK + ["losses=[{name: sparse_token_kd, beta: 0.5}]", "teacher.cache={top_k: 4}", f"output_dir={tmp_path}",
                     "on_policy={fraction: 0.5, prompt_tokens: 8, max_new_tokens: 6}"]
    steps, forward = [], Distiller.forward

    def spy(self, batch):
        if not (self.training and self.teacher is not None):
            return forward(self, batch)
        calls = []
        handle = register_module_forward_hook(lambda m, a, o: calls.append(1) if m is self.teacher.module else None)
        try:
            out = forward(self, batch)
        finally:
            handle.remove()
        steps.append((out["output"].shape[1], len(calls)))
        return out

    from distil.losses.lm.sparse_token_kd import SparseTokenKD

    widths, loss_forward = set(), SparseTokenKD.forward

    def loss_spy(self, student_logits, teacher_logits, *args, **kwargs):
        widths.add(teacher_logits.shape[-1])
        return loss_forward(self, student_logits, teacher_logits, *args, **kwargs)

    monkeypatch.setattr(Distiller, "forward", spy)
    monkeypatch.setattr(SparseTokenKD, "forward", loss_spy)
    result = run_recipe(load_recipe(RECIPES / "toy_gpt2_kd.yaml", sets), progress=False)
    assert widths == {2 * 4 + 2}  # both kinds of step: packed top-4, never the dense logits
    generated = [calls for length, calls in steps if length <= 8 + 6]
    windows = [calls for length, calls in steps if length == 32]
    assert generated and windows and len(generated) + len(windows) == len(steps)
    assert all(calls == 1 for calls in generated) and all(calls == 0 for calls in windows)
    assert result.metrics["distilled"]["agreement"] > 0.3


def test_on_policy_needs_a_language_model(tmp_path):
    digits = recipe_from_dict({
        "data": {"name": "digits"}, "teacher": {"model": "mlp", "epochs": 1}, "student": {"model": "mlp"},
        "losses": [{"name": "hinton_kd"}], "on_policy": {"fraction": 0.5}, "output_dir": str(tmp_path / "d")})
    with pytest.raises(ConfigError, match="on_policy: needs task language_modeling"):
        check_recipe(digits, build_data(digits))
