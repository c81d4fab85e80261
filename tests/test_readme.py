"""The README tells the truth: its defaults are the settings table's, its commands exist.

The README states defaults in two tables, each checked here against
:mod:`nnx.settings`: the flag table (``| `--flag` | `default` | ... |``) and the
per-dataset table, whose second column lists ``name=value`` pairs. Its test
command is the one CI runs.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from nnx import settings

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _rows(text: str) -> list[list[str]]:
    """The cells of every Markdown table row in ``text``."""
    return [[c.strip() for c in line.strip().strip("|").split("|")]
            for line in text.splitlines() if line.lstrip().startswith("|")]


def _section(title: str) -> str:
    match = re.search(rf"^#+ {re.escape(title)}\s*$(.*?)(?=^#+ |\Z)", README, re.M | re.S)
    assert match, f"README has no section {title!r}"
    return match.group(1)


def _code(cell: str) -> str | None:
    found = re.fullmatch(r"`([^`]*)`", cell)
    return found.group(1) if found else None


def _shown(value) -> str:
    """A default as the README writes it."""
    return "none" if value is None else str(value).lower() if isinstance(value, bool) \
        else str(value)


def flag_table() -> dict[str, str]:
    """``{setting name: default as written}`` from the command-line section's table."""
    stated = {}
    for cells in _rows(_section("The command line")):
        flag, default = _code(cells[0]), _code(cells[1]) if len(cells) > 1 else None
        if flag and flag.startswith("--") and default is not None:
            stated[flag[2:].replace("-", "_")] = default
    return stated


def dataset_table() -> dict[str, dict[str, str]]:
    """``{dataset: {setting: value as written}}`` from the per-dataset table."""
    stated = {}
    for cells in _rows(_section("Defaults per dataset")):
        name = _code(cells[0])
        if name and len(cells) > 1:
            stated[name] = dict(pair.split("=", 1) for pair in re.findall(r"`([^`]+=[^`]*)`",
                                                                         cells[1]))
    return stated


def test_the_flag_table_states_the_settings_defaults():
    stated = flag_table()
    assert len(stated) >= 10, stated
    for name, default in stated.items():
        assert name in settings.BY_NAME, f"README names --{name}, which is no setting"
        assert default == _shown(settings.BY_NAME[name].default), (
            f"README says --{name} defaults to {default!r}; the settings table says "
            f"{settings.BY_NAME[name].default!r}")


@pytest.mark.parametrize("dataset", sorted(settings.DATASET_DEFAULTS))
def test_the_dataset_table_states_every_dataset_default(dataset):
    stated = dataset_table()
    assert dataset in stated, f"README's 'Defaults per dataset' table has no row {dataset}"
    resolved = {k: v["value"] for k, v in settings.resolve({"dataset": dataset}).items()}
    assert set(stated[dataset]) == set(settings.DATASET_DEFAULTS[dataset]), (
        f"{dataset}: README lists {sorted(stated[dataset])}, the settings "
        f"{sorted(settings.DATASET_DEFAULTS[dataset])}")
    for name, value in stated[dataset].items():
        assert value == _shown(resolved[name]), f"{dataset}: README {name}={value}, " \
                                                f"settings {resolved[name]!r}"


def test_the_test_command_is_what_ci_runs():
    commands = _section("Two commands on a fresh machine")
    assert "python -m pytest -q" in commands and "python scripts/train.py" in commands
    assert "python -m pytest -q" in (ROOT / "ci" / "cpu.sh").read_text(encoding="utf-8")


def test_every_module_the_readme_names_exists():
    for path in re.findall(r"`(nnx/[\w/.]+|backends/[\w/.]*|scripts/[\w/.]+)`", README):
        assert (ROOT / path).exists(), f"README names {path}, which does not exist"
