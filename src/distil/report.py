"""Reports: a Markdown table and a self-contained HTML page with plots, from a run folder.

A run folder holds `metrics.json` (`{"teacher": {...}, "baseline": {...}, "distilled": {...}}`,
any subset) and learning curves in `<name>/metrics.jsonl` (or `metrics.jsonl` for the distilled
student of a plain `distil run`). When `distil export` or `distil cascade` ran on it (or on a model
folder inside it, as the demo's `distilled/`), their `export/export.json` and `cascade.json` get a
table each below the main one.
"""

from __future__ import annotations

import base64
import html
import io
import json
import time
from pathlib import Path
from typing import Any, Sequence

from distil.checkpoint import atomic_write_text
from distil.errors import DistilError

COLUMNS = [  # (key, header, format)
    ("accuracy", "accuracy", "{:.2%}"),
    ("perplexity", "perplexity", "{:.2f}"),  # language models
    ("token_accuracy", "token accuracy", "{:.2%}"),
    ("agreement", "agreement", "{:.2%}"),
    ("kl", "KL to teacher", "{:.4f}"),
    ("mse", "MSE", "{:.4f}"),
    ("teacher_mse", "MSE to teacher", "{:.4f}"),
    ("ece", "ECE", "{:.3f}"),
    ("params", "params", "{:,}"),
    ("size_bytes", "size", None),
    ("latency_ms", "latency b1 (ms)", "{:.3f}"),
    ("latency_ms_b64", "latency b64 (ms/sample)", "{:.4f}"),
]


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def format_cell(key: str, value: Any, fmt: str | None) -> str:
    if value is None:
        return "-"
    return human_bytes(value) if key == "size_bytes" else fmt.format(value)


def table_rows(models: dict[str, dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Header and rows, keeping only columns some model has."""
    cols = [c for c in COLUMNS if any(c[0] in m for m in models.values())]
    header = ["model"] + [c[1] for c in cols]
    rows = [[name] + [format_cell(k, m.get(k), f) + _spread(m.get(f"{k}_spread")) for k, _, f in cols]
            for name, m in models.items()]
    return header, rows


NOISY = 0.25  # an interquartile range over a quarter of the median: the machine was busy


def _spread(spread: float | None) -> str:
    """' ±8%' after a latency (its repeats' interquartile range / median), ' ±40% noisy' when large."""
    if spread is None:
        return ""
    return f" ±{spread:.0%}" + (" noisy" if spread > NOISY else "")


EXPORT_COLUMNS = [  # agreement here is with the PyTorch student, not the teacher
    ("size_bytes", "size", None),
    ("accuracy", "accuracy", "{:.2%}"),
    ("token_accuracy", "token accuracy", "{:.2%}"),  # language models
    ("perplexity", "perplexity", "{:.2f}"),
    ("agreement", "agreement with PyTorch", "{:.2%}"),
    ("latency_ms", "latency b1 (ms)", "{:.3f}"),
    ("latency_ms_b64", "latency b64 (ms/sample)", "{:.4f}"),
]
EXPORT_ROWS = {"pytorch": "PyTorch", "onnx": "student.onnx", "onnx_int8": "student.int8.onnx (dynamic)",
               "onnx_int8_static": "student.int8-static.onnx (static)"}
Section = tuple[str, list[str], list[list[str]]]  # title, header, rows


def _read(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DistilError(f"{path} is unreadable ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None


def export_section(report: dict[str, Any], where: str) -> Section:
    rows = {EXPORT_ROWS[k]: report[k] for k in EXPORT_ROWS if k in report}
    cols = [c for c in EXPORT_COLUMNS if any(c[0] in m for m in rows.values())]
    title = f"Export{where}: onnxruntime on the test split"
    calibration = report.get("calibration")
    if calibration:
        title += f" (static int8 calibrated on {calibration['samples']} training samples, {calibration['method']})"
    header = ["file"] + [h for _, h, _ in cols]
    return title, header, [[n] + [format_cell(k, m.get(k), f) for k, _, f in cols] for n, m in rows.items()]


def _cascade_section(report: dict[str, Any], where: str) -> Section:
    rows = []
    for split in ("validation", "test"):
        r = report[split]
        rows.append([split, f"{r['teacher_share']:.1%}"] + [f"{r[k]:.2%}" for k in ("accuracy", "student_accuracy", "teacher_accuracy")])
    latency = report["latency"]
    rows[0] += ["", ""]
    rows[1] += [f"{latency['measured_ms']:.3f}", f"{latency['expected_ms']:.3f}"]
    title = (f"Cascade{where}: target {report['target_accuracy']:.2%}, "
             f"teacher when the student's confidence < {report['threshold']:.4f}")
    header = ["split", "sent to teacher", "accuracy", "student alone", "teacher alone", "latency (ms, measured)",
              "latency (ms, expected)"]
    return title, header, rows


def _run_section(run_dir: Path) -> Section | None:
    """What was run: the folder, when its results were written, and the recipe's main settings."""
    recipe_path = run_dir / "recipe.yaml"
    if not recipe_path.is_file():
        return None
    from distil.yaml_reader import read_yaml_file

    recipe = read_yaml_file(recipe_path)
    written = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime((run_dir / "metrics.json").stat().st_mtime))
    rows = [["run", run_dir.resolve().name], ["results written", written]]

    def model(cfg: Any) -> str:
        return f"{cfg.get('model')} {json.dumps(cfg.get('params') or {})}" if isinstance(cfg, dict) else str(cfg)

    teachers = recipe.get("teacher")
    rows.append(["data", f"{recipe.get('data', {}).get('name')} {json.dumps(recipe.get('data', {}).get('params') or {})}"])
    if teachers:
        rows.append(["teacher", "; ".join(model(t) for t in (teachers if isinstance(teachers, list) else [teachers]))])
    rows.append(["student", model(recipe.get("student"))])
    rows.append(["losses", "; ".join(f"{l.get('name')} x {l.get('weight', 1.0)}" for l in recipe.get("losses", []))])
    opt = recipe.get("optimizer", {})
    rows.append(["optimizer", f"{opt.get('name')} lr {opt.get('lr')}, weight decay {opt.get('weight_decay')}"])
    rows += [[key, str(recipe[key])] for key in ("epochs", "seed") if key in recipe]
    return "Run", ["setting", "value"], rows


EPOCH_COLUMNS = ("train/loss", "val/accuracy", "val/agreement", "val/kl", "val/mse", "val/nll", "lr")


def _epochs_section(curves: dict[str, list[dict[str, Any]]]) -> Section | None:
    """The distillation's log, epoch by epoch (validation split: the test split is used once, at the end)."""
    log = curves.get("distilled")
    if not log:
        return None
    cols = [c for c in EPOCH_COLUMNS if any(c in r for r in log)]
    rows = [[str(r["epoch"])] + [f"{r[c]:.4g}" if isinstance(r.get(c), float) else "-" for c in cols] for r in log]
    return "Distillation per epoch (validation split)", ["epoch", *cols], rows


def sections(run_dir: Path, models: dict[str, Any]) -> list[Section]:
    """Tables from export.json and cascade.json in the run folder or its model folders."""
    out = []
    for folder in [run_dir] + [run_dir / name for name in models if (run_dir / name).is_dir()]:
        where = "" if folder == run_dir else f" ({folder.name})"
        if (folder / "export" / "export.json").is_file():
            out.append(export_section(_read(folder / "export" / "export.json"), where))
        if (folder / "cascade.json").is_file():
            out.append(_cascade_section(_read(folder / "cascade.json"), where))
    return out


def load_run(run_dir: Path) -> tuple[dict[str, dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    run_dir = Path(run_dir)
    path = run_dir / "metrics.json"
    if not path.is_file():
        raise DistilError(f"no metrics.json in {run_dir}: is it a finished distil run or demo folder?")
    models = json.loads(path.read_text())
    curves = {}
    for name in models:
        for log in (run_dir / name / "metrics.jsonl", run_dir / "metrics.jsonl" if name == "distilled" else None):
            if log is not None and log.is_file():
                curves[name] = [json.loads(l) for l in log.read_text().splitlines() if l]
                break
    return models, curves


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def size_scale(sizes: Sequence[float]) -> str:
    """A log axis only when the sizes span more than a decade (within one, its labels pile up)."""
    return "log" if sizes and max(sizes) > 10 * min(sizes) else "linear"


def loss_parts(record: dict[str, Any]) -> list[str]:
    """The per-term loss entries of a log line (`train/<term>`), not the total or the throughput."""
    return [k for k in record if k.startswith("train/") and k not in ("train/loss", "train/samples_per_s")]


def plots(models: dict[str, dict[str, Any]], curves: dict[str, list[dict[str, Any]]]) -> dict[str, str]:
    """Base64 PNGs: learning curves (validation metric and training loss), the distillation's loss
    parts, and accuracy vs size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = {}
    metric = "val/accuracy" if any("val/accuracy" in r for c in curves.values() for r in c) else "val/mse"
    if curves:
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6))
        for name, recs in curves.items():
            epochs = [r["epoch"] for r in recs]
            a1.plot(epochs, [r.get(metric) for r in recs], label=name)
            a2.plot(epochs, [r.get("train/loss") for r in recs], label=name)
        a1.set(xlabel="epoch", ylabel=metric, title="validation")
        a2.set(xlabel="epoch", ylabel="train loss", title="training loss", yscale="log")
        a1.legend(), a2.legend()
        out["Learning curves"] = _png(fig)
        plt.close(fig)
    parts = loss_parts(curves["distilled"][0]) if curves.get("distilled") else []
    if len(parts) > 1:  # one term is already the training loss
        fig, ax = plt.subplots(figsize=(5, 3.6))
        recs = curves["distilled"]
        for part in parts:
            ax.plot([r["epoch"] for r in recs], [r.get(part) for r in recs], label=part.removeprefix("train/"))
        ax.set(xlabel="epoch", ylabel="weighted part of the loss", title="distillation loss by term", yscale="log")
        ax.legend()
        out["Loss parts"] = _png(fig)
        plt.close(fig)
    key = "accuracy" if any("accuracy" in m for m in models.values()) else "mse"
    points = {n: m for n, m in models.items() if key in m and "size_bytes" in m}
    if points:
        fig, ax = plt.subplots(figsize=(5, 3.6))
        for name, m in points.items():
            ax.scatter(m["size_bytes"] / 1024, m[key], s=60)
            ax.annotate(name, (m["size_bytes"] / 1024, m[key]), textcoords="offset points", xytext=(6, 4))
        scale = size_scale([m["size_bytes"] / 1024 for m in points.values()])
        ax.set(xscale=scale, xlabel=f"size on disk (KB{', log' if scale == 'log' else ''})", ylabel=f"test {key}",
               title=f"{key} against size")
        out[f"{key.capitalize()} against size"] = _png(fig)
        plt.close(fig)
    return out


def md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def markdown(models: dict[str, dict[str, Any]], title: str, notes: str = "", extra: Sequence[Section] = ()) -> str:
    lines = [f"# {title}", "", notes, "", *md_table(*table_rows(models))]
    for heading, header, rows in extra:
        lines += ["", f"## {heading}", "", *md_table(header, rows)]
    return "\n".join(lines).replace("\n\n\n", "\n\n") + "\n"


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    trs = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{th}</tr>{trs}</table>"


def html_page(models: dict[str, dict[str, Any]], images: dict[str, str], title: str, notes: str = "",
              extra: Sequence[Section] = ()) -> str:
    tables = _html_table(*table_rows(models)) + "".join(
        f"<h2>{html.escape(heading)}</h2>{_html_table(header, rows)}" for heading, header, rows in extra)
    figs = "".join(f'<h2>{html.escape(t)}</h2><img alt="{html.escape(t)}" src="data:image/png;base64,{b}">' for t, b in images.items())
    style = (
        "body{font-family:system-ui,sans-serif;max-width:960px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}"
        "td:first-child,th:first-child{text-align:left}img{max-width:100%}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1><p>{html.escape(notes)}</p>"
        f"{tables}{figs}</body></html>"
    )


def write_report(run_dir: Path, title: str = "distil report", notes: str = "") -> tuple[Path, Path]:
    """Write `report.md` and `report.html` into `run_dir`; returns their paths."""
    run_dir = Path(run_dir)
    models, curves = load_run(run_dir)
    md, page = run_dir / "report.md", run_dir / "report.html"
    extra = [s for s in (_run_section(run_dir), _epochs_section(curves)) if s is not None] + sections(run_dir, models)
    images, text = plots(models, curves), markdown(models, title, notes, extra)
    grid = run_dir / "synthetic" / "grid.png"
    if grid.is_file():  # a data-free run: what the student was trained on
        images["Synthetic training images (data-free)"] = base64.b64encode(grid.read_bytes()).decode()
        text += "\n## Synthetic training images (data-free)\n\n![synthetic training images](synthetic/grid.png)\n"
    atomic_write_text(md, text)
    atomic_write_text(page, html_page(models, images, title, notes, extra))
    return md, page
