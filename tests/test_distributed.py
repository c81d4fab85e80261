"""Data-parallel training: the communicators, and K ranks against one process.

Runs real MPI jobs (``mpiexec -n 2``, from the ``mpi`` extra's mpich wheel)
of the programs in tests/mpi_worker.py. Skipped, saying why, without mpi4py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WORKER = ROOT / "tests" / "mpi_worker.py"


def _mpiexec() -> str:
    pytest.importorskip("mpi4py", reason="the mpi extra is not installed "
                        "(pip install 'nnx-trainer[mpi]')")
    here = Path(sys.executable).parent / "mpiexec"
    found = str(here) if here.exists() else shutil.which("mpiexec")
    if not found:
        pytest.skip("mpi4py is installed but no mpiexec was found")
    return found


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "OMPI_", "PMIX_"))}
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONUNBUFFERED="1", **extra)
    return env


def mpirun(n: int, *args, timeout: float = 90, **env) -> subprocess.CompletedProcess:
    """``mpiexec -n n python tests/mpi_worker.py args...`` in the repository."""
    command = [_mpiexec(), "-n", str(n), sys.executable, str(WORKER), *map(str, args)]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env=_env(**env))


def _json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


# --- the communicator -----------------------------------------------------------

def test_mpi_collectives_between_two_ranks(tmp_path):
    out = tmp_path / "out.json"
    proc = mpirun(2, "collectives", out)
    assert proc.returncode == 0, proc.stderr
    r = _json(out)
    assert r["size"] == 2 and r["in_place"] is True
    assert r["rank_sum"] == [3.0] * 5  # 1 + 2 on each element
    assert r["broadcast"] == [0.0, 1.0, 2.0, 3.0]
    assert r["min"] == [3] and r["max"] == [4]
    assert r["object"] == {"from": 0}
    assert r["gathered"] == [["rank", 0], ["rank", 1]]
    assert [m["rank"] for m in r["members"]] == [0, 1]
    assert len({m["pid"] for m in r["members"]}) == 2
    assert r["describe"].startswith("MPI (")
    if "torch_sum" in r:
        assert r["torch_sum"] == [0.0, 3.0, 6.0]


def test_a_rank_that_raises_stops_the_others_at_once_naming_it(tmp_path):
    out = tmp_path / "out.json"
    start = time.monotonic()
    proc = mpirun(2, "fault", out, "raise", 60)
    took = time.monotonic() - start
    assert proc.returncode == 2, proc.stderr
    r = _json(out)
    assert r["rank"] == 1
    assert r["error"] == "rank 1 of 2 stopped: ValueError: rank 1 fails on purpose"
    assert r["after"] < 5 and took < 30  # not the 60 s timeout
    assert "rank 1: root heard True" in proc.stdout


def test_a_stopped_rank_times_out_and_is_named(tmp_path):
    out = tmp_path / "out.json"
    start = time.monotonic()
    proc = mpirun(2, "fault", out, "stop", 2)
    took = time.monotonic() - start
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert lines == [
        "error: rank 1 of 2 did not reach the all-reduce within 2 s (stuck, stopped or dead); "
        "stopping all 2 ranks. Look at that rank's output; raise the limit with timeout= if a "
        "step can take that long"], proc.stderr
    assert took < 2 + 1 + 15  # the timeout, the grace for the others' notices, start-up


def test_a_killed_rank_ends_the_job_naming_its_pid(tmp_path):
    out = tmp_path / "out.json"
    start = time.monotonic()
    proc = mpirun(2, "fault", out, "kill", 60)
    took = time.monotonic() - start
    assert proc.returncode != 0 and took < 30  # mpiexec cleans up: no timeout needed
    pids = _json(Path(str(out) + ".pids"))["pids"]
    text = proc.stdout + proc.stderr
    assert f"PID {pids[1]} " in text and "EXIT CODE: 9" in text, text


def test_several_ranks_without_mpi4py_is_one_clear_error():
    code = ("import sys; sys.modules['mpi4py'] = None\n"
            "from nnx.distributed import connect\n"
            "from nnx.errors import MissingExtra\n"
            "try:\n    connect('auto', 'cpu')\n"
            "except MissingExtra as exc:\n    print(exc)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env=_env(PMI_SIZE="2", PMI_RANK="0"))
    assert proc.returncode == 0, proc.stderr
    assert "training on more than one process needs the mpi4py package" in proc.stdout
    assert "pip install 'nnx-trainer[mpi]'" in proc.stdout


def test_nccl_without_cupy_says_what_to_install(tmp_path):
    import importlib.util

    if importlib.util.find_spec("cupy") is not None:
        pytest.skip("CuPy is installed: the GPU tests cover NCCL")
    out = tmp_path / "out.json"
    proc = mpirun(2, "gpu_engine", out)
    assert proc.returncode == 0, proc.stderr
    r = _json(out)
    assert r["error"] == "BackendUnavailable"
    assert r["message"].startswith("NCCL between GPUs goes through CuPy, which is not installed")


@pytest.mark.gpu
def test_nccl_between_the_gpus_of_this_host(tmp_path):
    pytest.importorskip("cupy", reason="NCCL goes through CuPy")
    from nnx.distributed.nccl import gpu_count

    gpus = gpu_count()
    if gpus == 0:
        pytest.skip("CuPy sees no GPU")
    out = tmp_path / "out.json"
    ranks = min(gpus, 2)
    proc = mpirun(ranks, "gpu_engine", out)
    assert proc.returncode == 0, proc.stderr
    r = _json(out)
    if r.get("error") == "BackendUnavailable" and "NCCL is not available" in r["message"]:
        pytest.skip(r["message"])
    assert r.get("error") is None, r
    assert r["sum"] == [sum(range(1, ranks + 1))] * 6 and r["broadcast"] == [0.0, 1.0, 2.0]
    assert r["device"] == "cuda:0" and r["describe"].startswith("NCCL ")
    # more ranks than GPUs on the host: one clear error, before any NCCL set-up
    proc = mpirun(gpus + 1, "gpu_engine", out)
    r = _json(out)
    assert r["error"] == "DistributedError", r
    assert r["message"].startswith(f"{gpus + 1} ranks run on this host but it has {gpus} GPU")


@pytest.mark.parametrize("rank", ["0", "1"])
def test_the_command_under_mpiexec_without_mpi4py_says_it_once(tmp_path, rank):
    code = ("import sys; sys.modules['mpi4py'] = None\n"
            "from nnx.cli import main\n"
            f"sys.exit(main(['--dataset', 'xor', '--epochs', '1', '--out', {str(tmp_path)!r}]))\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env=_env(PMI_SIZE="2", PMI_RANK=rank))
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    if rank == "1":  # rank 0 speaks for every rank
        assert lines == [], proc.stderr
    else:
        assert len(lines) == 1 and lines[0].startswith(
            "error: training on more than one process needs the mpi4py package, which cannot "
            "be imported (") and lines[0].endswith("install it with pip install "
                                                   "'nnx-trainer[mpi]'"), proc.stderr
    assert not any(tmp_path.iterdir())


def test_one_process_needs_no_mpi():
    from nnx.distributed import SingleProcess, connect, launched_size

    assert launched_size() == 1 or os.environ.get("PMI_SIZE")
    comm = connect("auto", "cpu")
    assert isinstance(comm, SingleProcess) and (comm.rank, comm.size) == (0, 1)
    assert isinstance(connect("off", "cuda"), SingleProcess)


# --- K ranks give the parameters of one process ----------------------------------

sys.path.insert(0, str(ROOT / "tests"))
import mpi_worker as worker  # noqa: E402

#: optimizer:dtype:dropout[:bn] — every one with an uneven last batch (203 = 6 x 32 + 11)
CASES = ["sgdm:float32:0", "sgdm:float64:0", "adam:float32:0", "adam:float64:0",
         "sgdm:float32:0.3", "adam:float64:0.3", "sgdm:float64:0:bn", "adam:float64:0:torch"]
TOLERANCE = {"float32": 1e-6, "float64": 1e-12}


class RankMasks:
    """Build a Dropout whose mask for row ``i`` of a batch comes from the stream that rank
    ``i % ranks`` uses in a data-parallel run (rank ``r`` holds rows ``r, r + K, ...``):
    one process then draws exactly the masks of the K ranks."""

    def __new__(cls, p, ranks, seed, index):
        import nnx
        from nnx.distributed.parallel import rank_seed

        class Interleaved(nnx.Dropout):
            builtin = True  # its masks are random: no finite-difference check

            def init(self, backend, rng, dtype="float32"):
                super().init(backend, rng, dtype)
                self.streams = [backend.device_rng(rank_seed(seed, r, index))
                                for r in range(ranks)]

            def forward(self, x, *, train=False):
                if not train:
                    return x, lambda dy: dy
                xp, keep = self.backend.xp, 1.0 - self.p
                u = xp.zeros(x.shape, dtype=x.dtype)
                for r, stream in enumerate(self.streams):
                    u[r::ranks, ...] = stream.uniform(u[r::ranks, ...].shape, x.dtype)
                mask = xp.astype(u < keep, x.dtype) * (1.0 / keep)
                return x * mask, lambda dy: dy * mask

        return Interleaved(p)


def reference(case, ranks=2):
    """The single-process run of ``case`` (with the K ranks' dropout masks)."""
    import nnx

    c = worker.parse_case(case)
    if c["device"] == "torch":
        pytest.importorskip("torch")
    model = worker.small_model(float(c["dropout"]), c["batchnorm"])
    if float(c["dropout"]):
        model = nnx.Sequential([RankMasks(la.p, ranks, 0, i) if isinstance(la, nnx.Dropout)
                                else la for i, la in enumerate(model.layers)])
    x, y = worker.problem()
    t = nnx.Trainer(model, "cross_entropy", worker.optimizer(c["opt"]), seed=0,
                    dtype=c["dtype"], device=c["device"])
    t.fit(x, y, epochs=worker.EPOCHS, batch_size=worker.BATCH,
          validation_data=worker.problem(1))
    return t


def _largest_difference(weights, saved, name) -> float:
    return max(float(abs(v - saved[f"{name}/{k}"]).max()) for k, v in weights.items())


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    import numpy as np

    out = tmp_path_factory.mktemp("k2") / "weights.npz"
    proc = mpirun(2, "train_cases", out, *CASES)
    assert proc.returncode == 0, proc.stderr
    with np.load(out) as z:
        return dict(z)


@pytest.mark.parametrize("case", CASES)
def test_two_ranks_train_the_parameters_of_one_process(two_ranks, case):
    dtype = case.split(":")[1]
    one = reference(case)
    name = worker.case_name(**worker.parse_case(case))
    assert bool(two_ranks[f"{name}/same_on_every_rank"])
    weights = {k: v for k, v in two_ranks.items() if k.startswith(name + "/")
               and "/log/" not in k and not k.endswith("/same_on_every_rank")}
    assert len(weights) == len(one.model.get_weights())
    assert _largest_difference(one.model.get_weights(), two_ranks, name) <= TOLERANCE[dtype]
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        logged = two_ranks[f"{name}/log/{key}"]
        assert abs(logged - one.history.history[key]).max() <= 10 * TOLERANCE[dtype], key


def test_the_equality_test_catches_planted_mistakes(tmp_path):
    import numpy as np

    out = tmp_path / "controls.npz"
    proc = mpirun(2, "controls", out)
    assert proc.returncode == 0, proc.stderr
    with np.load(out) as z:
        saved = dict(z)
    good = reference("sgdm:float64:0").model.get_weights()
    # rank 1 seeded differently still trains rank 0's model: the broadcast
    assert _largest_difference(good, saved, "seeded_per_rank") <= 1e-12
    for mistake in ("no_broadcast", "mean_of_means", "no_average"):
        assert _largest_difference(good, saved, mistake) > 1e-4, mistake


def test_three_ranks_with_shares_of_four_four_and_three(tmp_path):
    import numpy as np

    out = tmp_path / "k3.npz"
    proc = mpirun(3, "train_cases", out, "adam:float64:0")
    assert proc.returncode == 0, proc.stderr
    with np.load(out) as z:
        saved = dict(z)
    one = reference("adam:float64:0", ranks=3)
    assert _largest_difference(one.model.get_weights(), saved, "adam-float64-d0") <= 1e-12


def test_resume_under_mpiexec_is_bitwise_and_needs_the_same_count(tmp_path):
    import nnx

    out, ckpt = tmp_path / "resume.json", tmp_path / "checkpoint.npz"
    proc = mpirun(2, "resume", out, ckpt)
    assert proc.returncode == 0, proc.stderr
    r = _json(out)
    # rank 1 alone asked to stop after step 9: both ranks stopped after the same step
    assert r["stopped"] == [[11, 4], [11, 4]]
    assert r["bitwise"] is True and r["max_diff"] == 0.0 and r["logs_equal"] is True
    proc = mpirun(3, "resume_other_count", out, ckpt)
    assert proc.returncode == 0, proc.stderr
    assert _json(out)["error"].startswith(f"{ckpt} was written by a run on 2 rank(s), this one "
                                          "has 3; resume it with the same count (mpiexec -n 2")
    x, y = worker.problem()
    alone = nnx.Trainer(worker.small_model(0.2), "cross_entropy", worker.optimizer("adam"))
    with pytest.raises(nnx.CheckpointError, match="this one has 1; resume it with the same"):
        alone.fit(x, y, epochs=worker.EPOCHS, batch_size=worker.BATCH, resume=ckpt)


@pytest.mark.parametrize("mode", ["raise", "kill"])
def test_a_failing_rank_stops_training_and_the_last_checkpoint_loads(tmp_path, mode):
    import nnx

    out, ckpt = tmp_path / "out.json", tmp_path / "checkpoint.npz"
    start = time.monotonic()
    proc = mpirun(2, "train_fault", out, ckpt, mode)
    took = time.monotonic() - start
    assert proc.returncode != 0 and took < 30, proc.stderr
    if mode == "raise":
        r = _json(out)
        assert r["rank"] == 1 and r["after"] < 5
        # rank 0 was at most one step further when it heard
        assert r["error"] in [f"rank 1 of 2 stopped at step {s} (epoch 3): ValueError: a fault "
                              "planted at step 16" for s in (16,)], r["error"]
        assert "ValueError: a fault planted at step 16" in proc.stderr  # rank 1's own report
    else:
        assert "EXIT CODE: 9" in proc.stdout + proc.stderr
    state = nnx.load_checkpoint(ckpt)  # the last good checkpoint: after epoch 2
    assert state["meta"]["epoch"] == 2 and state["meta"]["world_size"] == 2


# --- the command line under mpiexec ------------------------------------------------

TRAIN = [sys.executable, str(ROOT / "scripts" / "train.py")]
DIGITS = ["--dataset", "digits", "--device", "cpu"]


def train_cli(n: int, *flags, timeout: float = 120) -> subprocess.CompletedProcess:
    """``mpiexec -n n python scripts/train.py flags...`` (``n = 0``: no mpiexec)."""
    head = [_mpiexec(), "-n", str(n)] if n else []
    return subprocess.run([*head, *TRAIN, *map(str, flags)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env=_env())


def _start(n: int, *flags) -> subprocess.Popen:
    return subprocess.Popen([_mpiexec(), "-n", str(n), *TRAIN, *map(str, flags)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env(), start_new_session=True)


def _rows(path: Path) -> list[list[str]]:
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    return [line.split(",") for line in lines]


def _wait_for_epochs(proc, csv: Path, epochs: int, limit: float = 90) -> None:
    start = time.monotonic()
    while len(_rows(csv)) < epochs + 1:  # the header, then one row per epoch
        assert proc.poll() is None and time.monotonic() - start < limit, proc.stderr.read()
        time.sleep(0.05)


def _pids(first_line: str) -> list[int]:
    import re

    return [int(p) for p in re.findall(r"rank \d+ \S+ \(pid (\d+) on ", first_line)]


def test_mpiexec_train_py_says_so_and_matches_one_process(tmp_path):
    import numpy as np

    two = train_cli(2, *DIGITS, "--epochs", 3, "--out", tmp_path / "k2")
    one = train_cli(0, *DIGITS, "--epochs", 3, "--out", tmp_path / "k1")
    assert two.returncode == 0 and one.returncode == 0, two.stderr + one.stderr
    first = two.stderr.splitlines()[0]
    assert first.startswith("nnx: Dataset('digits'") and " on 2 ranks over MPI (MPICH " in first
    assert len(_pids(first)) == 2 and "rank 0 numpy (pid " in first and "rank 1 numpy" in first
    assert two.stderr.count("done in ") == 1 and "Traceback" not in two.stderr
    k1, k2 = _rows(tmp_path / "k1" / "metrics.csv"), _rows(tmp_path / "k2" / "metrics.csv")
    assert k1[0] == k2[0] and len(k2) == 4
    for col in ("loss", "accuracy", "val_loss", "val_accuracy"):
        i = k1[0].index(col)
        assert all(abs(float(a[i]) - float(b[i])) < 1e-5 for a, b in zip(k1[1:], k2[1:])), col
    with np.load(tmp_path / "k1" / "model.npz") as a, np.load(tmp_path / "k2" / "model.npz") as b:
        assert max(float(abs(a[k] - b[k]).max()) for k in a.files if k != "__meta__") < 1e-5
    import nnx

    assert nnx.load_checkpoint(tmp_path / "k2" / "checkpoint.npz")["meta"]["world_size"] == 2


def test_ranks_that_were_given_other_data_stop_with_one_error(tmp_path):
    out = tmp_path / "run"
    head = [*TRAIN, *DIGITS, "--epochs", "2", "--out", str(out)]
    command = [_mpiexec(), "-n", "1", *head, ":", "-n", "1", *head, "--val-split", "0.2"]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env=_env())
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: rank 1 has other training data than rank 0 (n, x, y differ); "
                      "every rank passes the whole training set (split the same way: the same "
                      "seed for validation_split) and the same batch size, and takes its share "
                      "of each batch itself"], proc.stderr
    assert "Traceback" not in proc.stderr and not (out / "checkpoint.npz").exists()


def test_a_killed_rank_ends_the_run_whose_checkpoint_resumes(tmp_path):
    import nnx

    out = tmp_path / "run"
    proc = _start(2, *DIGITS, "--epochs", 12, "--out", out)
    _wait_for_epochs(proc, out / "metrics.csv", 2)
    start = time.monotonic()
    first = proc.stderr.readline()
    victim = _pids(first)[1]
    os.kill(victim, 9)
    stdout, stderr = proc.communicate(timeout=60)
    took = time.monotonic() - start
    assert proc.returncode != 0 and took < 15, stderr
    assert f"PID {victim} " in stdout + stderr and "EXIT CODE: 9" in stdout + stderr
    # epoch 2's checkpoint is written after its metrics row: the kill may come before it
    assert nnx.load_checkpoint(out / "checkpoint.npz")["meta"]["epoch"] >= 1
    resumed = train_cli(2, "--resume", out)
    assert resumed.returncode == 0, resumed.stderr
    assert [int(r[0]) for r in _rows(out / "metrics.csv")[1:]] == list(range(1, 13))


@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
def test_an_interrupt_under_mpiexec_checkpoints_once_and_resumes_bitwise(tmp_path, signame):
    import signal

    import numpy as np

    whole, out = tmp_path / "whole", tmp_path / "run"
    assert train_cli(2, *DIGITS, "--epochs", 6, "--out", whole).returncode == 0
    proc = _start(2, *DIGITS, "--epochs", 6, "--out", out)
    _wait_for_epochs(proc, out / "metrics.csv", 2)
    os.kill(proc.pid, getattr(signal, signame))  # mpiexec passes it on to every rank
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert stderr.count("checkpoint saved. Resume with:") == 1, stderr
    assert f"mpiexec -n 2 {sys.executable} {ROOT / 'scripts' / 'train.py'} --resume {out}" \
        in stderr
    config = (out / "config.json").read_bytes()
    other = train_cli(3, "--resume", out)
    assert other.returncode == 2 and [line for line in other.stderr.splitlines()
                                      if line.startswith("error:")] == [
        f"error: {out / 'checkpoint.npz'} was written by a run on 2 rank(s), this one has 3; "
        "resume it with the same count (mpiexec -n 2 ...): the batch split, the dropout "
        "streams and the batch statistics depend on the number of ranks"], other.stderr
    assert (out / "config.json").read_bytes() == config
    resumed = train_cli(2, "--resume", out)
    assert resumed.returncode == 0, resumed.stderr
    with np.load(whole / "model.npz") as a, np.load(out / "model.npz") as b:
        assert all(np.array_equal(a[k], b[k]) for k in a.files if k != "__meta__")
