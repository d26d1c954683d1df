"""The model card `distil export` writes beside the ONNX files: what the student does and reads,
how well it does it, and how it was made.

A file without its card is hard to ship: its user must know the classes behind each logit, the
input names and shapes, the preprocessing or tokenizer the inputs need, and whether the int8 copy
is good enough. The card is `README.md` with a small YAML header, as model hubs read it, and says
all of that from the run's own files (recipe, metrics.json, export.json); nothing is typed by hand.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from distil.checkpoint import atomic_write_text
from distil.report import export_section, md_table, table_rows

CARD = "README.md"


def write_model_card(folder: Path, recipe: Any, recipe_text: str, metrics: dict[str, dict[str, Any]] | None,
                     export: dict[str, Any]) -> Path:
    """Write `folder/README.md` for the exported student of `recipe` (its resolved YAML is
    `recipe_text`); `metrics` is the run's metrics.json (None when it has none), `export` what
    export.json holds. Returns the card's path."""
    teachers = ", ".join(t.model for t in recipe.teachers) or "none"
    header = {"library_name": "onnx", "tags": ["distil", "knowledge-distillation"], "task": recipe.task,
              "data": recipe.data.name, "student": recipe.student.model, "teachers": teachers}
    lines = ["---", yaml.safe_dump(header, sort_keys=False).strip(), "---", "",
             f"# {recipe.student.model} distilled from {teachers}", "",
             f"Trained by distil on `{recipe.data.name}` and exported by `distil export` from `{export['run_dir']}`.", "",
             "## What it does", "", *_task(recipe, export), "", "## Inputs", "", *_inputs(export), ""]
    if metrics:
        lines += ["## Test metrics of the run", "", *md_table(*table_rows(metrics)), ""]
    title, columns, rows = export_section(export, "")
    lines += [f"## Files ({title[len('Export: '):]})", "", *md_table(columns, rows), ""]
    if "skipped" in export:
        lines += [f"- {name}: not written, {why}." for name, why in export["skipped"].items()] + [""]
    lines += ["## Recipe", "", "The resolved recipe of the run (`distil run` on it makes this student again):", "",
              "```yaml", recipe_text.strip(), "```", ""]
    atomic_write_text(folder / CARD, "\n".join(lines))
    return folder / CARD


def _task(recipe: Any, export: dict[str, Any]) -> list[str]:
    losses = ", ".join(loss.name for loss in recipe.losses) or "none"
    outputs = export.get("outputs")
    if recipe.task == "language_modeling":
        what = f"Next-token prediction: `logits` are (batch, sequence, {outputs}), one row of vocabulary scores per position."
    elif recipe.task == "classification":
        what = (f"Classification into {outputs} classes: `logits` are (batch, {outputs}), one score per class in "
                f"label order 0..{outputs - 1 if outputs else '?'}; softmax gives probabilities.")
    else:
        what = f"Regression: `logits` are (batch, {outputs}), the predicted values."
    lines = [f"- {what}", f"- Distillation losses: {losses}."]
    if export.get("quantisation_aware"):
        lines.append("- Trained quantisation-aware (int8 simulated in training): the PyTorch row below is the "
                     "fake-quantised network; `student.onnx` is the float network it simulates, batch norm folded.")
    return lines


def _inputs(export: dict[str, Any]) -> list[str]:
    given = export["input"]
    signature = given.get("inputs") or {given["name"]: {"shape": given["shape"], "dtype": given["dtype"]}}
    lines = md_table(["name", "shape", "dtype"], [[f"`{n}`", " x ".join(map(str, s["shape"])), s["dtype"]]
                                                   for n, s in signature.items()])
    preprocessing = {k: v for k, v in given.items() if k not in ("name", "shape", "dtype", "inputs", "data")}
    lines += [""] + [f"- {key}: {_plain(value)}" for key, value in preprocessing.items()]
    tokenizer = export.get("tokenizer_file")
    if tokenizer:
        lines.append(f"- The tokenizer is saved as `{tokenizer}` in this folder ({_loader(tokenizer)}).")
    return lines


def _loader(tokenizer_file: str) -> str:
    if tokenizer_file.endswith("tokenizer.json"):
        return "`tokenizers.Tokenizer.from_file`; pad with id 0 and set `attention_mask` to 0 there"
    if tokenizer_file.endswith("characters.json"):
        return "its `chars` list: a character's id is its position"
    return "`transformers.AutoTokenizer.from_pretrained` on the folder"


def _plain(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in value)
    return str(value)
