"""The one typed config: a frozen dataclass tree whose field help becomes ``--help``.

Each field's ``help`` metadata is its documentation and its command-line help. Flags are
the field names with dashes (``--num-actors``) unless ``flag`` says otherwise. Values left
as ``None`` are "auto" and are filled by :func:`resolve` from the ``--preset`` table
(:data:`PRESETS`: one paper's settings, Ape-X's or Nature DQN's) once the environment kind
(Atari or flat vector) and the device are known, so a flag typed by hand always wins over
the preset; ``config.json`` always records resolved values and the preset.

Validation happens in ``__post_init__`` and raises :class:`ConfigError` whose text names
the field and the value, so the entry point can print one line and exit 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from typing import Any, NamedTuple, Optional, get_type_hints


class ConfigError(ValueError):
    """A setting that cannot work. The message names the field and the value."""


def _f(default, help: str, flag: str | None = None, choices: tuple | None = None):
    return dataclasses.field(default=default, metadata={"help": help, "flag": flag, "choices": choices})


def _require(cond: bool, field: str, value: Any, why: str) -> None:
    if not cond:
        raise ConfigError(f"--{field.replace('_', '-')}={value}: {why}")


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
#: (Ape-X's setting, for a GPU learner) starve a CPU learner: 16 actors on 2 cores stepped
#: ~5K frames/s while it managed 0.5-0.7 updates/s. 1 sample per transition is Ape-X's own
#: balance (19 batches of 512 a second against 50K frames/s: 0.8), and here a CPU update
#: costs ~1.5 ms of CPU per sample (batch 64, 1 thread: 10.6 updates per CPU-second) against
#: ~1 ms per agent step of an actor, so learner and actors split the cores about 60/40.
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


@dataclasses.dataclass(frozen=True)
class EnvConfig:
    env_id: str = _f(
        "ALE/Breakout-v5",
        "environment: any ALE game id (ALE/Pong-v5, ...) or a gymnasium id with a flat vector observation (CartPole-v1)",
        flag="--env",
    )
    envs_per_actor: int = _f(
        32,
        "environments stepped together by each actor (one batched forward pass per step; 32: the actor spends ≈ 3/4 of its time in the emulator with the int8-static acting network, against ≈ 0.69 at 8 and 16; 64 adds 2-3 points and doubles the latency of a step; docs/benchmarks.md §1d)",
    )
    episodic_life: Optional[bool] = _f(
        None, "treat a lost life as terminal for learning (auto: on for games with lives)"
    )
    noop_max: int = _f(30, "up to this many no-op actions at the start of each episode")
    max_episode_frames: int = _f(108_000, "truncate an Atari episode after this many emulator frames")
    repeat_action_probability: Optional[float] = _f(
        None,
        "sticky actions: the probability that the emulator plays the previous action again instead of the chosen one, at each emulator frame (auto: 0 for ALE games: the defaults reproduce Nature DQN / Ape-X, no sticky actions and up to 30 no-ops; Machado et al. 2018 recommend 0.25 with --full-action-space on, which is also ALE/*-v5's upstream default; MinAtar 0.1, its paper's)",
    )
    full_action_space: bool = _f(
        False,
        "all 18 console actions instead of the game's minimal set (Machado et al. 2018's protocol; changes the network's output, so a checkpoint fits only runs with the same setting); MinAtar: all 6 instead of the game's minimal set, as its -v0 ids",
    )

    def __post_init__(self):
        _require(isinstance(self.env_id, str) and self.env_id != "", "env", self.env_id, "must name an environment")
        _require(self.envs_per_actor >= 1, "envs_per_actor", self.envs_per_actor, "must be at least 1")
        _require(self.noop_max >= 0, "noop_max", self.noop_max, "must be >= 0")
        _require(self.max_episode_frames >= 4, "max_episode_frames", self.max_episode_frames, "must be at least 4")
        if self.repeat_action_probability is not None:
            _require(
                0 <= self.repeat_action_probability <= 1,
                "repeat_action_probability",
                self.repeat_action_probability,
                "must be in [0, 1]",
            )


@dataclasses.dataclass(frozen=True)
class ActorConfig:
    num_actors: int = _f(2, "Ray actors stepping environments on CPUs")
    epsilon_schedule: Optional[str] = _f(
        None,
        "exploration: 'apex' gives stream i of N a fixed eps = base^(1 + alpha*i/(N-1)); 'linear' decays every stream from 1.0 to --epsilon-final (auto: apex preset 'apex', nature 'linear')",
        choices=("apex", "linear"),
    )
    epsilon_base: float = _f(0.4, "Ape-X eps base")
    epsilon_alpha: float = _f(7.0, "Ape-X eps exponent spread")
    epsilon_final: Optional[float] = _f(None, "final eps of the linear schedule (auto: apex preset 0.01, nature 0.1)")
    epsilon_decay_agent_steps: Optional[int] = _f(
        None,
        "agent steps (all streams together) over which the linear schedule decays (auto: apex preset 250,000; nature 1,000,000 for Atari, 10,000 otherwise)",
    )
    actor_priorities: bool = _f(
        True,
        "actors compute each transition's initial priority from their own Q-values, as in Ape-X (off: new items get the replay's running max priority)",
    )
    steps_per_batch: int = _f(64, "records of one env stream sent to the replay in one message")
    max_inflight_batches: int = _f(
        4, "messages an actor may have in flight to the replay before it waits (back-pressure)"
    )
    actor_threads: int = _f(1, "torch threads per actor for the eps-greedy forward pass")
    actor_precision: str = _f(
        "auto",
        "number format of the actors' acting network: int8-static (the Nature CNN in int8 throughout, activation scales calibrated on the actor's own states, output layers fp32; new weights converted on a thread at most once per 100 forward passes), bf16 (convolutions and the 3136x512 layers in bf16, output layers fp32), int8 (the 3136x512 layers dynamically quantized), bf16-int8 (both), fp32 (auto: int8-static for Atari where torch has its x86 int8 engine, where the forward pass measured 1.9x faster than bf16 and 3.2x faster than fp32 at 32 envs (docs/benchmarks.md); else bf16 on CPUs with native bf16, AVX-512 BF16 or AMX; else int8 where torch has a quantized engine; else fp32; each actor decides on its own CPU and reports it at start)",
        choices=("auto", "fp32", "bf16", "int8", "bf16-int8", "int8-static"),
    )

    def __post_init__(self):
        _require(self.num_actors >= 1, "num_actors", self.num_actors, "must be at least 1")
        _require(0 < self.epsilon_base <= 1, "epsilon_base", self.epsilon_base, "must be in (0, 1]")
        _require(self.epsilon_alpha >= 0, "epsilon_alpha", self.epsilon_alpha, "must be >= 0")
        _require(
            self.epsilon_schedule in (None, "apex", "linear"),
            "epsilon_schedule",
            self.epsilon_schedule,
            "must be apex or linear",
        )
        if self.epsilon_final is not None:
            _require(0 <= self.epsilon_final <= 1, "epsilon_final", self.epsilon_final, "must be in [0, 1]")
        if self.epsilon_decay_agent_steps is not None:
            _require(
                self.epsilon_decay_agent_steps >= 1,
                "epsilon_decay_agent_steps",
                self.epsilon_decay_agent_steps,
                "must be >= 1",
            )
        _require(self.steps_per_batch >= 1, "steps_per_batch", self.steps_per_batch, "must be >= 1")
        _require(self.max_inflight_batches >= 1, "max_inflight_batches", self.max_inflight_batches, "must be >= 1")
        _require(self.actor_threads >= 1, "actor_threads", self.actor_threads, "must be >= 1")
        _require(
            self.actor_precision in ("auto", "fp32", "bf16", "int8", "bf16-int8", "int8-static"),
            "actor_precision",
            self.actor_precision,
            "must be auto, fp32, bf16, int8, bf16-int8 or int8-static",
        )


@dataclasses.dataclass(frozen=True)
class ReplayConfig:
    replay_capacity: Optional[int] = _f(
        None, "transitions held in replay, FIFO (auto, both presets: 1,000,000 for Atari, 100,000 otherwise)"
    )
    replay_shards: Optional[int] = _f(
        1,
        "replay actors; actor i sends to shard i mod K and the learner samples shards in proportion to their sizes (auto: 1 on a CPU learner; on a GPU learner min(4, cores // 4), so that sampling keeps up with the GPU)",
    )
    snapshot_interval: float = _f(
        600.0,
        "seconds between replay snapshots in the run dir (also written at every checkpoint; a restarted replay and --resume start from them). 0: at checkpoints only; -1: never",
    )
    n_step: Optional[int] = _f(None, "n of the n-step return (auto: apex preset 3, nature 1)")
    prioritized: Optional[bool] = _f(None, "prioritized sampling (off: uniform) (auto: apex preset on, nature off)")
    priority_alpha: float = _f(0.6, "priority exponent alpha")
    priority_beta_start: float = _f(
        0.4, "importance-sampling exponent at the start; annealed linearly to 1 over the run"
    )
    learning_starts: Optional[int] = _f(
        None,
        "sampleable transitions in replay before the first update (auto, both presets: 50,000 for Atari, 1,000 otherwise)",
    )
    replay_ratio: Optional[float] = _f(
        None,
        "transitions trained on per transition inserted; whichever side runs ahead waits (Reverb's samples-per-insert). 0: off, actors run free as in Ape-X (auto: apex preset 0 for Atari, 8 otherwise; nature 8, its batch of 32 every 4 agent steps)",
    )
    replay_ratio_tolerance: Optional[float] = _f(
        None,
        "samples the ratio may drift before a side waits (auto: enough for every stream's message and the learner's prefetch)",
    )

    def __post_init__(self):
        if self.replay_capacity is not None:
            _require(self.replay_capacity >= 16, "replay_capacity", self.replay_capacity, "must be at least 16")
        if self.replay_shards is not None:
            _require(self.replay_shards >= 1, "replay_shards", self.replay_shards, "must be at least 1")
        _require(
            self.snapshot_interval >= 0 or self.snapshot_interval == -1,
            "snapshot_interval",
            self.snapshot_interval,
            "must be >= 0, or -1 for never",
        )
        if self.n_step is not None:
            _require(1 <= self.n_step <= 100, "n_step", self.n_step, "must be in 1..100")
        _require(0 <= self.priority_alpha <= 1, "priority_alpha", self.priority_alpha, "must be in [0, 1]")
        _require(
            0 <= self.priority_beta_start <= 1, "priority_beta_start", self.priority_beta_start, "must be in [0, 1]"
        )
        if self.learning_starts is not None:
            _require(self.learning_starts >= 1, "learning_starts", self.learning_starts, "must be at least 1")
        if self.replay_ratio is not None:
            _require(
                self.replay_ratio >= 0 and math.isfinite(self.replay_ratio),
                "replay_ratio",
                self.replay_ratio,
                "must be >= 0 (0: off)",
            )
        if self.replay_ratio_tolerance is not None:
            _require(
                self.replay_ratio_tolerance > 0, "replay_ratio_tolerance", self.replay_ratio_tolerance, "must be > 0"
            )


@dataclasses.dataclass(frozen=True)
class LearnerConfig:
    batch_size: Optional[int] = _f(
        None, "transitions per update (auto: apex preset 512 on a GPU, 64 on a CPU; nature 32)"
    )
    double_q: Optional[bool] = _f(
        None,
        "double-DQN target r + discount * Q_target(s', argmax Q_online(s')); off: Nature's r + discount * max Q_target(s') (auto: apex preset on, nature off)",
    )
    dueling: Optional[bool] = _f(
        None,
        "dueling head V + A - mean A; off: Nature's plain head, Linear-ReLU-Linear (auto: apex preset on, nature off)",
    )
    loss: str = _f(
        "huber",
        "TD loss: huber (delta 1: Nature's clipping of the error to [-1, 1]) or mse (td^2 / 2, unclipped)",
        choices=("huber", "mse"),
    )
    optimizer: Optional[str] = _f(
        None,
        "adam, or rmsprop: DeepMind's centred RMSProp, eps inside the square root (auto: apex preset adam, nature rmsprop)",
        choices=("adam", "rmsprop"),
    )
    lr: Optional[float] = _f(
        None,
        "learning rate (auto: Adam 1e-4 for Atari, 5e-4 otherwise; RMSProp the preset paper's: nature 0.00025, apex 0.00025/4)",
    )
    adam_eps: float = _f(1.5e-4, "Adam epsilon")
    rmsprop_decay: float = _f(
        0.95,
        "RMSProp's decay of its mean gradient and mean squared gradient (Nature's 'gradient momentum' and 'squared gradient momentum'; Ape-X's decay)",
    )
    rmsprop_eps: Optional[float] = _f(
        None,
        "RMSProp epsilon, added under the square root (auto: nature preset 0.01/32^2: Nature's 'min squared gradient' 0.01 was for the gradient summed over its batch of 32, ours is the batch mean; apex 1.5e-7)",
    )
    gamma: float = _f(0.99, "discount per agent step")
    grad_clip: Optional[float] = _f(
        None, "clip the gradient's global norm to this (0: off) (auto: apex preset 40, nature 0)"
    )
    target_update_period: Optional[int] = _f(
        None,
        "updates between target-network syncs (auto: apex preset 2,500 for Atari, 200 otherwise; nature 10,000 for Atari, 200 otherwise)",
    )
    publish_period: int = _f(50, "updates between weight broadcasts to the actors (one ray.put each)")
    checkpoint_period: int = _f(5_000, "updates between checkpoints")
    device: str = _f("auto", "torch device for the learner: auto (cuda when available), cpu, cuda, cuda:N")
    learner_threads: int = _f(
        0, "torch threads for a CPU learner (0: the cores left after the local actors and replay, at least 1)"
    )
    prefetch: int = _f(4, "sample requests kept in flight to the replay so the learner never waits on a round trip")
    feed: str = _f(
        "auto",
        "how samples reach the learner. mirror: each frame crosses once, into a copy of each replay shard's frames on the learner's device, and a sample is frame indices (kilobytes); stacked: each sample's stacks of frames through Ray (megabytes) (auto: mirror on a GPU whose free memory holds the replay's frames twice over, stacked elsewhere)",
        choices=("auto", "mirror", "stacked"),
    )
    precision: str = _f(
        "auto",
        "the forward passes in bf16 autocast, or fp32; weights, targets, TD errors and the loss stay fp32 either way (auto: bf16 on CUDA and on CPUs with native bf16, AVX-512 BF16 or AMX, where it measured 1.4x the updates/s at batch 32 and 1.75x at 64 (1 thread); fp32 elsewhere, where bf16 is emulated)",
        choices=("auto", "fp32", "bf16"),
    )
    tf32: Optional[bool] = _f(
        None,
        "TF32 matmuls and convolutions on CUDA, a 10-bit mantissa at several times fp32's speed (auto: on on CUDA; off on a CPU, where it does nothing)",
    )
    channels_last: Optional[bool] = _f(
        None,
        "NHWC frames and conv weights, the layout the convolution kernels prefer (auto: on on CUDA; off on a CPU, where it measured no faster: bf16 at batch 32 21.0 updates/s either way, at 64 13.0 vs 13.2)",
    )
    fused_optimizer: Optional[bool] = _f(
        None,
        "the optimizer over all tensors at once: Adam's fused kernel on CUDA, foreach on a CPU, RMSProp's foreach on both; off: torch's per-tensor loop (auto: on: the same arithmetic in fewer kernels)",
    )
    compile: Optional[bool] = _f(
        None,
        "torch.compile the forward passes and the loss at the first update (its time is logged); falls back to eager with one warning if it fails (auto: on on CUDA; off on a CPU, where compiling the Nature CNN's update took 2 to 9 minutes cold on 2 loaded cores and then ran -20%% to +13%% against eager bf16 at batch 32 and 64)",
    )
    joint_forward: bool = _f(
        False,
        "with --double-q, one online forward over s and s' together instead of two; off by default: the backward pass then also runs over s', extra work that pays only where kernel launches, not arithmetic, set the pace",
    )
    stats_period: Optional[int] = _f(
        None,
        "updates between reading loss and mean Q back from the device, each read a sync (0 or 1: every update) (auto: on CUDA the --publish-period, as each weight broadcast syncs anyway; 1 on a CPU, where a read costs nothing)",
    )

    def __post_init__(self):
        if self.batch_size is not None:
            _require(self.batch_size >= 1, "batch_size", self.batch_size, "must be at least 1")
        if self.lr is not None:
            _require(self.lr > 0 and math.isfinite(self.lr), "lr", self.lr, "must be a positive number")
        _require(self.adam_eps > 0, "adam_eps", self.adam_eps, "must be > 0")
        _require(self.loss in ("huber", "mse"), "loss", self.loss, "must be huber or mse")
        _require(self.optimizer in (None, "adam", "rmsprop"), "optimizer", self.optimizer, "must be adam or rmsprop")
        _require(0 <= self.rmsprop_decay < 1, "rmsprop_decay", self.rmsprop_decay, "must be in [0, 1)")
        if self.rmsprop_eps is not None:
            _require(self.rmsprop_eps > 0, "rmsprop_eps", self.rmsprop_eps, "must be > 0")
        _require(0 <= self.gamma <= 1, "gamma", self.gamma, "must be in [0, 1]")
        if self.grad_clip is not None:
            _require(self.grad_clip >= 0, "grad_clip", self.grad_clip, "must be >= 0")
        if self.target_update_period is not None:
            _require(
                self.target_update_period >= 1, "target_update_period", self.target_update_period, "must be at least 1"
            )
        _require(self.publish_period >= 1, "publish_period", self.publish_period, "must be at least 1")
        _require(self.checkpoint_period >= 1, "checkpoint_period", self.checkpoint_period, "must be at least 1")
        _require(
            self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda"),
            "device",
            self.device,
            "must be auto, cpu, cuda or cuda:N",
        )
        _require(self.learner_threads >= 0, "learner_threads", self.learner_threads, "must be >= 0")
        _require(self.prefetch >= 1, "prefetch", self.prefetch, "must be at least 1")
        _require(self.feed in ("auto", "mirror", "stacked"), "feed", self.feed, "must be auto, mirror or stacked")
        _require(self.precision in ("auto", "fp32", "bf16"), "precision", self.precision, "must be auto, fp32 or bf16")
        if self.stats_period is not None:
            _require(self.stats_period >= 0, "stats_period", self.stats_period, "must be >= 0")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    preset: str = _f(
        "apex",
        "the paper whose settings fill every 'auto' value; flags typed here still win. "
        "apex: Ape-X (Horgan et al. 2018) as this project runs it: double, dueling, n = 3, prioritized "
        "replay, Ape-X's per-stream eps, Adam. nature: Nature DQN (Mnih et al. 2015): plain CNN head, "
        "max target, n = 1, uniform replay of 1M, centred RMSProp lr 0.00025 decay 0.95 'min squared gradient' 0.01, "
        "batch 32 every 4 agent steps (replay ratio 8), target every 10K updates, learning from 50K, "
        "eps 1.0 -> 0.1 over 1M agent steps, Huber loss; evaluate it with --epsilon 0.05",
        choices=("apex", "nature"),
    )
    total_env_frames: int = _f(
        50_000_000, "stop after this many emulator frames (4 per agent step on Atari, 1 otherwise)"
    )
    total_learner_steps: int = _f(0, "stop after this many learner updates (0: no limit)")
    time_limit: float = _f(0.0, "stop after this many seconds of wall time (0: no limit)")
    run_dir: Optional[str] = _f(None, "directory for config, checkpoints, metrics (auto: runs/<env>-<time>)")
    resume: Optional[str] = _f(None, "continue the run in this directory from its last checkpoint")
    seed: int = _f(0, "seed for environments, exploration, replay sampling and network init")
    address: Optional[str] = _f(
        None, "Ray cluster to join ('auto' for the one this node belongs to); default: start a local Ray instance"
    )
    stop_return: Optional[float] = _f(
        None,
        "stop early once the mean raw score of the last 20 episodes of the least-exploring streams (eps <= 0.05) reaches this",
    )
    log_interval: float = _f(5.0, "seconds between progress lines and metrics.csv rows")
    placement_timeout: float = _f(
        600.0, "seconds to wait for a cluster's autoscaler to provide the CPUs the run needs before giving up"
    )
    num_cpus: Optional[int] = _f(None, "CPUs Ray may use when it starts a local instance (default: all)")
    pin_cpus: str = _f(
        "off",
        "on: a CPU learner on a local Ray instance keeps its own cores (the first --learner-threads), "
        "the actors, replay shards and evaluator run on the others, so they never preempt an update "
        "(Linux; ignored with --address, on a GPU, or when no core is left for the workers)",
        choices=("off", "on"),
    )

    def __post_init__(self):
        _require(self.pin_cpus in ("off", "on"), "pin_cpus", self.pin_cpus, "must be off or on")
        _require(self.preset in PRESETS, "preset", self.preset, f"must be one of {', '.join(PRESETS)}")
        _require(self.total_env_frames >= 1, "total_env_frames", self.total_env_frames, "must be at least 1")
        _require(self.total_learner_steps >= 0, "total_learner_steps", self.total_learner_steps, "must be >= 0")
        _require(self.time_limit >= 0, "time_limit", self.time_limit, "must be >= 0")
        _require(self.placement_timeout >= 0, "placement_timeout", self.placement_timeout, "must be >= 0")
        _require(self.log_interval > 0, "log_interval", self.log_interval, "must be > 0")
        if self.num_cpus is not None:
            _require(self.num_cpus >= 1, "num_cpus", self.num_cpus, "must be at least 1")
        # numpy's and torch's generators refuse negative seeds (only once Ray has started).
        _require(0 <= self.seed < 2**32, "seed", self.seed, "must be in 0..2^32-1")
        if self.stop_return is not None:
            _require(math.isfinite(self.stop_return), "stop_return", self.stop_return, "must be a finite score")


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    eval_period: Optional[int] = _f(
        None,
        "env frames between evaluations during training: a separate Ray actor plays --eval-episodes fresh whole games with the newest weights at --eval-epsilon, without feeding the replay; its score is the run's headline and what --stop-return judges. 0: no evaluation (auto, the same in both presets: 1,000,000 for Atari, 10,000 otherwise)",
    )
    eval_episodes: int = _f(10, "games per evaluation (played side by side, up to 8 at once)")
    eval_epsilon: Optional[float] = _f(
        None,
        "eps of evaluation play: a little randomness keeps a deterministic emulator from looping (auto: 0.001 as Rainbow/Dopamine with the apex preset; 0.05 as Nature DQN with the nature preset)",
    )

    def __post_init__(self):
        if self.eval_period is not None:
            _require(self.eval_period >= 0, "eval_period", self.eval_period, "must be >= 0 (0: no evaluation)")
        _require(self.eval_episodes >= 1, "eval_episodes", self.eval_episodes, "must be at least 1")
        if self.eval_epsilon is not None:
            _require(0 <= self.eval_epsilon <= 1, "eval_epsilon", self.eval_epsilon, "must be in [0, 1]")


@dataclasses.dataclass(frozen=True)
class Config:
    env: EnvConfig = dataclasses.field(default_factory=EnvConfig)
    actors: ActorConfig = dataclasses.field(default_factory=ActorConfig)
    replay: ReplayConfig = dataclasses.field(default_factory=ReplayConfig)
    learner: LearnerConfig = dataclasses.field(default_factory=LearnerConfig)
    run: RunConfig = dataclasses.field(default_factory=RunConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)

    def __post_init__(self):
        b, cap, starts = self.learner.batch_size, self.replay.replay_capacity, self.replay.learning_starts
        if b is not None and cap is not None:
            _require(b <= cap, "batch_size", b, f"larger than --replay-capacity={cap}")
        if starts is not None and cap is not None:
            _require(starts <= cap, "learning_starts", starts, f"larger than --replay-capacity={cap}")
        if b is not None and starts is not None:
            _require(b <= starts, "batch_size", b, f"larger than --learning-starts={starts}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        """Rebuild from ``to_dict`` output; ConfigError for unknown or missing sections."""
        if not isinstance(d, dict):
            raise ConfigError("config is not a JSON object")
        unknown_sections = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown_sections:
            raise ConfigError(f"config has unknown sections {sorted(unknown_sections)}")
        kwargs = {}
        for f in dataclasses.fields(cls):
            section = d.get(f.name, {})
            sub = get_type_hints(cls)[f.name]
            if not isinstance(section, dict):
                raise ConfigError(f"config section {f.name!r} is not an object")
            known = {g.name for g in dataclasses.fields(sub)}
            unknown = set(section) - known
            if unknown:
                raise ConfigError(f"config section {f.name!r} has unknown fields {sorted(unknown)}")
            try:
                kwargs[f.name] = sub(**section)
            except TypeError as e:
                raise ConfigError(f"config section {f.name!r}: {e}") from None
        return cls(**kwargs)


SECTIONS = {f.name: f.type for f in dataclasses.fields(Config)}


def _flag(field: dataclasses.Field) -> str:
    return field.metadata.get("flag") or "--" + field.name.replace("_", "-")


def _parse_bool(text: str) -> bool:
    low = text.lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def _parse_optional(inner):
    def parse(text: str):
        return None if text.lower() in ("none", "auto") else inner(text)

    parse.__name__ = inner.__name__
    return parse


_SCALARS = {"int": int, "float": float, "str": str, "bool": _parse_bool}


def _field_parser(field: dataclasses.Field, hint) -> Any:
    name = getattr(hint, "__name__", None)
    if name in _SCALARS:
        return _SCALARS[name]
    # Optional[X]
    args = [a for a in getattr(hint, "__args__", ()) if a is not type(None)]
    if len(args) == 1 and args[0] is str:
        return str  # "auto" is a real value for strings (e.g. --address auto)
    if len(args) == 1 and args[0].__name__ in _SCALARS:
        return _parse_optional(_SCALARS[args[0].__name__])
    raise TypeError(f"no parser for field {field.name}: {hint}")


def build_arg_parser(
    prog: str = "python -m learner.main", description: str = "", parser_class=argparse.ArgumentParser
) -> argparse.ArgumentParser:
    parser = parser_class(
        prog=prog, description=description, allow_abbrev=False, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    for section, cls in get_type_hints(Config).items():
        group = parser.add_argument_group(section)
        hints = get_type_hints(cls)
        for f in dataclasses.fields(cls):
            kwargs = dict(
                dest=f"{section}.{f.name}",
                type=_field_parser(f, hints[f.name]),
                default=f.default,
                help=f.metadata["help"],
                metavar=_flag(f)[2:].replace("-", "_").upper(),
            )
            if f.metadata.get("choices"):
                kwargs["choices"] = f.metadata["choices"]
                kwargs["metavar"] = "{" + ",".join(f.metadata["choices"]) + "}"
            group.add_argument(_flag(f), **kwargs)
    return parser


def config_from_args(ns: argparse.Namespace) -> Config:
    """Build a Config from parsed flags (ConfigError if a value is out of range)."""
    sections: dict[str, dict] = {s: {} for s in SECTIONS}
    for key, value in vars(ns).items():
        section, _, name = key.partition(".")
        if section in sections:
            sections[section][name] = value
    return Config(**{s: get_type_hints(Config)[s](**kw) for s, kw in sections.items()})


def explicit_overrides(parser: argparse.ArgumentParser, argv: list[str], ns: argparse.Namespace) -> dict[str, dict]:
    """The settings typed on the command line (not defaults), as {section: {field: value}}.

    A typed ``--preset`` also returns every field that preset fills and that was not typed
    as None (auto), so that a saved run's resolved values make way for the new preset's."""
    given = {a.split("=", 1)[0] for a in argv if a.startswith("--")}
    out: dict[str, dict] = {}
    for action in parser._actions:
        if "." in action.dest and any(o in given for o in action.option_strings):
            section, name = action.dest.split(".", 1)
            out.setdefault(section, {})[name] = getattr(ns, action.dest)
    if "preset" in out.get("run", {}):
        for section, fields in PRESETS[out["run"]["preset"]].items():
            for name in fields:
                out.setdefault(section, {}).setdefault(name, None)
    return out


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
    config = resolve_feed(config, cuda, frame_bytes, device_free_bytes, cores)
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


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX-512 BF16 or AMX-BF16 in Linux's
    /proc/cpuinfo flags). False where that cannot be read: bf16 emulated is slower than fp32."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return bool({"avx512_bf16", "amx_bf16"} & set(line.split(":", 1)[1].split()))
    except OSError:
        pass
    return False


def resolve_fast_paths(lc: LearnerConfig, cuda: bool) -> LearnerConfig:
    """The learner's fast paths left 'auto', for this device (LearnerConfig's help says why)."""
    auto = {
        "tf32": cuda,
        "channels_last": cuda,
        "fused_optimizer": True,
        "compile": cuda,
        "stats_period": lc.publish_period if cuda else 1,
    }
    filled = {name: value for name, value in auto.items() if getattr(lc, name) is None}
    if lc.precision == "auto":
        filled["precision"] = "bf16" if cuda or cpu_has_native_bf16() else "fp32"
    return dataclasses.replace(lc, **filled)


#: The largest share of the learner device's free memory a mirror of the replay's frames may take.
MIRROR_MEMORY_SHARE = 0.5


def resolve_feed(
    config: Config, cuda: bool, frame_bytes: int | None, device_free_bytes: int | None, cores: int | None
) -> Config:
    """``--feed`` and ``--replay-shards`` left auto, for the learner's device.

    The mirror feed sends each frame to the learner once and samples as indices
    (``learner/mirror.py``); it needs the whole replay's frames on the device. On a GPU
    that holds them within MIRROR_MEMORY_SHARE of its free memory (1M Atari frames are
    7 GB), the feed is the mirror; elsewhere (a CPU learner, whose RAM would hold the
    frames twice; a small GPU) stacked frames through Ray. A CPU learner gets one shard (it
    trains far slower than one shard samples); a GPU learner min(4, cores // 4), as one
    shard answers only so many calls a second (samples, priorities, inserts).
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
    shards = r.replay_shards
    if shards is None:
        shards = max(1, min(4, (cores or 1) // 4)) if cuda else 1
    return dataclasses.replace(
        config, replay=dataclasses.replace(r, replay_shards=shards), learner=dataclasses.replace(lc, feed=feed)
    )


def dumps(config: Config) -> str:
    return json.dumps(config.to_dict(), indent=2, sort_keys=True)
