"""Environments the actors step: one small vector interface over ALE games, MinAtar games and
flat-vector gymnasium envs.

:func:`make_vector_env` returns a :class:`VectorEnv`; each :meth:`VectorEnv.step` gives an
:class:`EnvStep` for all E envs at once. One module per job: ``base`` (the interface),
``protocol`` (the Atari protocol's numbers, no imports), ``ids`` (which family an id is and
what it names), ``ale`` (ALE games with DeepMind's preprocessing), ``video`` (the screen
hooks videos use), ``minatar`` (MinAtar's games), ``flat`` (gymnasium flat vectors) and
``factory`` (building envs and reading their :class:`~common.env_spec.EnvSpec`).

Every name is re-exported here, so ``from common.envs import make_vector_env`` works as it
always has, but lazily: a name's module is imported when the name is first asked for. That
keeps ``common.envs.protocol`` free to import from code that must not load numpy, OpenCV or
the emulators (the run configuration), since importing a submodule runs this file first.
"""

from __future__ import annotations

import importlib

#: Each re-exported name -> (the module that defines it, its name there).
_EXPORTS = {
    **{
        name: ("common.envs.protocol", name)
        for name in (
            "ALE_SEED_LIMIT",
            "ATARI_FRAME_SHAPE",
            "ATARI_FRAME_SKIP",
            "ATARI_MAX_EPISODE_FRAMES",
            "ATARI_NOOP_MAX",
            "ATARI_REPEAT_ACTION_PROBABILITY",
            "ATARI_STACK_SIZE",
        )
    },
    **{name: ("common.envs.base", name) for name in ("EnvSpecError", "EnvStep", "VectorEnv")},
    **{
        name: ("common.envs.ids", name)
        for name in (
            "ATARI_PREFIX",
            "MINATAR_GAMES",
            "MINATAR_INSTALL_HINT",
            "MINATAR_PREFIX",
            "is_atari",
            "is_minatar",
        )
    },
    # Private names some callers import from here: common.atari_scores, tests/learner/test_evaluate.py.
    "_registered_spec": ("common.envs.ids", "registered_spec"),
    "_atari_rom": ("common.envs.ids", "atari_rom"),
    **{name: ("common.envs.ale", name) for name in ("AleVectorEnv", "FIRE_ACTION_INDEX")},
    "ScreenHook": ("common.envs.video", "ScreenHook"),
    **{name: ("common.envs.minatar", name) for name in ("MINATAR_REPEAT_ACTION_PROBABILITY", "MinAtarVectorEnv")},
    "GymVectorEnv": ("common.envs.flat", "GymVectorEnv"),
    **{
        name: ("common.envs.factory", name)
        for name in ("check_env_id", "describe_env", "make_vector_env", "spec_of", "vector_env_for")
    },
}

__all__ = sorted(name for name in _EXPORTS if not name.startswith("_"))


def __getattr__(name: str):
    try:
        module, attr = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value  # asked once: later lookups find it without this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
