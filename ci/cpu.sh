#!/usr/bin/env bash
# The CPU job: a fresh virtual environment, PyTorch (CPU) for the torch backend and the
# PyTorch reference tests, the package with its test extras and every optional extra that
# needs no GPU (MPI, HDF5, ONNX, safetensors, scikit-learn), then the README's test command.
# Needs only Python 3.10+ and pip.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${NNX_CI_VENV:-.venv}"
# torch is pinned: the tests compare against this version (override for another index)
TORCH_SPEC="${NNX_TORCH_SPEC:-torch==2.13.0}"

python3 -m venv "$VENV"
# shellcheck disable=SC1091
source "$VENV/bin/activate"
# torch first, pinned, so that no extra pulls in another version.
# Optional: without torch the torch backend and the reference tests skip, saying why.
if ! python -m pip install --quiet "$TORCH_SPEC"; then
    echo "note: $TORCH_SPEC could not be installed; the torch backend and the PyTorch" \
         "reference tests will be skipped"
fi
# every extra that needs no GPU, so their tests run against the real libraries
python -m pip install --quiet -e '.[dev,mpi,hdf5,onnx,safetensors,sklearn,strict]'
python -c "from nnx import backends; print('backends:', ', '.join(backends.available()))"

# the README's test command
python -m pytest -q
