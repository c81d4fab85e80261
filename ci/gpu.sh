#!/usr/bin/env bash
# The GPU job, for a machine with an NVIDIA GPU and CUDA 12 drivers: installs the
# CUDA extra (CuPy), runs the GPU-marked tests and the GPU benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${NNX_CI_VENV:-.venv-gpu}"
python3 -m venv "$VENV"
# shellcheck disable=SC1091
source "$VENV/bin/activate"
python -m pip install --quiet --upgrade pip
python -m pip install --quiet -e '.[dev,cuda12,torch]'
nvidia-smi
python -c "import backends; print(backends.get('cuda').describe())"
python -m pytest -m gpu -q
python scripts/bench.py --device cuda --quick
