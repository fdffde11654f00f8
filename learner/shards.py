"""A replay shard's settings, from the config: the one place they are derived.

The replay is split over ``--replay-shards`` shards: each holds 1/K of the capacity, waits
for 1/K of ``--learning-starts`` and applies the samples-per-insert ratio to its own share
(with 1/K of the tolerance). The fleet starts its shards with these settings, the learner's
mirror of a shard takes its capacity, and the fake fleet and the feed benchmark build their
in-process replay from them.
"""

from __future__ import annotations

from pathlib import Path

from common.config import Config


def shard_settings(cfg: Config, stack_size: int, shard: int = 0, shards: int | None = None) -> dict:
    """``replay_server.remote.ReplayServer``'s arguments for shard ``shard`` of ``shards``
    (default: the config's ``replay_shards``), without its snapshot path."""
    r, k = cfg.replay, cfg.replay.replay_shards if shards is None else shards
    return {
        "capacity": shard_capacity(cfg, k),
        "stack_size": stack_size,
        "n_step": r.n_step,
        "gamma": cfg.learner.gamma,
        "prioritized": r.prioritized,
        "alpha": r.priority_alpha,
        "seed": cfg.run.seed * 7919 + shard,
        "samples_per_insert": r.replay_ratio or None,
        "min_size": -(-r.learning_starts // k),
        "tolerance": r.replay_ratio_tolerance / k,
    }


def shard_capacity(cfg: Config, shards: int | None = None) -> int:
    """Records one shard of ``shards`` (default: the config's) holds, and its mirror's ring."""
    return -(-cfg.replay.replay_capacity // (cfg.replay.replay_shards if shards is None else shards))


def snapshot_path(run_dir: Path, shard: int) -> Path:
    """Where shard ``shard`` writes its snapshot (and restores from after a restart)."""
    return Path(run_dir) / f"replay-{shard}.snapshot"
