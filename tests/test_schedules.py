"""Learning-rate schedules: values at known steps, warm-up, composition, configs."""

from __future__ import annotations

import json
import math

import pytest

from nnx.errors import ConfigError
from nnx.schedules import (
    SCHEDULES,
    Constant,
    Cosine,
    Exponential,
    Schedule,
    StepDecay,
    Warmup,
    from_config,
    get_schedule,
)


def test_constant():
    s = Constant(0.1)
    assert [s(i) for i in (0, 1, 1000)] == [0.1, 0.1, 0.1]


def test_step_decay():
    s = StepDecay(0.1, step_size=10, gamma=0.5)
    assert s(0) == s(9) == 0.1
    assert s(10) == s(19) == 0.05
    assert s(25) == pytest.approx(0.025, rel=1e-15)


def test_exponential():
    s = Exponential(0.1, gamma=0.9)
    assert s(0) == 0.1
    assert s(3) == pytest.approx(0.1 * 0.729, rel=1e-15)
    assert Exponential(1e-5, gamma=1.1)(10) == pytest.approx(1e-5 * 1.1**10)  # a range test


def test_cosine():
    s = Cosine(0.1, total_steps=100, min_lr=0.01)
    assert s(0) == 0.1
    assert s(50) == pytest.approx(0.055, rel=1e-12)
    assert s(25) == pytest.approx(0.01 + 0.09 * (1 + math.sqrt(0.5)) / 2, rel=1e-12)
    assert s(100) == pytest.approx(0.01, rel=1e-12) and s(500) == s(100)
    values = [s(i) for i in range(101)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_warmup_starts_near_zero_and_reaches_the_base():
    s = Warmup(Constant(0.1), warmup_steps=10)
    assert 0 < s(0) == pytest.approx(0.01) and s(0) < 0.1 * 0.2
    values = [s(i) for i in range(10)]
    assert all(b - a == pytest.approx(0.01) for a, b in zip(values, values[1:]))  # linear
    assert s(9) == pytest.approx(0.1) and s(10) == s(1000) == 0.1


def test_warmup_wraps_any_schedule_shifted_or_not():
    inner = Cosine(0.1, total_steps=100)
    plain = Warmup(inner, warmup_steps=10)
    assert plain(5) == pytest.approx(inner(5) * 6 / 10)
    assert plain(9) == inner(9) and plain(10) == inner(10) and plain(60) == inner(60)
    shifted = Warmup(inner, warmup_steps=10, shift=True)
    assert shifted(5) == pytest.approx(0.1 * 6 / 10)
    assert shifted(9) == pytest.approx(0.1) and shifted(10) == 0.1
    assert shifted(60) == inner(50) and shifted(110) == 0.0
    nested = Warmup(Warmup(StepDecay(0.1, 5, 0.5), 4, shift=True), 2)
    assert nested(0) == pytest.approx(0.1 * 1 / 4 * 1 / 2)
    assert nested(3) == pytest.approx(0.1) and nested(4 + 5) == pytest.approx(0.05)


def test_get_schedule():
    assert get_schedule("constant", 0.1)(7) == 0.1
    assert get_schedule("step", 0.1, step_size=3, gamma=0.5)(3) == 0.05
    assert get_schedule("exponential", 0.1, gamma=0.5)(2) == 0.025
    cos = get_schedule("Cosine", 0.1, total_steps=100, warmup_steps=10, min_lr=0.001)
    assert isinstance(cos, Warmup) and cos.shift
    assert cos(0) == pytest.approx(0.01) and cos(9) == pytest.approx(0.1)
    assert cos(55) == pytest.approx((0.1 + 0.001) / 2) and cos(100) == pytest.approx(0.001)
    warm = get_schedule("warmup", 0.1, warmup_steps=4)
    assert [warm(i) for i in range(6)] == pytest.approx([0.025, 0.05, 0.075, 0.1, 0.1, 0.1])
    s = Constant(0.3)
    assert get_schedule(s, 0.1) is s
    assert set(SCHEDULES) == {"constant", "step", "exponential", "cosine", "warmup"}


def test_bad_arguments_are_config_errors():
    with pytest.raises(ConfigError, match="constant, cosine, exponential, step, warmup"):
        get_schedule("linear", 0.1)
    with pytest.raises(ConfigError, match="total_steps"):
        get_schedule("cosine", 0.1)
    with pytest.raises(ConfigError, match="less than total_steps"):
        get_schedule("cosine", 0.1, total_steps=10, warmup_steps=10)
    with pytest.raises(ConfigError, match="warmup_steps > 0"):
        get_schedule("warmup", 0.1)
    with pytest.raises(ConfigError, match="gamma"):
        get_schedule("step", 0.1, step_size=2, gamma=0.0)
    with pytest.raises(ConfigError, match="schedule 'step'"):
        get_schedule("step", 0.1, step_size=2, total=3)
    bad = [lambda: Constant(0.0), lambda: Constant(float("nan")), lambda: StepDecay(0.1, 0),
           lambda: StepDecay(0.1, 2, gamma=1.5), lambda: Exponential(0.1, -1.0),
           lambda: Cosine(0.1, 0), lambda: Cosine(0.1, 10, min_lr=0.2),
           lambda: Warmup(0.1, 5), lambda: Warmup(Constant(0.1), 0),
           lambda: Constant(0.1)(-1), lambda: Constant(0.1)(1.5)]
    for make in bad:
        with pytest.raises(ConfigError):
            make()


@pytest.mark.parametrize("schedule", [
    Constant(0.1), StepDecay(0.1, 7, 0.3), Exponential(0.1, 0.99), Cosine(0.1, 50, 0.002),
    Warmup(Cosine(0.1, 50), 5), Warmup(StepDecay(0.2, 3), 4, shift=True),
], ids=lambda s: s.name)
def test_config_round_trip_and_describe(schedule):
    cfg = json.loads(json.dumps(schedule.config()))
    rebuilt = from_config(cfg)
    assert isinstance(rebuilt, Schedule) and rebuilt.config() == schedule.config()
    assert [rebuilt(i) for i in range(60)] == [schedule(i) for i in range(60)]
    text = schedule.describe()
    assert isinstance(text, str) and "\n" not in text
    assert any(f"{v:g}" in text for v in (0.1, 0.2))
    assert repr(schedule).startswith(type(schedule).__name__ + "(")


def test_matches_pytorch_schedulers():
    torch = pytest.importorskip("torch")
    cases = [
        (StepDecay(0.1, 7, 0.5), lambda o: torch.optim.lr_scheduler.StepLR(o, 7, 0.5)),
        (Exponential(0.1, 0.97), lambda o: torch.optim.lr_scheduler.ExponentialLR(o, 0.97)),
        (Cosine(0.1, 40, 0.01),
         lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, 40, eta_min=0.01)),
        (Warmup(Constant(0.1), 8),
         lambda o: torch.optim.lr_scheduler.LinearLR(o, 1 / 8, 1.0, total_iters=7)),
    ]
    for ours, make in cases:
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        sched = make(opt)
        for step in range(40):
            assert ours(step) == pytest.approx(sched.get_last_lr()[0], rel=1e-9), (ours, step)
            opt.step()
            sched.step()
