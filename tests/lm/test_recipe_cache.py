"""`teacher.cache` for a language model in a recipe: the teacher runs once over the training
sequences (top-k per position), the student trains from that without it, and recipes the cache
cannot serve are refused before training."""

import json
from pathlib import Path

import pytest

from distil.build import build_data, check_recipe
from distil.config import load_recipe
from distil.errors import ConfigError
from distil.pipeline import run_recipe
from helpers import TeacherCallsInSteps

pytest.importorskip("transformers")
RECIPES = Path(__file__).resolve().parents[2] / "recipes" / "lm"
SMALL = ["data.params.n_chars=8000", "teacher.epochs=3", "epochs=3", "data.batch_size=16"]


def recipe(tmp_path, *sets):
    return load_recipe(RECIPES / "toy_gpt2_kd.yaml", [*SMALL, f"output_dir={tmp_path / 'run'}", *sets])


def test_cached_top_k_at_the_full_vocabulary_trains_like_the_live_teacher(tmp_path):
    """With k = V and float32 storage the sparse loss is exactly token_kl, so a cached run must end
    where the live one does; and the cached run never calls the teacher in a step."""
    vocab = build_data(recipe(tmp_path)).num_outputs
    live_recipe = recipe(tmp_path / "live", "losses=[{name: token_kl}]")
    cached_recipe = recipe(tmp_path / "cached", "losses=[{name: sparse_token_kd}]",
                           f"teacher.cache={{top_k: {vocab}, dtype: float32}}")
    with TeacherCallsInSteps() as live_calls:
        live = run_recipe(live_recipe, progress=False).metrics["distilled"]
    with TeacherCallsInSteps() as cached_calls:
        cached = run_recipe(cached_recipe, progress=False).metrics["distilled"]
    assert live_calls.count > 0 and cached_calls.count == 0  # the counter works, and the cache is used
    manifest = json.loads((tmp_path / "cached" / "run" / "teacher_cache" / "manifest.json").read_text())
    assert manifest["k"] == vocab and manifest["dtype"] == "float32"
    for key in ("nll", "agreement", "kl"):
        assert cached[key] == pytest.approx(live[key], rel=1e-3, abs=1e-4), key


def test_chunked_sparse_loss_from_the_cache_learns(tmp_path):
    """Top 4 of the vocabulary, fp16 storage, the chunked loss on the final norm, no full logits."""
    sets = ["losses=[{name: chunked_sparse_token_kd, student_layers: [transformer.ln_f]}]",
            "teacher.cache={top_k: 4}", "model_inputs={logits_to_keep: 1}"]
    result = run_recipe(recipe(tmp_path, *sets), progress=False)
    before = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert result.metrics["distilled"]["agreement"] > 0.5
    assert result.fit.history[-1]["train/chunked_sparse_token_kd"] < before["train/chunked_sparse_token_kd"]


def test_a_shared_cache_is_reused_and_a_different_one_refused(tmp_path):
    shared = tmp_path / "shared_cache"
    sets = ["losses=[{name: sparse_token_kd}]", f"teacher.cache={{top_k: 8, path: {shared}}}",
            "teacher.checkpoint=null"]
    first = recipe(tmp_path / "a", *sets)
    run_recipe(first, progress=False)
    stamp = (shared / "manifest.json").stat().st_mtime_ns
    teacher = tmp_path / "a" / "run" / "teacher" / "best" / "student.safetensors"
    reuse = recipe(tmp_path / "b", *sets, f"teacher.checkpoint={teacher}", "teacher.epochs=null")
    run_recipe(reuse, progress=False)
    assert (shared / "manifest.json").stat().st_mtime_ns == stamp  # reused, not rebuilt
    other = recipe(tmp_path / "c", "losses=[{name: sparse_token_kd}]", f"teacher.cache={{top_k: 4, path: {shared}}}",
                   f"teacher.checkpoint={teacher}", "teacher.epochs=null")
    with pytest.raises(ConfigError, match=r"^teacher\.cache\.path: .*delete that folder"):
        run_recipe(other, progress=False)


@pytest.mark.parametrize("sets,message", [
    (["losses=[{name: token_kl}]"], r"losses\[0\]: token_kl needs the teacher's full logits"),
    (["losses=[{name: token_ce}]"], r"teacher\.cache: no loss reads the cached teacher"),
    (["teacher.cache={views: 4}", "losses=[{name: sparse_token_kd}]"], r"teacher\.cache\.views: applies to image data"),
    (["losses=[{name: sparse_token_kd}, {name: chunked_sparse_token_kd, temperature: 2.0, "
      "student_layers: [transformer.ln_f]}]"], r"losses: the sparse losses must share one temperature"),
])
def test_recipes_the_cache_cannot_serve_are_refused_before_training(tmp_path, sets, message):
    cache = [] if any(s.startswith("teacher.cache=") for s in sets) else ["teacher.cache={top_k: 4}"]
    r = recipe(tmp_path, *cache, *sets)
    with pytest.raises(ConfigError, match=message):
        check_recipe(r, build_data(r))
    assert not (tmp_path / "run").exists()


def test_a_damaged_cache_in_the_run_folder_is_rebuilt_on_resume(tmp_path):
    r = recipe(tmp_path, "losses=[{name: sparse_token_kd}]", "teacher.cache={top_k: 4}")
    run_recipe(r, progress=False)
    shard = next((tmp_path / "run" / "teacher_cache").glob("shard-*.safetensors"))
    shard.unlink()
    run_recipe(r, resume=True, progress=False)
    assert shard.is_file()
