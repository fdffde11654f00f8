"""The one typed config: a frozen dataclass tree whose field help becomes ``--help``.

Values left as ``None`` (or ``"auto"``) are filled by :func:`resolve` once the environment
kind and the machine are known: from the ``--preset`` table (:data:`PRESETS`: one paper's
settings) and from the hardware, so a flag typed by hand always wins; ``config.json``
records resolved values and the preset. The package's modules, each with one job:

- ``fields``: :class:`ConfigError`, each list of allowed values, the field helper;
- ``schema`` (and ``learner_schema``): the dataclasses and their validation;
- ``presets``: the presets' table and its values in words for ``--help``;
- ``resolve``: the one place 'auto' values are decided;
- ``flags``: the argparse parser, flags back to a Config, ``config.json``'s text;
- ``hardware``: the machine at hand (CUDA or not, native bf16, the core plan);
- ``record``: how config.json records the resolution, and 'auto' resolved again on resume.

Everything public is importable from ``common.config`` itself.
"""

from common.config.fields import (
    ACTOR_PRECISIONS,
    ALE_SEED_MODULUS,
    EPSILON_SCHEDULES,
    FEEDS,
    LEARNER_PRECISIONS,
    LOSSES,
    MAX_SEED,
    OPTIMIZERS,
    PIN_CPUS,
    PRESET_NAMES,
    RECORD_KEY,
    ConfigError,
)
from common.config.flags import build_arg_parser, config_from_args, dumps, explicit_overrides, field_help
from common.config.hardware import (
    DEFAULT_ENVS_PER_ACTOR,
    CorePlan,
    core_plan,
    cpu_has_native_bf16,
    cpu_learner_threads,
    cpu_plan,
    is_cuda,
    pick_device,
    plan_cores,
)
from common.config.presets import CPU_ATARI_REPLAY_RATIO, PRESETS, describe_auto, preset_values
from common.config.record import Machine, auto_fields, make_record, re_resolve, record_of
from common.config.resolve import MIRROR_MEMORY_SHARE, resolve, resolve_cores, resolve_fast_paths, resolve_feed
from common.config.schema import (
    SECTIONS,
    ActorConfig,
    Config,
    EnvConfig,
    EvalConfig,
    LearnerConfig,
    ReplayConfig,
    RunConfig,
)

__all__ = [
    "ACTOR_PRECISIONS",
    "ALE_SEED_MODULUS",
    "CPU_ATARI_REPLAY_RATIO",
    "DEFAULT_ENVS_PER_ACTOR",
    "RECORD_KEY",
    "CorePlan",
    "Machine",
    "auto_fields",
    "core_plan",
    "make_record",
    "plan_cores",
    "re_resolve",
    "record_of",
    "resolve_cores",
    "EPSILON_SCHEDULES",
    "FEEDS",
    "LEARNER_PRECISIONS",
    "LOSSES",
    "MAX_SEED",
    "MIRROR_MEMORY_SHARE",
    "OPTIMIZERS",
    "PIN_CPUS",
    "PRESETS",
    "PRESET_NAMES",
    "SECTIONS",
    "ActorConfig",
    "Config",
    "ConfigError",
    "EnvConfig",
    "EvalConfig",
    "LearnerConfig",
    "ReplayConfig",
    "RunConfig",
    "build_arg_parser",
    "config_from_args",
    "cpu_has_native_bf16",
    "cpu_learner_threads",
    "cpu_plan",
    "describe_auto",
    "dumps",
    "explicit_overrides",
    "field_help",
    "is_cuda",
    "pick_device",
    "preset_values",
    "resolve",
    "resolve_fast_paths",
    "resolve_feed",
]
