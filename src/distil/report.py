"""Reports: a Markdown table and a self-contained HTML page with plots, from a run folder.

A run folder holds `metrics.json` (`{"teacher": {...}, "baseline": {...}, "distilled": {...}}`,
any subset) and learning curves in `<name>/metrics.jsonl` (or `metrics.jsonl` for the distilled
student of a plain `distil run`).
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

from distil.checkpoint import atomic_write_text
from distil.errors import DistilError

COLUMNS = [  # (key, header, format)
    ("accuracy", "accuracy", "{:.2%}"),
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
    rows = [[name] + [format_cell(k, m.get(k), f) for k, _, f in cols] for name, m in models.items()]
    return header, rows


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


def plots(models: dict[str, dict[str, Any]], curves: dict[str, list[dict[str, Any]]]) -> dict[str, str]:
    """Base64 PNGs: learning curves (validation metric and training loss) and accuracy vs size."""
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
    key = "accuracy" if any("accuracy" in m for m in models.values()) else "mse"
    points = {n: m for n, m in models.items() if key in m and "size_bytes" in m}
    if points:
        fig, ax = plt.subplots(figsize=(5, 3.6))
        for name, m in points.items():
            ax.scatter(m["size_bytes"] / 1024, m[key], s=60)
            ax.annotate(name, (m["size_bytes"] / 1024, m[key]), textcoords="offset points", xytext=(6, 4))
        ax.set(xscale="log", xlabel="size on disk (KB, log)", ylabel=f"test {key}", title=f"{key} against size")
        out[f"{key.capitalize()} against size"] = _png(fig)
        plt.close(fig)
    return out


def markdown(models: dict[str, dict[str, Any]], title: str, notes: str = "") -> str:
    header, rows = table_rows(models)
    lines = [f"# {title}", "", notes, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines).replace("\n\n\n", "\n\n") + "\n"


def html_page(models: dict[str, dict[str, Any]], images: dict[str, str], title: str, notes: str = "") -> str:
    header, rows = table_rows(models)
    th = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    trs = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    figs = "".join(f'<h2>{html.escape(t)}</h2><img alt="{html.escape(t)}" src="data:image/png;base64,{b}">' for t, b in images.items())
    style = (
        "body{font-family:system-ui,sans-serif;max-width:960px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}"
        "td:first-child,th:first-child{text-align:left}img{max-width:100%}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1><p>{html.escape(notes)}</p>"
        f"<table><tr>{th}</tr>{trs}</table>{figs}</body></html>"
    )


def write_report(run_dir: Path, title: str = "distil report", notes: str = "") -> tuple[Path, Path]:
    """Write `report.md` and `report.html` into `run_dir`; returns their paths."""
    run_dir = Path(run_dir)
    models, curves = load_run(run_dir)
    md, page = run_dir / "report.md", run_dir / "report.html"
    atomic_write_text(md, markdown(models, title, notes))
    atomic_write_text(page, html_page(models, plots(models, curves), title, notes))
    return md, page
