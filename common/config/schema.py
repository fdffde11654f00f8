"""The config's schema: a frozen dataclass tree, each field's meaning and its valid values.

Each field's ``help`` metadata is its documentation and its command-line help (the flag is
the field name with dashes unless ``flag`` says otherwise); it says what the setting means,
never a measured figure (those are in docs/benchmarks.md). Values left as ``None`` (or
``"auto"``) are filled by ``common.config.resolve`` for the env and the machine; where a
preset fills a field, ``--help`` adds its values from the presets' table itself.

Each list of allowed values is defined once here, as a module constant used both by the
field's ``choices`` and by its ``__post_init__`` check. Validation raises
:class:`ConfigError`, whose text names the flag and the value, so the entry point can print
one line and exit 2.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional, get_type_hints

from common.config.fields import (
    ACTOR_PRECISIONS,
    EPSILON_SCHEDULES,
    MAX_SEED,
    PIN_CPUS,
    PRESET_NAMES,
    RECORD_KEY,
    ConfigError,
    _f,
    _require,
    _require_choice,
)
from common.config.hardware import DEFAULT_ENVS_PER_ACTOR
from common.config.learner_schema import LearnerConfig


@dataclasses.dataclass(frozen=True)
class EnvConfig:
    env_id: str = _f(
        "ALE/Breakout-v5",
        "environment: any ALE game id (ALE/Pong-v5, ...) or a gymnasium id with a flat vector observation (CartPole-v1)",
        flag="--env",
    )
    envs_per_actor: Optional[int] = _f(
        None,
        "environments stepped together by each actor, one batched forward pass per step: more envs spread the "
        "network's cost over more steps and lengthen each step (docs/benchmarks.md measures the trade) "
        f"(auto: {DEFAULT_ENVS_PER_ACTOR}; fewer when the actors outnumber the cores, so that they start in seconds)",
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
        if self.envs_per_actor is not None:
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
        "exploration: 'apex' gives stream i of N a fixed eps = base^(1 + alpha*i/(N-1)); 'linear' decays every stream from 1.0 to --epsilon-final",
        choices=EPSILON_SCHEDULES,
    )
    epsilon_base: float = _f(0.4, "Ape-X eps base")
    epsilon_alpha: float = _f(7.0, "Ape-X eps exponent spread")
    epsilon_final: Optional[float] = _f(None, "final eps of the linear schedule")
    epsilon_decay_agent_steps: Optional[int] = _f(
        None, "agent steps (all streams together) over which the linear schedule decays"
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
        "number format of the actors' acting network: int8-static (the Nature CNN in int8 throughout, activation "
        "scales calibrated on the actor's own states, output layers fp32; new weights converted on a thread), bf16 "
        "(convolutions and the 3136x512 layers in bf16, output layers fp32), int8 (the 3136x512 layers dynamically "
        "quantized), bf16-int8 (both), fp32 (auto: the fastest this CPU runs, in this order: int8-static for Atari "
        "where torch has its x86 int8 engine; bf16 on CPUs with native bf16 (AVX-512 BF16 or AMX); int8 where torch "
        "has a quantized engine; else fp32; each actor decides on its own CPU and reports it at start)",
        choices=ACTOR_PRECISIONS,
    )

    def __post_init__(self):
        _require(self.num_actors >= 1, "num_actors", self.num_actors, "must be at least 1")
        _require(0 < self.epsilon_base <= 1, "epsilon_base", self.epsilon_base, "must be in (0, 1]")
        _require(self.epsilon_alpha >= 0, "epsilon_alpha", self.epsilon_alpha, "must be >= 0")
        _require_choice("epsilon_schedule", self.epsilon_schedule, EPSILON_SCHEDULES, auto_none=True)
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
        _require_choice("actor_precision", self.actor_precision, ACTOR_PRECISIONS)


@dataclasses.dataclass(frozen=True)
class ReplayConfig:
    replay_capacity: Optional[int] = _f(None, "transitions held in replay, FIFO")
    replay_shards: Optional[int] = _f(
        1,
        "replay actors; actor i sends to shard i mod K and the learner samples shards in proportion to their sizes (auto: 1 on a CPU learner; on a GPU learner as many as the cores the actors leave, at most 4 and cores // 4, so that sampling keeps up with the GPU; kept on --resume, as the replay's snapshots hold its layout)",
    )
    snapshot_interval: float = _f(
        600.0,
        "seconds between replay snapshots in the run dir (also written at every checkpoint; a restarted replay and --resume start from them). 0: at checkpoints only; -1: never",
    )
    n_step: Optional[int] = _f(None, "n of the n-step return")
    prioritized: Optional[bool] = _f(None, "prioritized sampling (off: uniform)")
    priority_alpha: Optional[float] = _f(None, "priority exponent alpha")
    priority_beta_start: float = _f(
        0.4, "importance-sampling exponent at the start; annealed linearly to 1 over the run"
    )
    learning_starts: Optional[int] = _f(None, "sampleable transitions in replay before the first update")
    replay_ratio: Optional[float] = _f(
        None,
        "transitions trained on per transition inserted; whichever side runs ahead waits (Reverb's samples-per-insert). 0: off, actors run free as in Ape-X; nature's 8 is its batch of 32 every 4 agent steps",
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
        if self.priority_alpha is not None:
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
class RunConfig:
    preset: str = _f(
        "apex",
        "the paper whose settings fill every 'auto' value; flags typed here still win. "
        "apex: Ape-X (Horgan et al. 2018) as this project runs it: double, dueling, n = 3, prioritized "
        "replay, Ape-X's per-stream eps, Adam. nature: Nature DQN (Mnih et al. 2015): plain CNN head, "
        "max target, n = 1, uniform replay of 1M, centred RMSProp lr 0.00025 decay 0.95 'min squared gradient' 0.01, "
        "batch 32 every 4 agent steps (replay ratio 8), target every 10K updates, learning from 50K, "
        "eps 1.0 -> 0.1 over 1M agent steps, Huber loss; evaluate it with --epsilon 0.05. "
        "rainbow: Rainbow (Hessel et al. 2018): C51 on 51 atoms, noisy nets (eps 0), dueling, double, n = 3, "
        "prioritized replay alpha 0.5, Adam 6.25e-5. iqn: IQN (Dabney et al. 2018) as Dopamine runs it: "
        "N = N' = 64, K = 32, n = 3, uniform replay. btr: Beyond The Rainbow (Clark et al. 2024): IQN, Munchausen, "
        "the IMPALA CNN x2 with spectral norm, dueling, noisy nets, gamma 0.997, batch 256 (Atari). "
        "The README's Presets section sets each against its paper",
        choices=PRESET_NAMES,
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
        "(on a GPU learner, the update's and the feeder's threads keep two cores) "
        "(Linux; ignored with --address, or when no core is left for the workers)",
        choices=PIN_CPUS,
    )

    def __post_init__(self):
        _require_choice("pin_cpus", self.pin_cpus, PIN_CPUS)
        _require_choice("preset", self.preset, PRESET_NAMES)
        _require(self.total_env_frames >= 1, "total_env_frames", self.total_env_frames, "must be at least 1")
        _require(self.total_learner_steps >= 0, "total_learner_steps", self.total_learner_steps, "must be >= 0")
        _require(self.time_limit >= 0, "time_limit", self.time_limit, "must be >= 0")
        _require(self.placement_timeout >= 0, "placement_timeout", self.placement_timeout, "must be >= 0")
        _require(self.log_interval > 0, "log_interval", self.log_interval, "must be > 0")
        if self.num_cpus is not None:
            _require(self.num_cpus >= 1, "num_cpus", self.num_cpus, "must be at least 1")
        _require(0 <= self.seed <= MAX_SEED, "seed", self.seed, f"must be in 0..{MAX_SEED}")
        if self.stop_return is not None:
            _require(math.isfinite(self.stop_return), "stop_return", self.stop_return, "must be a finite score")


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    eval_period: Optional[int] = _f(
        None,
        "env frames between evaluations during training: a separate Ray actor plays --eval-episodes fresh whole games with the newest weights at --eval-epsilon, without feeding the replay; its score is the run's headline and what --stop-return judges. 0: no evaluation",
    )
    eval_episodes: int = _f(10, "games per evaluation (played side by side, up to 8 at once)")
    eval_epsilon: Optional[float] = _f(
        None,
        "eps of evaluation play: a little randomness keeps a deterministic emulator from looping (apex: Rainbow's and Dopamine's; nature: Nature DQN's)",
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
        """Rebuild from ``to_dict`` output (or a config.json, whose RECORD_KEY is passed
        over); ConfigError for unknown or missing sections."""
        if not isinstance(d, dict):
            raise ConfigError("config is not a JSON object")
        unknown_sections = set(d) - {f.name for f in dataclasses.fields(cls)} - {RECORD_KEY}
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
