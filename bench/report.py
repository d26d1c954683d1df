"""Collect bench/out/*.json into one markdown report (stdout).

Usage: python bench/report.py [bench/out] [--smoke]   (smoke results are left out unless --smoke)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from benchlib import OUT, markdown


def render(data: dict) -> str:
    env = data.get("env", {})
    where = env.get("gpu") or env.get("cpu", "?")
    lines = [f"## {data['scenario']}: {data.get('what', '')}", "",
             f"{env.get('date', '?')}; {where}; torch {env.get('torch', '?')}, CUDA {env.get('cuda', '-')}"
             + ("" if data.get("complete") else "; **incomplete (stopped early)**"), "",
             markdown(data["columns"], data["rows"]), ""]
    extra = data.get("cache")
    if extra:
        lines += [f"cache: {json.dumps(extra)}", ""]
    lines += [f"- {n}" for n in data.get("notes", [])]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    smoke = "--smoke" in argv
    folder = Path(next((a for a in argv if not a.startswith("--")), OUT))
    files = sorted(f for f in folder.glob("*.json") if smoke or not f.stem.endswith("_smoke"))
    if not files:
        print(f"no results in {folder}", file=sys.stderr)
        return 1
    print("# distil benchmark results\n")
    for f in files:
        try:
            print(render(json.loads(f.read_text())))
        except (json.JSONDecodeError, KeyError) as e:
            print(f"## {f.name}: unreadable ({e})\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
