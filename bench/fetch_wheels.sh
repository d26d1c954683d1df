#!/usr/bin/env bash
# Download, here (where PyPI is reachable), the wheels the offline GPU machine lacks: pydantic and
# rich (distil imports them) plus torchdistill and liger-kernel (comparison rows), for CPython 3.12
# on x86-64 Linux. About 5.4 MB into bench/wheels/ (gitignored): pass carry=["bench/wheels"] to the
# remote run so bench/run_all_gpu.sh can unpack them there (bench/install_deps.py).
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-../.venv/bin/python}
TARGET=(--dest wheels --only-binary=:all: --python-version 3.12 --implementation cp
        --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64)
"$PY" -m pip download --quiet "${TARGET[@]}" "pydantic==2.14.3" "rich==15.0.0"
"$PY" -m pip download --quiet --no-deps "${TARGET[@]}" "torchdistill==1.1.5" "liger-kernel==0.8.5"
ls -l wheels
