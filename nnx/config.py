"""Former name of :mod:`nnx.settings` (the settings table, TOML files and validation)."""

from .settings import (  # noqa: F401
    BY_NAME,
    DATASET_DEFAULTS,
    SETTINGS,
    Setting,
    check_value,
    help_text,
    hidden_sizes,
    load_toml,
    resolve,
    validate,
)
