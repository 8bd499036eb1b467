#!/usr/bin/env bash
# Set up everything the tests need (system packages, a venv with the export and dev extras) and run
# ruff, mypy and pytest. Safe to re-run: each step is skipped when already done.
#   usage: tests/run.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v espeak-ng >/dev/null || ! command -v sox >/dev/null; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq espeak-ng sox >/dev/null
fi

# NeMo unpacks .nemo archives with tarfile's extraction filters: Python >= 3.11.4 (Debian 12's is 3.11.2).
has_filters() { "$1" -c "import tarfile; tarfile.data_filter" 2>/dev/null; }
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    if ! has_filters "$PY"; then
        for candidate in python3.13 python3.12 python3.11; do
            if command -v "$candidate" >/dev/null && has_filters "$candidate"; then PY="$candidate"; break; fi
        done
    fi
    "$PY" -m venv .venv
fi
VPY=.venv/bin/python
if ! has_filters "$VPY"; then
    echo "tests/run.sh: NeMo needs Python >= 3.11.4 (tarfile extraction filters); .venv has $("$VPY" -V 2>&1)." >&2
    echo "Remove .venv and run again with PYTHON=/path/to/python3.11.4-or-newer." >&2
    exit 2
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1
# torch first, pinned: a bare "torch" requirement would pull a multi-GB CUDA build.
"$VPY" -c "import torch" 2>/dev/null || "$VPY" -m pip install -q "torch==2.13.0"
"$VPY" -m pip install -q -e ".[export,dev]"

"$VPY" -m ruff check .
# mypy sees the sources under their installed names through a tree of links.
mkdir -p build/typecheck/parakeet_runtime
for part in engine export decoding; do ln -sfn "../../../$part" "build/typecheck/parakeet_runtime/$part"; done
MYPYPATH=build/typecheck "$VPY" -m mypy -p parakeet_runtime.engine -p parakeet_runtime.export \
    -p parakeet_runtime.decoding
MYPYPATH=build/typecheck "$VPY" -m mypy tests benchmarks examples recipes
"$VPY" -m pytest "$@"
