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


#: Noisy nets explore by themselves: eps 0 from the first step (Rainbow's "exploration eps 0").
_NO_EPSILON = {"epsilon_schedule": "linear", "epsilon_final": 0.0, "epsilon_decay_agent_steps": 1}


def _apex_replay_ratio(k: _Kind) -> float:
    return (0.0 if k.cuda else CPU_ATARI_REPLAY_RATIO) if k.atari else 8.0


#: The network and target of the Ape-X and Nature presets (expected Q, no noise, Nature's torso);
#: the later presets replace what their paper changed.
_DQN_LEARNER = {
    "head": "expected",
    "noisy": False,
    "munchausen": False,
    "torso": "nature",
    "torso_width": 1,
    "spectral_norm": False,
    "iqn_tau_samples": 64,
    "iqn_target_samples": 64,
    "iqn_acting_samples": 32,
    "v_min": -10.0,
    "v_max": 10.0,
    "adam_eps": 1.5e-4,
    "gamma": 0.99,
}

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
            "priority_alpha": 0.6,
        },
        "learner": {
            **_DQN_LEARNER,
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
            "priority_alpha": 0.6,
        },
        "learner": {
            **_DQN_LEARNER,
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
    # Hessel et al. 2018 (Rainbow): C51 (51 atoms on [-10, 10]), noisy nets instead of eps,
    # dueling, double, n 3, prioritized (alpha 0.5, beta 0.4 -> 1), Adam 6.25e-5 with eps
    # 1.5e-4, a batch of 32 every 4 agent steps, target every 32K frames (2,000 updates),
    # learning from 80K frames (20K transitions). On MinAtar, Revisiting Rainbow's settings
    # (Obando-Ceron & Castro 2021): v_max 100, Adam 1e-4, replay 100K, learning from 1K,
    # target every 1K agent steps (250 updates).
    "rainbow": {
        "actors": _NO_EPSILON,
        "replay": {
            "n_step": 3,
            "prioritized": True,
            "priority_alpha": 0.5,
            "replay_capacity": _by_env(1_000_000, 100_000),
            "learning_starts": _by_env(20_000, 1_000, 1_000),
            "replay_ratio": 8.0,
        },
        "learner": {
            **_DQN_LEARNER,
            "head": "c51",
            "noisy": True,
            "v_min": _by_env(-10.0, -10.0, -100.0),
            "v_max": _by_env(10.0, 10.0, 100.0),
            "double_q": True,
            "dueling": True,
            "optimizer": "adam",
            "lr": _by_env(6.25e-5, 5e-4, 1e-4),
            "adam_eps": 1.5e-4,
            "rmsprop_eps": 1.5e-7,
            "grad_clip": 10.0,
            "batch_size": 32,
            "target_update_period": _by_env(2_000, 200, 250),
        },
        "eval": {"eval_epsilon": 0.001, "eval_period": _by_env(1_000_000, 10_000)},
    },
    # Dabney et al. 2018b (IQN) as Dopamine runs it: N = N' = 64, K = 32, a 64-cosine
    # embedding, n 3, uniform replay, no dueling, Nature's max target (Dopamine's double_dqn
    # off), eps 1 -> 0.01 over 250K agent steps, Adam 5e-5 with eps 0.01/32, a batch of 32
    # every 4 agent steps, target every 8,000 agent steps (2,000 updates), learning from 20K.
    # On MinAtar, Revisiting Rainbow's replay, learning start, rate and target period.
    "iqn": {
        "actors": {"epsilon_schedule": "linear", "epsilon_final": 0.01, "epsilon_decay_agent_steps": 250_000},
        "replay": {
            "n_step": 3,
            "prioritized": False,
            "priority_alpha": 0.6,
            "replay_capacity": _by_env(1_000_000, 100_000),
            "learning_starts": _by_env(20_000, 1_000, 1_000),
            "replay_ratio": 8.0,
        },
        "learner": {
            **_DQN_LEARNER,
            "head": "iqn",
            "double_q": False,
            "dueling": False,
            "optimizer": "adam",
            "lr": _by_env(5e-5, 5e-4, 1e-4),
            "adam_eps": 0.01 / 32,
            "rmsprop_eps": 1.5e-7,
            "grad_clip": 10.0,
            "batch_size": 32,
            "target_update_period": _by_env(2_000, 200, 250),
        },
        "eval": {"eval_epsilon": 0.001, "eval_period": _by_env(1_000_000, 10_000)},
    },
    # Clark et al. 2024 ("Beyond The Rainbow"): IQN + Munchausen + the IMPALA CNN twice as wide
    # with a 6x6 adaptive max-pool and spectral norm + dueling + noisy nets; gamma 0.997, a
    # batch of 256 every 64 agent steps (replay ratio 4), Adam 1e-4 (eps 0.005 / batch),
    # prioritized with alpha 0.2, target every 500 updates, n 3, 8 fractions for N, N' and K.
    # Atari only: its torso needs frames (on MinAtar the family's own network runs with its head).
    "btr": {
        "actors": _NO_EPSILON,
        "replay": {
            "n_step": 3,
            "prioritized": True,
            "priority_alpha": 0.2,
            "replay_capacity": _by_env(1_048_576, 100_000),
            "learning_starts": _by_env(50_000, 1_000, 1_000),
            "replay_ratio": 4.0,
        },
        "learner": {
            **_DQN_LEARNER,
            "head": "iqn",
            "noisy": True,
            "munchausen": True,
            "torso": _by_env("impala", "nature"),
            "torso_width": 2,
            "spectral_norm": True,
            "iqn_tau_samples": 8,
            "iqn_target_samples": 8,
            "iqn_acting_samples": 8,
            "double_q": True,
            "dueling": True,
            "optimizer": "adam",
            "lr": _by_env(1e-4, 5e-4, 1e-4),
            "adam_eps": _by_env(0.005 / 256, 1.5e-4, 1.5e-4),
            "gamma": _by_env(0.997, 0.99, 0.99),
            "rmsprop_eps": 1.5e-7,
            "grad_clip": 10.0,
            "batch_size": _by_env(256, 32, 32),
            "target_update_period": _by_env(500, 200, 250),
        },
        "eval": {"eval_epsilon": 0.001, "eval_period": _by_env(1_000_000, 10_000)},
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
