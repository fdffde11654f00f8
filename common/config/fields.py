"""The config's vocabulary: its error, each list of allowed values (once), and the field helper.

Every section of the schema (``schema.py``, ``learner_schema.py``) builds its fields with
:func:`_f` and checks them with :func:`_require` / :func:`_require_choice`, so a bad value
always raises :class:`ConfigError` naming the flag and the value, and each allowed-value
list below serves both the flag's ``choices`` and the check.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from common.config.presets import PRESETS


class ConfigError(ValueError):
    """A setting that cannot work. The message names the field and the value."""


EPSILON_SCHEDULES = ("apex", "linear")
ACTOR_PRECISIONS = ("auto", "fp32", "bf16", "int8", "bf16-int8", "int8-static")
LOSSES = ("huber", "mse")
OPTIMIZERS = ("adam", "rmsprop")
FEEDS = ("auto", "mirror", "stacked")
LEARNER_PRECISIONS = ("auto", "fp32", "bf16")
PIN_CPUS = ("off", "on")
HEADS = ("expected", "c51", "qr", "iqn")
TORSOS = ("nature", "impala")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")
PRESET_NAMES = tuple(PRESETS)

#: config.json's key for how its settings were resolved (common/config/record.py): not a
#: section of settings, so Config.from_dict passes over it.
RECORD_KEY = "resolution"

#: The largest seed a run takes: numpy's and torch's generators take 0..2^32-1 (and refuse
#: negative seeds). An emulator's own seed is an int32: envs fold theirs into ALE_SEED_MODULUS.
MAX_SEED = 2**32 - 1
ALE_SEED_MODULUS = 2**31


def _f(default, help: str, flag: str | None = None, choices: tuple | None = None):
    return dataclasses.field(default=default, metadata={"help": help, "flag": flag, "choices": choices})


def _require(cond: bool, field: str, value: Any, why: str) -> None:
    if not cond:
        raise ConfigError(f"--{field.replace('_', '-')}={value}: {why}")


def _one_of(choices: tuple) -> str:
    return ", ".join(choices[:-1]) + " or " + choices[-1] if len(choices) > 1 else choices[0]


def _require_choice(field: str, value: Any, choices: tuple, auto_none: bool = False) -> None:
    """``value`` is one of ``choices`` (or None, where None means auto)."""
    _require(value in choices or (auto_none and value is None), field, value, f"must be {_one_of(choices)}")
