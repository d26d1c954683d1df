"""Scheme recipes through `distil run`: what each reports, who teaches whom, and exact resume."""

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from torch.nn.modules.module import register_module_forward_hook

from distil.config import load_recipe, recipe_from_dict
from distil.distiller import Distiller
from distil.errors import ConfigError
from distil.pipeline import run_recipe

RECIPES = Path(__file__).resolve().parents[2] / "recipes" / "schemes"


def quick(name: str, tmp_path: Path, **changes):
    """A shipped scheme recipe, shortened to a couple of epochs."""
    raw = yaml.safe_load((RECIPES / name).read_text())
    raw |= {"epochs": 2, "output_dir": str(tmp_path / "run"), "checkpoint_every_epochs": 1} | changes
    for section in ("teacher",):
        if isinstance(raw.get(section), dict) and "epochs" in raw[section]:
            raw[section]["epochs"] = 2
    for model in raw.get("models", {}).values():
        if "epochs" in model:
            model["epochs"] = 2
    return recipe_from_dict(raw)


class DistillerCalls:
    """Records each training-mode Distiller call: its student and the batch and teacher output
    (None in the steps that train a teacher or a baseline on labels)."""

    def __enter__(self):
        self.calls, self.stop_at = [], None
        self._handle = register_module_forward_hook(self._seen)
        return self

    def _seen(self, module, args, output):
        if isinstance(module, Distiller) and module.training:
            self.calls.append((module.student, args[0], output.get("teacher_output")))
            if self.stop_at is not None and len(self.calls) == self.stop_at:
                raise KeyboardInterrupt("crash")

    def __exit__(self, *exc):
        self._handle.remove()


@pytest.mark.parametrize("name", sorted(p.name for p in RECIPES.glob("*.yaml")))
def test_shipped_scheme_recipes_validate(name):
    load_recipe(RECIPES / name)


def test_dml_recipe_reports_each_peer_the_baseline_and_the_ensemble(tmp_path):
    result = run_recipe(quick("digits_dml.yaml", tmp_path), progress=False)
    assert set(result.metrics) == {"baseline", "distilled", "peer", "ensemble"}
    assert result.metrics["ensemble"]["params"] == 2 * result.metrics["peer"]["params"]
    log = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert "val/peer/accuracy" in log and (tmp_path / "run" / "best" / "peer.safetensors").is_file()


def test_born_again_generation_g_plus_1_learns_from_generation_g(tmp_path):
    recipe = quick("digits_born_again.yaml", tmp_path, chain={"generations": 2})
    with DistillerCalls() as seen:
        result = run_recipe(recipe, progress=False)
    assert set(result.metrics) == {"teacher", "generation-1", "distilled", "ensemble"}
    generation_1 = next(c[0] for c in seen.calls if c[2] is not None)  # the first distillation's student
    load = load_file(tmp_path / "run" / "chain" / "generation-1" / "best" / "student.safetensors")
    generation_1.load_state_dict(load)
    final_calls = [c for c in seen.calls if c[0] is result.student]
    assert final_calls, "the last generation never trained"
    student, (x, _), teacher_output = final_calls[-1]
    with torch.no_grad():
        torch.testing.assert_close(teacher_output, generation_1.eval()(x))


def test_teacher_assistant_trains_before_the_student(tmp_path):
    with DistillerCalls() as seen:
        result = run_recipe(quick("digits_takd.yaml", tmp_path), progress=False)
    sizes = [sum(p.numel() for p in student.parameters()) for student, _, taught in seen.calls if taught is not None]
    assistant, student = result.metrics["assistant-1"]["params"], result.metrics["distilled"]["params"]
    assert sizes[0] == assistant and sizes[-1] == student
    assert sizes.index(student) > len(sizes) - 1 - sizes[::-1].index(assistant)  # all assistant steps come first
    assert {"teacher", "baseline", "assistant-1", "distilled"} == set(result.metrics)


def test_a_chain_resumed_in_its_last_stage_ends_on_the_uninterrupted_weights(tmp_path):
    reference = run_recipe(quick("digits_takd.yaml", tmp_path / "a", checkpoint_every_steps=3), progress=False)
    recipe = quick("digits_takd.yaml", tmp_path / "b", checkpoint_every_steps=3)
    # 299 digits in batches of 32: 10 steps an epoch; the teacher, the baseline and the assistant
    # train first (their own Distillers, 2 epochs each), so call 65 is mid-way through the student's
    with DistillerCalls() as seen, pytest.raises(KeyboardInterrupt):
        seen.stop_at = 65
        run_recipe(recipe, progress=False)
    assert seen.calls[-1][0] is not seen.calls[45][0]  # it crashed in the last stage
    resumed = run_recipe(recipe, resume=True, progress=False)
    for key, value in reference.student.state_dict().items():
        torch.testing.assert_close(resumed.student.state_dict()[key], value, rtol=0, atol=0)
    assert resumed.metrics["distilled"]["accuracy"] == reference.metrics["distilled"]["accuracy"]


def test_scheme_mistakes_are_one_line_naming_the_models(tmp_path):
    base = yaml.safe_load((RECIPES / "digits_dml.yaml").read_text()) | {"output_dir": str(tmp_path / "r")}
    wrong_teacher = base | {"losses": [{"name": "mutual_kd", "teacher": "pear"}]}
    with pytest.raises(ConfigError, match=r"losses\[0\]\.teacher: 'pear' is not a model of this recipe; models: student, peer"):
        run_recipe(recipe_from_dict(wrong_teacher), progress=False)
    frozen_student = base | {"models": {"peer": {"model": "mlp", "params": {"hidden": [32]}, "epochs": 1}}}
    with pytest.raises(ConfigError, match=r"losses\[1\]\.student: 'peer' is not a trained model"):
        run_recipe(recipe_from_dict(frozen_student), progress=False)
