"""Unpack the wheels of bench/wheels into a folder for PYTHONPATH: no pip, no index, no internet.

The GPU image has torch, accelerate and transformers but not pydantic or rich, which distil
imports, nor torchdistill / liger-kernel for their comparison rows. A wheel is a zip archive whose
top level is exactly what site-packages would hold, so extracting it is installing it (these
wheels have no compiled entry points or data scripts that matter here).

Usage: python bench/install_deps.py bench/wheels /tmp/distil-bench-deps
"""

import sys
import zipfile
from pathlib import Path


def main(wheels: str, target: str) -> int:
    found = sorted(Path(wheels).glob("*.whl"))
    if not found:
        print(f"install_deps: no wheels in {wheels} (build them with: bash bench/fetch_wheels.sh)", file=sys.stderr)
        return 1
    dest = Path(target)
    dest.mkdir(parents=True, exist_ok=True)
    for wheel in found:
        if not fits_this_python(wheel.name):
            print(f"install_deps: skipped {wheel.name} (built for another Python)")
            continue
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(dest)
        print(f"install_deps: {wheel.name}")
    return 0


def fits_this_python(filename: str) -> bool:
    """Pure-Python wheels fit any Python 3; binary ones only the CPython version they were built for."""
    python_tags = filename[: -len(".whl")].split("-")[-3].split(".")  # name-version[-build]-python-abi-platform
    here = f"cp{sys.version_info.major}{sys.version_info.minor}"
    return any(tag == here or tag.startswith("py3") for tag in python_tags)


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]) if len(sys.argv) == 3 else (print(__doc__), 2)[1])
