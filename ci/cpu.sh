#!/usr/bin/env bash
# The CPU job: a fresh virtual environment, the package with its test extras,
# PyTorch (CPU) for the reference tests and the torch backend, then the README's
# test command.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${NNX_CI_VENV:-.venv}"
python3 -m venv "$VENV"
# shellcheck disable=SC1091
source "$VENV/bin/activate"
python -m pip install --quiet --upgrade pip
python -m pip install --quiet -e '.[dev]'
# The torch backend and the PyTorch reference tests need torch; without it they skip.
if ! python -m pip install --quiet 'torch==2.13.0'; then
    echo "note: torch could not be installed; the torch backend and reference tests will skip"
fi
python -c "import backends; print('backends:', ', '.join(backends.available()))"

# the README's test command
python -m pytest -q
