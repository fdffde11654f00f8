"""Filling the 'auto' values: once, at the top, for the env kind and the machine at hand.

:func:`resolve` is the one place a config's auto values are decided: the preset's table
(``presets.py``) for the algorithm, the env family's protocol for sticky actions, the feed
and the shards for the learner's device (:func:`resolve_feed`), the rate limiter's
tolerance, and the learner's fast paths (:func:`resolve_fast_paths`). The shards and the
envs per actor come from the core plan (:func:`resolve_cores`, ``hardware.plan_cores``). What it returns has
no auto value left and is what ``config.json`` records; resolving it again changes nothing.
"""

from __future__ import annotations

import dataclasses

from common.config.fields import _require
from common.config.hardware import DEFAULT_ENVS_PER_ACTOR, core_plan
from common.config.presets import preset_values
from common.config.schema import Config, LearnerConfig


def resolve(
    config: Config,
    atari: bool,
    cuda: bool,
    frame_bytes: int | None = None,
    device_free_bytes: int | None = None,
    cores: int | None = None,
) -> Config:
    """Fill the 'auto' (None) values from the preset's table for this env kind and device.
    The feed and the shards also need one frame's bytes, the learner device's free memory
    and the driver node's cores (:func:`resolve_feed`)."""
    minatar = config.env.env_id.startswith("MinAtar/")  # common.envs.is_minatar, without its imports
    table = preset_values(config.run.preset, atari, cuda, config.learner.optimizer, minatar)
    filled = {
        section: dataclasses.replace(
            getattr(config, section),
            **{name: value for name, value in fields.items() if getattr(getattr(config, section), name) is None},
        )
        for section, fields in table.items()
    }
    config = dataclasses.replace(config, **filled)
    if config.env.repeat_action_probability is None:  # the family's protocol (EnvConfig's help)
        config = dataclasses.replace(
            config, env=dataclasses.replace(config.env, repeat_action_probability=0.1 if minatar else 0.0)
        )
    _require(
        config.learner.torso != "impala" or atari,
        "torso",
        config.learner.torso,
        "needs Atari frames (84x84); MinAtar and flat-vector envs keep their own networks",
    )
    config = resolve_feed(resolve_cores(config, cuda, cores), cuda, frame_bytes, device_free_bytes, cores)
    r, lc, a = config.replay, config.learner, config.actors
    streams = a.num_actors * config.env.envs_per_actor
    tolerance = r.replay_ratio_tolerance
    if tolerance is None:
        # Room for one message from every stream and the learner's requests in flight, so
        # neither side stalls on the other's granularity; the long-run ratio stays exact.
        tolerance = max(r.replay_ratio * a.steps_per_batch * streams, 2.0 * lc.batch_size * lc.prefetch)
    if r.replay_ratio:
        _require(
            tolerance >= max(r.replay_ratio, lc.batch_size),
            "replay_ratio_tolerance",
            tolerance,
            f"must be at least --replay-ratio={r.replay_ratio} and --batch-size={lc.batch_size}, or a side could wait forever",
        )
    return dataclasses.replace(
        config,
        replay=dataclasses.replace(r, replay_ratio_tolerance=float(tolerance)),
        learner=resolve_fast_paths(lc, cuda),
    )


def _native_bf16() -> bool:
    # Asked through the package, so that a test can stand in another CPU by patching
    # common.config.cpu_has_native_bf16.
    import common.config

    return common.config.cpu_has_native_bf16()


def resolve_fast_paths(lc: LearnerConfig, cuda: bool) -> LearnerConfig:
    """The learner's fast paths left 'auto', for this device (LearnerConfig's help says why).
    :func:`resolve` calls it; a resolved LearnerConfig has nothing left for it to fill."""
    auto = {
        "tf32": cuda,
        "channels_last": cuda,
        "fused_optimizer": True,
        "compile": cuda,
        "stats_period": lc.publish_period if cuda else 1,
    }
    filled = {name: value for name, value in auto.items() if getattr(lc, name) is None}
    if lc.precision == "auto":
        filled["precision"] = "bf16" if cuda or _native_bf16() else "fp32"
    return dataclasses.replace(lc, **filled)


#: The largest share of the learner device's free memory a mirror of the replay's frames may take.
MIRROR_MEMORY_SHARE = 0.5


def resolve_feed(
    config: Config, cuda: bool, frame_bytes: int | None, device_free_bytes: int | None, cores: int | None
) -> Config:
    """``--feed`` left auto, for the learner's device.

    The mirror feed sends each frame to the learner once and samples as indices
    (``learner/mirror.py``); it needs the whole replay's frames on the device. On a GPU
    that holds them within MIRROR_MEMORY_SHARE of its free memory (1M Atari frames are
    7 GB), the feed is the mirror; elsewhere (a CPU learner, whose RAM would hold the
    frames twice; a small GPU) stacked frames through Ray. (``cores``: unused, kept for callers.)
    """
    r, lc = config.replay, config.learner
    need = r.replay_capacity * frame_bytes if frame_bytes else None
    feed = lc.feed
    if feed == "auto":
        fits = (
            cuda
            and need is not None
            and device_free_bytes is not None
            and need <= MIRROR_MEMORY_SHARE * device_free_bytes
        )
        feed = "mirror" if fits else "stacked"
    elif feed == "mirror" and cuda and need is not None and device_free_bytes is not None:
        _require(
            need <= device_free_bytes,
            "feed",
            feed,
            f"the replay's frames ({need / 2**30:.1f} GiB) do not fit in "
            f"the learner device's free memory ({device_free_bytes / 2**30:.1f} GiB); lower --replay-capacity or use stacked",
        )
    return dataclasses.replace(config, learner=dataclasses.replace(lc, feed=feed))


def resolve_cores(config: Config, cuda: bool, cores: int | None) -> Config:
    """``--replay-shards`` and ``--envs-per-actor`` left auto, from the core plan
    (``hardware.plan_cores``) for the cores Ray will see. Without ``cores`` (unknown), one
    shard and DEFAULT_ENVS_PER_ACTOR."""
    r, env = config.replay, config.env
    if cores is None:
        shards, envs = r.replay_shards or 1, env.envs_per_actor or DEFAULT_ENVS_PER_ACTOR
    else:
        plan = core_plan(config, cuda, cores)
        shards, envs = plan.shards, plan.envs_per_actor
    return dataclasses.replace(
        config,
        replay=dataclasses.replace(r, replay_shards=shards),
        env=dataclasses.replace(env, envs_per_actor=envs),
    )
