"""Run settings: layered resolution with sources, dataset defaults, TOML errors, the
normalised values validation returns, and property tests.

The property tests feed random names, values and TOML text to the settings checker and
the resolver: each call must succeed or raise an :class:`nnx.errors.NnxError`, never
anything else. The same for the Trainer's data check is in test_data_checks.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nnx import settings as cfg
from nnx.errors import ConfigError, NnxError

PROPS = settings(max_examples=50, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def _values(resolved):
    return {k: v["value"] for k, v in resolved.items()}


def _sources(resolved):
    return {k: v["source"] for k, v in resolved.items()}


# --- resolution -------------------------------------------------------------------------------


def test_layers_defaults_dataset_toml_flags(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text('dataset = "spirals"\nepochs = 7\nlr = 0.05\n[model]\nhidden = "8,8"\n'
                    'out = "runs/a"\n')
    r = cfg.resolve({"lr": 0.2, "seed": None}, toml)
    v, src = _values(r), _sources(r)
    assert set(r) == set(cfg.BY_NAME)
    assert (v["optimizer"], src["optimizer"]) == ("adam", "default")
    assert (v["batch_size"], src["batch_size"]) == (32, "dataset")  # spirals' default
    assert (v["epochs"], src["epochs"]) == (7, "config file")
    assert (v["hidden"], src["hidden"]) == ("8,8", "config file")
    assert (v["lr"], src["lr"]) == (0.2, "flag")  # a flag beats the file
    assert (v["seed"], src["seed"]) == (0, "default")  # None flags are "not given"
    assert v["out"] == str(tmp_path / "runs" / "a")  # relative to the config file


def test_dataset_defaults_follow_the_dataset_chosen_anywhere(tmp_path):
    assert _values(cfg.resolve({}))["hidden"] == cfg.DATASET_DEFAULTS["digits"]["hidden"]
    assert _values(cfg.resolve({"dataset": "xor"}))["hidden"] == "16,16"
    toml = tmp_path / "c.toml"
    toml.write_text('dataset = "moons"\n')
    assert _values(cfg.resolve({}, toml))["hidden"] == "32,32"
    previous = {"dataset": "blobs", "epochs": 3}
    r = cfg.resolve({"epochs": 5}, None, previous)
    assert _sources(r)["dataset"] == "resumed run" and _values(r)["hidden"] == "32"
    assert (_values(r)["epochs"], _sources(r)["epochs"]) == (5, "flag")


def test_every_dataset_default_is_a_valid_setting():
    for dataset, overrides in cfg.DATASET_DEFAULTS.items():
        resolved = cfg.resolve({"dataset": dataset})
        for key, value in overrides.items():
            assert resolved[key] == {"value": value, "source": "dataset"}, (dataset, key)


@pytest.mark.parametrize("body, words", [
    ("epochs = = 3\n", ["not valid TOML"]),
    ("epochz = 3\n", ["unknown setting 'epochz'", "did you mean 'epochs'"]),
    ('epochs = "many"\n', ["'epochs' must be int", "str"]),
    ("standardize = 1\n", ["'standardize' must be bool"]),
    ("lr = true\n", ["'lr' must be"]),
    ('data_dir = "../../etc"\n', ["escapes"]),
    ('out = "a/../../b"\n', ["escapes"]),
    ("epochs = 0\n", ["epochs must be at least 1"]),
    ('optimizer = "adagrad"\n', ["optimizer", "adam"]),
])
def test_toml_errors_are_config_errors_naming_the_problem(tmp_path, body, words):
    toml = tmp_path / "bad.toml"
    toml.write_text(body)
    with pytest.raises(ConfigError) as err:
        cfg.resolve({}, toml)
    for word in words:
        assert word in str(err.value)


def test_missing_and_unreadable_config_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        cfg.load_toml(tmp_path / "nope.toml")
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe\x00epochs = 3")
    with pytest.raises(ConfigError):
        cfg.load_toml(tmp_path / "bin.toml")


def test_absolute_paths_in_a_config_file_are_kept(tmp_path):
    toml = tmp_path / "c.toml"
    elsewhere = tmp_path.parent / "elsewhere"
    toml.write_text(f'data_dir = "{elsewhere.as_posix()}"\n')
    assert cfg.load_toml(toml)["data_dir"] == elsewhere.as_posix()


@pytest.mark.parametrize("text, sizes", [("256,128", [256, 128]), (" 8 , 4 ", [8, 4]),
                                         ("", []), ([3, 2], [3, 2])])
def test_hidden_sizes(text, sizes):
    assert cfg.hidden_sizes(text) == sizes


@pytest.mark.parametrize("bad", ["0", "abc", "-5", "8,,x", "1.5", [2.5], [0]])
def test_bad_hidden_sizes(bad):
    with pytest.raises(ConfigError, match="hidden sizes"):
        cfg.hidden_sizes(bad)


# --- properties: settings ---------------------------------------------------------------------


_ANY = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                 st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
                 st.lists(st.integers(-5, 300), max_size=4))


_NAMES = st.one_of(st.sampled_from(sorted(cfg.BY_NAME)), st.text(max_size=15))


@PROPS
@given(name=_NAMES, value=_ANY)
def test_check_value_succeeds_or_raises_a_config_error(name, value):
    try:
        out = cfg.check_value(name, value, "test")
    except ConfigError as exc:
        assert str(exc).startswith("test:")
    else:  # normalised once and for all: checking again changes nothing
        assert cfg.check_value(name, out, "test") == out
        assert out == value or isinstance(value, str)  # only text is read as a number


@PROPS
@given(flags=st.dictionaries(_NAMES, _ANY, max_size=5))
def test_resolve_succeeds_or_raises_an_nnx_error(flags):
    try:
        r = cfg.resolve(flags)
    except NnxError:
        return
    for k, v in flags.items():
        if v is not None:
            assert r[k] == {"value": r[k]["value"], "source": "flag"}


_TOML_LINES = st.one_of(
    st.builds(lambda k, v: f"{k} = {v}", st.sampled_from(sorted(cfg.BY_NAME) + ["x", "lr-x"]),
              st.one_of(st.integers(-3, 500).map(str), st.sampled_from(
                  ['"full"', '"relu"', '"abc"', "true", "1.5", "nan", "inf", '"../up"', "[1, 2]",
                   '"8,8"', '"sgd"', "-0.1", '""']))),
    st.text(max_size=15))


@PROPS
@given(lines=st.lists(_TOML_LINES, max_size=4))
def test_toml_text_succeeds_or_raises_an_nnx_error(tmp_path_factory, lines):
    path = tmp_path_factory.mktemp("toml") / "c.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    try:
        cfg.resolve({}, path)
    except NnxError:
        pass


# --- normalised values ------------------------------------------------------------------------


def test_validate_returns_the_normalised_settings():
    v = cfg.validate({"epochs": np.int64(3), "seed": np.uint8(7), "lr": 1, "dropout": 0,
                      "batch_size": " 64", "hidden": [np.int32(8), 4]})
    assert set(v) == set(cfg.BY_NAME)
    assert type(v["epochs"]) is int and type(v["seed"]) is int and v["seed"] == 7
    assert type(v["lr"]) is float and type(v["dropout"]) is float
    assert v["batch_size"] == 64 and v["hidden"] == [8, 4] and type(v["hidden"][0]) is int
    assert cfg.validate({"batch_size": "FULL"})["batch_size"] == "full"
    assert cfg.validate(v) == v  # once normalised, always normalised


def test_resolve_hands_on_the_normalised_values(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('batch_size = "16"\nepochs = 2\nlr = 1\n')
    r = cfg.resolve({"seed": np.int64(3)}, toml)
    assert r["batch_size"] == {"value": 16, "source": "config file"}
    assert r["lr"]["value"] == 1.0 and type(r["lr"]["value"]) is float
    assert r["seed"] == {"value": 3, "source": "flag"} and type(r["seed"]["value"]) is int


@pytest.mark.parametrize("values, words", [
    ({"seed": -1}, ["seed must be a whole number from 0", "-1"]),
    ({"seed": 2**63}, ["seed must be"]),
    ({"epochs": 2.0}, ["'epochs' must be int", "float"]),
    ({"batch_size": 2.5}, ["'batch_size' must be int or str", "2.5"]),
    ({"batch_size": "lots"}, ["batch size must be a positive integer or 'full'", "lots"]),
    ({"batch_size": True}, ["'batch_size' must be", "bool"]),
    ({"hidden": [2.5]}, ["hidden sizes", "2.5"]),
    ({"hidden": [True, 4]}, ["hidden sizes"]),
    ({"dropout": math.nan}, ["dropout must be a finite number"]),
    ({"weight_decay": math.inf}, ["weight-decay must be a finite number"]),
    ({"standardize": "yes"}, ["'standardize' must be bool"]),
    ({"dtype": "int32"}, ["dtype must be float32 or float64"]),
    ({"momentum": 0.9}, ["momentum does not apply to adam"]),
])
def test_validate_refuses_each_bad_value_naming_its_source(values, words):
    with pytest.raises(ConfigError) as err:
        cfg.validate(values, "config file run.toml")
    assert str(err.value).startswith("config file run.toml: ") or "momentum" in values
    for word in words:
        assert word in str(err.value)


def test_the_former_module_name_still_works():
    from nnx import config

    assert config.resolve is cfg.resolve and config.SETTINGS is cfg.SETTINGS
