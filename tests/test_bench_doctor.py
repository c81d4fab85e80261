"""The arithmetic of the benchmark's doctor-cost rows (scripts/bench_doctor.py) and their goal
check (scripts/bench_report.py); the timings themselves are the benchmark's, not a test's."""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "scripts"))

from bench_doctor import (  # noqa: E402
    cost_row,
    disturbed_pairs,
    median_error,
    own_share,
    pair_costs,
)
from bench_report import goals  # noqa: E402


def test_pair_costs_are_per_pair_ratios_and_their_median():
    median, costs = pair_costs([1.0, 2.0, 4.0], [1.1, 2.0, 5.0])
    assert costs == pytest.approx([0.1, 0.0, 0.25])
    assert median == pytest.approx(0.1)
    with pytest.raises(ValueError):
        pair_costs([1.0], [1.0, 2.0])
    with pytest.raises(ValueError):
        pair_costs([], [])


def test_the_error_of_a_median_comes_from_the_spread_of_the_pairs():
    # deviations from the median 0.02: 0.02, 0, 0.01, 0.03 -> MAD 0.015 over 4 values
    assert median_error([0.0, 0.02, 0.03, 0.05, 0.01]) == pytest.approx(
        1.2533 * 1.4826 * 0.01 / 5 ** 0.5)
    assert median_error([0.04] * 9) == 0


def test_a_pair_is_disturbed_when_either_run_was():
    assert disturbed_pairs([(0.0, 0.01), (0.2, 0.0), (None, 0.06), (None, None)]) == 2


def test_own_share_is_the_doctors_seconds_against_the_rest_of_the_run():
    seconds = [{"checks": 0.01, "monitor": 0.03}, {"checks": 0.02, "monitor": 0.08},
               {"checks": 0.0, "monitor": 0.0}]
    own = own_share([1.04, 1.1, 1.0], seconds)
    assert own["all"] == pytest.approx(0.04 / 1.0)  # of 0.04, 0.1 / 1.0 and 0
    assert own["checks"] == pytest.approx(0.01) and own["monitor"] == pytest.approx(0.03)


def _timed(without, with_doctor, others=None):
    n = len(without)
    last = {"steps": 10, "epochs": 2, "said": ["doctor: healthy"], "fixes_verified": False}
    return {"wall": (without, with_doctor), "cpu": (without, [w * 0.5 for w in with_doctor]),
            "others": others or [(0.0, 0.0)] * n, "load": [[1.0, 1.5]] * (n - 1) + [[None, 2.0]],
            "info": ([{"steps": 9}] * n, [{"steps": 9, "seconds": {"checks": 0.0}}] * (n - 1)
                     + [{**last, "seconds": {"checks": 0.01}}])}


def test_cost_row_takes_the_run_and_the_doctor_apart():
    row = cost_row("digits default", _timed([1.0, 1.0, 1.0], [1.02, 1.04, 1.5]))
    assert row["cost"] == pytest.approx(0.04)
    assert row["cpu_cost"] == pytest.approx(-0.48)
    assert (row["s_without"], row["s_with"]) == (1.0, 1.04)
    assert row["steps"] == 10 and row["epochs"] == 2
    assert row["doctor"] == {"said": ["doctor: healthy"], "fixes_verified": False}
    assert row["load_average"] == [1.0, 2.0]
    assert row["disturbed"] == 0 and len(row["times"]) == 3


def _result(digits, mnist, others=None):
    return {"workload": {"device": "cpu"}, "runs": [], "doctor": {
        "digits default": cost_row("digits default", _timed(*digits, others)),
        "mnist-shaped": cost_row("mnist-shaped", _timed(*mnist))}}


def test_goal_holds_at_five_percent_on_both_runs(capsys):
    out = goals(_result(([1.0, 1.0], [1.03, 1.05]), ([2.0, 2.0], [2.2, 2.2])))
    assert [(g["goal"], g["holds"]) for g in out] == [
        ("doctor <= 5% of training time, digits default", True),
        ("doctor <= 5% of training time, mnist-shaped", False)]
    assert "+4.0%" in capsys.readouterr().out


def test_goal_says_when_other_processes_were_busy(capsys):
    goals(_result(([1.0, 1.0], [1.0, 1.0]), ([1.0, 1.0], [1.0, 1.0]),
                  others=[(0.3, 0.0), (0.0, 0.0)]))
    text = capsys.readouterr().out
    assert "digits default: +0.0% +- 0.0% (CPU time -50.0%, own time 0.5%; load 1.0-2.0) " \
           "(measured while other processes were busy)" in text
    assert "doctor (digits default)" in text and "doctor (mnist-shaped)" not in text
