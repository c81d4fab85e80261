"""Every doctor demo runs, exits 0, and prints the findings its README row names."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

DEMOS = Path(__file__).resolve().parents[1] / "scripts" / "demos"


def named_findings() -> dict:
    """``{script: [finding ids]}`` from the table in scripts/demos/README.md."""
    rows = {}
    for line in (DEMOS / "README.md").read_text(encoding="utf-8").splitlines():
        m = re.match(r"\| \[(\w+\.py)\]\(\1\) \|.*\| (.+) \|$", line)
        if m:
            rows[m.group(1)] = re.findall(r"`([a-z-]+)`", m.group(2))
    return rows


def test_the_readme_lists_every_demo():
    scripts = {p.name for p in DEMOS.glob("*.py") if not p.name.startswith("_")}
    assert set(named_findings()) == scripts


@pytest.mark.parametrize("script", sorted(named_findings()))
def test_demo_exits_0_and_names_its_finding(script):
    proc = subprocess.run([sys.executable, str(DEMOS / script)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    broken = proc.stdout.split("\nfixed:")[0]
    for finding in named_findings()[script]:
        assert re.search(rf"(WARNING|ERROR) {finding}\b", broken), (finding, proc.stdout)
    assert "..." not in proc.stdout  # no message cut short
    assert "healthy - no problems found" in proc.stdout.split("\nfixed:")[1]
