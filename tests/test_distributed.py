"""Data-parallel training: the communicators, and K ranks against one process.

Runs real MPI jobs (``mpiexec -n 2`` and ``-n 3``, from the ``mpi`` extra's mpich
wheel) of the programs in tests/mpi_worker.py; the command line under mpiexec is
tests/test_distributed_cli.py. Skipped, saying why, without mpi4py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import mpi_worker as worker  # noqa: E402
from mpi_launch import ROOT, env, mpirun, read_json  # noqa: E402

# --- the communicator -----------------------------------------------------------

def test_mpi_collectives_between_two_ranks(tmp_path):
    out = tmp_path / "out.json"
    proc = mpirun(2, "collectives", out)
    assert proc.returncode == 0, proc.stderr
    r = read_json(out)
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
    r = read_json(out)
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
    pids = read_json(Path(str(out) + ".pids"))["pids"]
    text = proc.stdout + proc.stderr
    assert f"PID {pids[1]} " in text and "EXIT CODE: 9" in text, text


def test_several_ranks_without_mpi4py_is_one_clear_error():
    code = ("import sys; sys.modules['mpi4py'] = None\n"
            "from nnx.distributed import connect\n"
            "from nnx.errors import MissingExtra\n"
            "try:\n    connect('auto', 'cpu')\n"
            "except MissingExtra as exc:\n    print(exc)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env=env(PMI_SIZE="2", PMI_RANK="0"))
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
    r = read_json(out)
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
    r = read_json(out)
    if r.get("error") == "BackendUnavailable" and "NCCL is not available" in r["message"]:
        pytest.skip(r["message"])
    assert r.get("error") is None, r
    assert r["sum"] == [sum(range(1, ranks + 1))] * 6 and r["broadcast"] == [0.0, 1.0, 2.0]
    assert r["device"] == "cuda:0" and r["describe"].startswith("NCCL ")
    # more ranks than GPUs on the host: one clear error, before any NCCL set-up
    proc = mpirun(gpus + 1, "gpu_engine", out)
    r = read_json(out)
    assert r["error"] == "DistributedError", r
    assert r["message"].startswith(f"{gpus + 1} ranks run on this host but it has {gpus} GPU")


@pytest.mark.parametrize("rank", ["0", "1"])
def test_the_command_under_mpiexec_without_mpi4py_says_it_once(tmp_path, rank):
    code = ("import sys; sys.modules['mpi4py'] = None\n"
            "from nnx.cli import main\n"
            f"sys.exit(main(['--dataset', 'xor', '--epochs', '1', '--out', {str(tmp_path)!r}]))\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env=env(PMI_SIZE="2", PMI_RANK=rank))
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


def _saved_arrays(ranks: int, case: str, out, *args) -> dict:
    """Run the worker's ``case`` on ``ranks`` processes (it must succeed) and read the
    arrays it saved to ``out``."""
    import numpy as np

    proc = mpirun(ranks, case, out, *args)
    assert proc.returncode == 0, proc.stderr
    with np.load(out) as z:
        return dict(z)


def _largest_difference(weights, saved, name) -> float:
    return max(float(abs(v - saved[f"{name}/{k}"]).max()) for k, v in weights.items())


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    return _saved_arrays(2, "train_cases", tmp_path_factory.mktemp("k2") / "weights.npz", *CASES)


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


def test_batchnorm_keeps_local_statistics_unless_synchronised(tmp_path):
    saved = _saved_arrays(2, "train_cases", tmp_path / "local.npz", "sgdm:float64:0:bn:local")
    name = "sgdm-float64-d0-bn-local"
    assert bool(saved[f"{name}/same_on_every_rank"])  # running statistics: rank 0's
    synced = reference("sgdm:float64:0:bn").model.get_weights()
    assert _largest_difference(synced, saved, name) > 1e-6  # each rank normalised its rows


def test_the_equality_test_catches_planted_mistakes(tmp_path):
    saved = _saved_arrays(2, "controls", tmp_path / "controls.npz")
    good = reference("sgdm:float64:0").model.get_weights()
    # rank 1 seeded differently still trains rank 0's model: the broadcast
    assert _largest_difference(good, saved, "seeded_per_rank") <= 1e-12
    for mistake in ("no_broadcast", "mean_of_means", "no_average"):
        assert _largest_difference(good, saved, mistake) > 1e-4, mistake


def test_three_ranks_with_shares_of_four_four_and_three(tmp_path):
    saved = _saved_arrays(3, "train_cases", tmp_path / "k3.npz", "adam:float64:0")
    one = reference("adam:float64:0", ranks=3)
    assert _largest_difference(one.model.get_weights(), saved, "adam-float64-d0") <= 1e-12


def test_resume_under_mpiexec_is_bitwise_and_needs_the_same_count(tmp_path):
    import nnx

    out, ckpt = tmp_path / "resume.json", tmp_path / "checkpoint.npz"
    proc = mpirun(2, "resume", out, ckpt)
    assert proc.returncode == 0, proc.stderr
    r = read_json(out)
    # rank 1 alone asked to stop after step 9: both ranks stopped after the same step
    assert r["stopped"] == [[11, 4], [11, 4]]
    assert r["bitwise"] is True and r["max_diff"] == 0.0 and r["logs_equal"] is True
    proc = mpirun(3, "resume_other_count", out, ckpt)
    assert proc.returncode == 0, proc.stderr
    assert read_json(out)["error"].startswith(f"{ckpt} was written by a run on 2 rank(s), this one "
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
        r = read_json(out)
        assert r["rank"] == 1 and r["after"] < 5
        # rank 0 was at most one step further when it heard
        assert r["error"] in [f"rank 1 of 2 stopped at step {s} (epoch 3): ValueError: a fault "
                              "planted at step 16" for s in (16,)], r["error"]
        assert "ValueError: a fault planted at step 16" in proc.stderr  # rank 1's own report
    else:
        assert "EXIT CODE: 9" in proc.stdout + proc.stderr
    state = nnx.load_checkpoint(ckpt)  # the last good checkpoint: after epoch 2
    assert state["meta"]["epoch"] == 2 and state["meta"]["world_size"] == 2

