#!/usr/bin/env bash
# The GPU job, for a machine with an NVIDIA GPU and a CUDA 12 driver: the CUDA
# extra (CuPy), the gpu-marked tests (CuPy and, when torch installs, torch CUDA)
# and the GPU benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${NNX_CI_VENV:-.venv-gpu}"
TORCH_SPEC="${NNX_TORCH_SPEC:-torch}"

python3 -m venv "$VENV"
# shellcheck disable=SC1091
source "$VENV/bin/activate"
python -m pip install --quiet -e '.[dev,cuda12]'
if ! python -m pip install --quiet "$TORCH_SPEC"; then
    echo "note: $TORCH_SPEC could not be installed; the torch:cuda tests will be skipped"
fi
nvidia-smi
# fails the job, with the reason, when CuPy sees no GPU: a GPU job must not pass by skipping
python -c "from nnx import backends; print(backends.get('cuda').describe())"
python -c "from nnx import backends; print('backends:', ', '.join(backends.available()))"

python -m pytest -m gpu -q
python scripts/bench.py --device cuda --quick
