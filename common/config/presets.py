"""The presets: each paper's value for every field it fills, for each env kind and device.

A preset is a table ``{section: {field: value or f(_Kind)}}``; a callable entry depends on
the env kind (Atari, MinAtar, flat vector), the learner's device and the optimizer chosen.
:func:`resolve` (``common/config/resolve.py``) uses a preset's value only where a field is
None (auto), so a flag typed by hand always wins. :func:`describe_auto` renders a field's
values for ``--help``, so the help can never disagree with this table. The README's
"Presets" section sets each preset against its paper.
"""

from __future__ import annotations

from typing import Any, NamedTuple


class _Kind(NamedTuple):
    atari: bool
    cuda: bool
    optimizer: str
    minatar: bool = False


def _by_env(atari, vector, minatar=None):
    """Atari's value, the flat-vector envs', and MinAtar's (default: the vector envs')."""
    return lambda k: atari if k.atari else (minatar if k.minatar and minatar is not None else vector)


def _lr(rmsprop: float):
    # Adam's rates are this project's (Atari as in Rainbow's range, a larger one for small
    # vector envs, MinAtar's paper's 2.5e-4 between them); RMSProp's is the preset's paper's.
    return lambda k: _by_env(1e-4, 5e-4, 2.5e-4)(k) if k.optimizer == "adam" else rmsprop


#: Replay ratio of the apex preset for Atari with a learner on the CPU. Free-running actors
#: (Ape-X's setting, for a GPU learner) starve a CPU learner, which then trains a fraction
#: of an update a second. 1 sample per transition is Ape-X's own balance (docs/benchmarks.md
#: gives the measured costs of a CPU update and an agent step behind it).
CPU_ATARI_REPLAY_RATIO = 1.0


def _apex_replay_ratio(k: _Kind) -> float:
    return (0.0 if k.cuda else CPU_ATARI_REPLAY_RATIO) if k.atari else 8.0


#: Each preset's value for every field it fills, {section: {field: value or f(_Kind)}}.
#: ``resolve`` uses it only where a field is None (auto). The README's "Presets" section
#: sets both against their papers.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    # Horgan et al. 2018 (Ape-X), as this project runs it (Adam; a 1M replay): today's defaults.
    "apex": {
        "actors": {"epsilon_schedule": "apex", "epsilon_final": 0.01, "epsilon_decay_agent_steps": 250_000},
        "replay": {
            "n_step": 3,
            "prioritized": True,
            "replay_capacity": _by_env(1_000_000, 100_000),
            "learning_starts": _by_env(50_000, 1_000, 5_000),
            "replay_ratio": _apex_replay_ratio,
        },
        "learner": {
            "double_q": True,
            "dueling": True,
            "optimizer": "adam",
            "lr": _lr(rmsprop=0.00025 / 4),
            "rmsprop_eps": 1.5e-7,
            "grad_clip": 40.0,
            "batch_size": lambda k: 512 if k.cuda else 64,
            "target_update_period": _by_env(2_500, 200, 1_000),
        },
        # Rainbow's and Dopamine's evaluation eps, every 1M env frames (Dopamine's iteration).
        "eval": {"eval_epsilon": 0.001, "eval_period": _by_env(1_000_000, 10_000)},
    },
    # Mnih et al. 2015 (Nature DQN). Its "frames" in the eps schedule are agent steps; "update
    # every 4 steps with a batch of 32" is a replay ratio of 8; its error clipping is Huber.
    "nature": {
        "actors": {
            "epsilon_schedule": "linear",
            "epsilon_final": 0.1,
            "epsilon_decay_agent_steps": _by_env(1_000_000, 10_000, 100_000),
        },
        "replay": {
            "n_step": 1,
            "prioritized": False,
            "replay_capacity": _by_env(1_000_000, 100_000),
            "learning_starts": _by_env(50_000, 1_000, 5_000),
            "replay_ratio": 8.0,
        },
        "learner": {
            "double_q": False,
            "dueling": False,
            "optimizer": "rmsprop",
            "lr": _lr(rmsprop=0.00025),
            "rmsprop_eps": 0.01 / 32**2,
            "grad_clip": 0.0,
            "batch_size": 32,
            "target_update_period": _by_env(10_000, 200, 1_000),
        },
        "eval": {"eval_epsilon": 0.05, "eval_period": _by_env(1_000_000, 10_000)},
    },
}


def preset_values(
    preset: str, atari: bool, cuda: bool, optimizer: str | None = None, minatar: bool = False
) -> dict[str, dict[str, Any]]:
    """The preset's table for this env kind and device, {section: {field: value}}.
    ``optimizer``: the one chosen by hand, if any (the learning rate depends on it)."""
    table = PRESETS[preset]
    kind = _Kind(atari, cuda, optimizer or table["learner"]["optimizer"], minatar)
    return {
        section: {name: v(kind) if callable(v) else v for name, v in fields.items()}
        for section, fields in table.items()
    }


# ---- the presets' values in words, for --help --------------------------------------------
_ENVS = (("Atari", True, False), ("MinAtar", False, True), ("vector", False, False))


def _words(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.0f}" if value.is_integer() and abs(value) >= 1000 else f"{value:g}"
    return str(value)


def _by_device(values: dict[bool, Any]) -> str:
    """``{cuda: value}`` in words: one value, or 'x on a GPU, y on a CPU'."""
    if values[True] == values[False]:
        return _words(values[True])
    return f"{_words(values[True])} on a GPU, {_words(values[False])} on a CPU"


def describe_value(entry: Any, default_optimizer: str) -> str:
    """One preset entry (a value or f(_Kind)) in words, over env kinds and devices."""
    if not callable(entry):
        return _words(entry)
    per_env = {
        name: _by_device({cuda: entry(_Kind(atari, cuda, default_optimizer, minatar)) for cuda in (True, False)})
        for name, atari, minatar in _ENVS
    }
    if len(set(per_env.values())) == 1:
        return per_env["vector"]
    split = any(" on a " in words for words in per_env.values())  # by device within an env kind
    say, sep = (
        (lambda env: f"for {env} {per_env[env]}", "; ") if split else (lambda env: f"{per_env[env]} for {env}", ", ")
    )
    parts = [say("Atari")] + ([say("MinAtar")] if per_env["MinAtar"] != per_env["vector"] else [])
    return sep.join(parts) + f"{sep}{per_env['vector']} otherwise"


def describe_auto(section: str, name: str) -> str | None:
    """The presets' values of one field in words ('apex preset 3; nature preset 1'), or
    None if no preset fills it. Learning rates are given for each preset's own optimizer."""
    said = {
        preset: describe_value(table[section][name], table["learner"]["optimizer"])
        for preset, table in PRESETS.items()
        if name in table.get(section, {})
    }
    if not said:
        return None
    if len(said) > 1 and len(set(said.values())) == 1:
        return f"every preset: {next(iter(said.values()))}"
    return "; ".join(f"{preset} preset {words}" for preset, words in said.items())
