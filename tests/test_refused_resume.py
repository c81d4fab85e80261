"""A refused ``--resume`` changes nothing: every check (architecture, optimizer, the data's
fingerprint, batch size inside an epoch, metadata types) runs before ``config.json`` is
rewritten, so the run directory stays byte for byte as it was and can still be resumed.
Training data other than the run's is refused unless ``--force-resume``."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from nnx import cli

QUICK = ["--dataset", "xor", "--hidden", "8", "--no-doctor", "--no-lr-find", "--quiet"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("base") / "run"
    assert cli.main([*QUICK, "--epochs", "2", "--batch-size", "64", "--out", str(out)]) == 0
    return out


def _files(run) -> dict:
    return {p.name: p.read_bytes() for p in run.iterdir()}


def _inside_an_epoch(run) -> None:
    """Make the checkpoint one saved inside an epoch (after its second batch)."""
    with np.load(run / "checkpoint.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(arrays.pop("__meta__").tobytes())
    meta["resume_point"] = {"batch": 2, "seen": 128, "sums": {}}
    np.savez(run / "checkpoint.npz",
             __meta__=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays)


#: (what, flags of the resume, a change to the run first, words of the error)
REFUSED = [
    ("other training data", ["--seed", "7"], None, ["trained on other data", "--force-resume"]),
    ("another dataset of as many features", ["--dataset", "moons"], None,
     ["trained on other data"]),
    ("another optimizer", ["--optimizer", "sgd"], None, ["optimizer state is for 'adam'"]),
    ("another architecture", ["--hidden", "8,8"], None, ["different model"]),
    ("another activation", ["--activation", "tanh"], None, ["different model"]),
    ("another batch size inside an epoch", ["--batch-size", "32"], _inside_an_epoch,
     ["stopped inside an epoch", "same data and batch size"]),
    ("batch normalisation added", ["--batchnorm"], None, ["different model"]),
]


@pytest.mark.parametrize("what, flags, change, words", REFUSED, ids=[r[0] for r in REFUSED])
def test_a_refused_resume_changes_nothing(finished, tmp_path, capsys, what, flags, change,
                                          words):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    if change is not None:
        change(run)
    before = _files(run)
    code = cli.main(["--resume", str(run), "--epochs", "4", "--quiet", *flags])
    err = capsys.readouterr().err
    assert code == 2, err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "internal error" not in err, err
    for word in words:
        assert word in errors[0], (word, errors[0])
    assert _files(run) == before  # config.json too: it is rewritten only after every check
    assert cli.main(["--resume", str(run), "--epochs", "3", "--quiet"]) == 0  # still resumable


def test_force_resume_continues_on_other_data_with_a_warning(finished, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    code = cli.main(["--resume", str(run), "--epochs", "3", "--quiet", "--seed", "7",
                     "--force-resume"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "warning: " in err and "will not match an uninterrupted run" in err
    assert len((run / "metrics.csv").read_text().splitlines()) == 1 + 3
