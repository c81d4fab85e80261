"""A write that fails (a full disk, a read-only file system, a device where a file should be)
is one nnx error naming the file and the reason: the previous file stays whole, no
temporary file stays behind, and the command line prints one line and exits 2.

The full and read-only disks are real small tmpfs mounts (the tests skip where mounting is
not allowed).
"""

from __future__ import annotations

import os
import subprocess

import pytest

import nnx
from nnx import atomic, cli
from nnx.errors import WriteError

QUICK = ["--dataset", "xor", "--epochs", "1", "--hidden", "4", "--no-doctor", "--no-lr-find",
         "--quiet"]


def _mount(path, *options) -> None:
    path.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(options), "tmpfs", str(path)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {r.stderr.strip()}")


@pytest.fixture
def disk(tmp_path):
    """A mount point; ``disk(size)`` mounts a tmpfs of ``size`` there (unmounted after)."""
    point = tmp_path / "disk"
    mounted = []

    def mount(size: str):
        _mount(point, f"size={size}")
        mounted.append(point)
        return point

    yield mount
    for p in mounted:
        subprocess.run(["umount", "-l", str(p)], check=False)


def _temporaries(directory) -> list[str]:
    return [n for n in os.listdir(directory) if ".tmp-" in n]


def test_a_full_disk_while_the_curves_are_drawn_is_one_error_line(disk, capsys):
    out = disk("64k") / "run"
    code = cli.main([*QUICK, "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2, err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "internal error" not in err, err
    # the checkpoint, metrics and model fit in 64 KiB; the 60 KB figure does not
    assert f"cannot write {out / 'curves.png'}: No space left on device" in errors[0], err
    assert "free some disk space" in errors[0]
    assert not _temporaries(out)
    nnx.load(out / "model.npz")  # what was written before is whole


def test_a_full_disk_keeps_the_previous_model_and_names_it(disk):
    path = disk("64k") / "m.npz"
    nnx.save(nnx.mlp([3, 4, 2]).init("cpu", 0), path)
    before = path.read_bytes()
    big = nnx.mlp([100, 400, 2]).init("cpu", 1)  # 160 KB of weights: more than is left
    with pytest.raises(WriteError, match=f"cannot write {path}: No space left on device"):
        nnx.save(big, path)
    assert path.read_bytes() == before and not _temporaries(path.parent)
    with pytest.raises(OSError):  # a WriteError is an OSError too, for callers that catch it
        nnx.save(big, path)


def test_an_append_to_a_full_disk_names_the_file(disk):
    root = disk("8k")
    path = root / "metrics.csv"
    atomic.append_text(path, "epoch,loss\n")
    with pytest.raises(WriteError, match=f"cannot write {path}: No space left on device"):
        atomic.append_text(path, "1,0.5\n" * 5000)


def test_a_read_only_file_system_is_named(tmp_path):
    point = tmp_path / "ro"
    _mount(point, "size=64k")
    try:
        path = point / "m.npz"
        nnx.save(nnx.mlp([3, 4, 2]).init("cpu", 0), path)
        subprocess.run(["mount", "-o", "remount,ro", str(point)], check=True)
        with pytest.raises(WriteError, match=f"cannot write {path}: Read-only file system"):
            nnx.save(nnx.mlp([3, 4, 2]).init("cpu", 1), path)
        with pytest.raises(WriteError, match="Read-only file system"):
            atomic.append_text(point / "metrics.csv", "x\n")
        nnx.load(path)
    finally:
        subprocess.run(["umount", "-l", str(point)], check=False)


def test_a_device_is_never_appended_to():
    with pytest.raises(WriteError, match="cannot write /dev/full: it is not a regular file"):
        atomic.append_text("/dev/full", "x\n")
    with pytest.raises(WriteError, match="not a regular file"):
        atomic.check_own_file("/dev/null")


def test_a_figure_that_fails_to_draw_leaves_no_temporary_file(tmp_path):
    from nnx.plot import save_figure

    fig = nnx.train.History({"epoch": [1, 2], "loss": [1.0, 0.5]}).plot()
    save_figure(fig, tmp_path / "curves.png")
    before = (tmp_path / "curves.png").read_bytes()
    with pytest.raises(ValueError, match="dpi"):  # matplotlib fails after the file was opened
        save_figure(fig, tmp_path / "curves.png", dpi=0)
    assert os.listdir(tmp_path) == ["curves.png"]
    assert (tmp_path / "curves.png").read_bytes() == before and before[:4] == b"\x89PNG"
