#!/usr/bin/env bash
# The GPU job, for a machine with an NVIDIA GPU and a CUDA 12 driver: the CUDA
# extra (CuPy), the gpu-marked tests (CuPy and, when torch installs, torch CUDA;
# among them the fused kernels, fast paths and flat buffers against the portable
# path) and the GPU benchmark, in one script that ends within 10 minutes (each part
# has its own limit; a part that runs over fails the job, saying which).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${NNX_CI_VENV:-.venv-gpu}"
TORCH_SPEC="${NNX_TORCH_SPEC:-torch}"
INSTALL_S="${NNX_GPU_INSTALL_S:-120}"  # each install: CuPy and the test extras, torch
TESTS_S="${NNX_GPU_TESTS_S:-240}"      # the gpu-marked tests
BENCH_S="${NNX_GPU_BENCH_S:-120}"      # scripts/bench.py --device cuda --quick

part() {  # part NAME SECONDS COMMAND...: run COMMAND, fail the job if it runs over
    local name=$1 limit=$2 start=$SECONDS
    shift 2
    echo "== $name (at most ${limit} s)"
    if timeout "$limit" "$@"; then
        echo "== $name: $((SECONDS - start)) s"
    else
        local rc=$?
        [ "$rc" -eq 124 ] && echo "error: $name ran over ${limit} s" >&2
        exit "$rc"
    fi
}

[ -d "$VENV" ] || python3 -m venv "$VENV"
# shellcheck disable=SC1091
source "$VENV/bin/activate"
part "install" "$INSTALL_S" python -m pip install --quiet -e '.[dev,cuda12]'
if ! timeout "$INSTALL_S" python -m pip install --quiet "$TORCH_SPEC"; then
    echo "note: $TORCH_SPEC could not be installed; the torch:cuda tests will be skipped"
fi
nvidia-smi
# fails the job, with the reason, when CuPy sees no GPU: a GPU job must not pass by skipping
python -c "from nnx import backends; print(backends.get('cuda').describe())"
python -c "from nnx import backends; print('backends:', ', '.join(backends.available()))"

part "gpu tests" "$TESTS_S" python -m pytest -m gpu -q -p no:cacheprovider --durations=10
part "GPU benchmark" "$BENCH_S" python scripts/bench.py --device cuda --quick \
    --json bench-results/bench-gpu.json
echo "GPU job: ${SECONDS} s in all"
