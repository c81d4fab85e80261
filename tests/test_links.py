"""No write goes through a link: a link (symbolic or hard) planted in a run directory, at a
file nnx writes or at a temporary name, never makes nnx write a file elsewhere. A run
directory holding links is refused with one error line; the temporary files of atomic
writes are created exclusively under names nobody can predict; metrics are appended only
to regular files of the run; a config file's relative paths stay in its directory through
links too."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import nnx
from nnx import atomic, cli
from nnx.errors import WriteError

QUICK = ["--dataset", "xor", "--hidden", "4", "--no-doctor", "--no-lr-find", "--quiet"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished two-epoch run, copied by the tests that plant links in it."""
    out = tmp_path_factory.mktemp("base") / "run"
    assert cli.main([*QUICK, "--epochs", "2", "--out", str(out)]) == 0
    return out


def _copy(run: Path, to: Path) -> Path:
    import shutil

    shutil.copytree(run, to)
    return to


def _victim(tmp_path: Path) -> Path:
    victim = tmp_path / "elsewhere" / "precious.txt"
    victim.parent.mkdir()
    victim.write_text("keep me\n")
    return victim


def _refused(argv, capsys, words) -> None:
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in err, err
    for word in words:
        assert word in errors[0], (word, errors[0])


@pytest.mark.parametrize("name", ["metrics.csv", "metrics.jsonl", "config.json",
                                  "checkpoint.npz", "curves.png", "summary.json", "model.npz",
                                  ".nnx-lock"])
def test_a_resume_into_a_directory_with_a_symbolic_link_is_refused(finished, tmp_path, capsys,
                                                                   name):
    run = _copy(finished, tmp_path / "run")
    victim = _victim(tmp_path)
    (run / name).unlink(missing_ok=True)
    (run / name).symlink_to(victim)
    _refused(["--resume", str(run), "--epochs", "3", "--quiet"], capsys,
             [str(run / name), "symbolic link"])
    assert victim.read_text() == "keep me\n"
    assert (run / name).is_symlink()  # left as the user planted it


def test_a_hard_link_to_a_file_elsewhere_is_refused(finished, tmp_path, capsys):
    run = _copy(finished, tmp_path / "run")
    victim = _victim(tmp_path)
    (run / "metrics.csv").unlink()
    os.link(victim, run / "metrics.csv")
    _refused(["--resume", str(run), "--epochs", "3", "--quiet"], capsys,
             ["metrics.csv is a hard link"])
    assert victim.read_text() == "keep me\n"


def test_a_new_run_into_a_directory_with_a_link_is_refused(tmp_path, capsys):
    victim = _victim(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    (run / "curves.png").symlink_to(victim)
    _refused([*QUICK, "--epochs", "1", "--out", str(run)], capsys, ["curves.png", "symbolic"])
    assert victim.read_text() == "keep me\n"
    assert sorted(p.name for p in run.iterdir()) == ["curves.png"]  # nothing written


def test_links_at_the_old_predictable_temporary_names_are_never_followed(tmp_path):
    victim = _victim(tmp_path)
    target = tmp_path / "m.npz"
    pid = os.getpid()
    for name in (f".m.npz.tmp-{pid}", f".m.npz.tmp-{pid}.png", "m.npz.tmp",
                 f".m.npz.tmp-{pid}.0"):
        (tmp_path / name).symlink_to(victim)
    nnx.save(nnx.mlp([3, 4, 2]).init("cpu", 0), target)
    assert victim.read_text() == "keep me\n"
    assert target.is_file() and not target.is_symlink()


def test_a_link_at_the_target_is_replaced_not_followed(tmp_path):
    victim = _victim(tmp_path)
    target = tmp_path / "model.npz"
    target.symlink_to(victim)
    nnx.save(nnx.mlp([3, 4, 2]).init("cpu", 0), target)
    assert victim.read_text() == "keep me\n" and not target.is_symlink()
    nnx.load(target)


def test_temporary_files_are_created_exclusively(tmp_path):
    victim = _victim(tmp_path)
    taken = tmp_path / ".x.tmp-1.aaaaaaaa"
    taken.symlink_to(victim)
    assert atomic._create(str(taken), str(tmp_path / "x")) is None  # taken: never opened
    assert victim.read_text() == "keep me\n"
    names = set()
    for _ in range(3):
        atomic.write_bytes(tmp_path / "x", b"data")
        names |= {n for n in os.listdir(tmp_path) if ".tmp-" in n}
    assert names == {taken.name}  # the writes left none of their own


def test_metrics_are_appended_only_to_regular_files_of_their_own(tmp_path):
    victim = _victim(tmp_path)
    link = tmp_path / "metrics.csv"
    link.symlink_to(victim)
    with pytest.raises(WriteError, match="symbolic link"):
        atomic.append_text(link, "1,0.5\n")
    hard = tmp_path / "metrics.jsonl"
    os.link(victim, hard)
    with pytest.raises(WriteError, match="hard link"):
        atomic.append_text(hard, "{}\n")
    assert victim.read_text() == "keep me\n"
    data = nnx.data.xor(n=40, seed=0)
    tr = nnx.Trainer(nnx.mlp([2, 4, 2]), lr=0.01)
    with pytest.raises(WriteError, match="symbolic link"):
        tr.fit(data.x_train, data.y_train, epochs=1, batch_size=8,
               callbacks=[nnx.train.CSVLogger(link, append=True)])
    assert victim.read_text() == "keep me\n"


def test_config_file_paths_may_not_leave_its_directory_through_links(tmp_path, capsys):
    outside = tmp_path / "outside"
    outside.mkdir()
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "link").symlink_to(outside, target_is_directory=True)
    for key in ("out", "data_dir"):
        (conf / "run.toml").write_text(f'{key} = "link/run"\n')
        _refused(["--config", str(conf / "run.toml"), *QUICK, "--epochs", "1"], capsys,
                 ["escapes the config file's directory"])
    assert list(outside.iterdir()) == []


def test_links_planted_at_temporary_names_in_a_run_are_never_followed(finished, tmp_path,
                                                                      capsys):
    """The names an atomic write used to take (``.NAME.tmp-PID``, this process's pid)
    planted as links into a run: the resumed run writes every file and never the link's
    target; the links are not the run's files, so they are left alone."""
    run = _copy(finished, tmp_path / "run")
    victim = _victim(tmp_path)
    pid = os.getpid()
    planted = [run / f".{name}.tmp-{pid}{suffix}"
               for name in ("config.json", "checkpoint.npz", "model.npz", "summary.json",
                            "metrics.csv", "curves.png") for suffix in ("", ".png")]
    for link in planted:
        link.symlink_to(victim)
    assert cli.main(["--resume", str(run), "--epochs", "3", "--quiet"]) == 0, \
        capsys.readouterr().err
    assert victim.read_text() == "keep me\n"
    assert all(link.is_symlink() for link in planted)
    assert len((run / "metrics.csv").read_text().splitlines()) == 1 + 3
