"""The one typed config: a frozen dataclass tree whose field help becomes ``--help``.

Each field's ``help`` metadata is its documentation and its command-line help. Flags are
the field names with dashes (``--num-actors``) unless ``flag`` says otherwise. Values left
as ``None`` are "auto" and are filled by :func:`resolve` once the environment kind (Atari
or flat vector) and the device are known; ``config.json`` always records resolved values.

Validation happens in ``__post_init__`` and raises :class:`ConfigError` whose text names
the field and the value, so the entry point can print one line and exit 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from typing import Any, Optional, get_type_hints


class ConfigError(ValueError):
    """A setting that cannot work. The message names the field and the value."""


def _f(default, help: str, flag: str | None = None, choices: tuple | None = None):
    return dataclasses.field(default=default, metadata={"help": help, "flag": flag, "choices": choices})


def _require(cond: bool, field: str, value: Any, why: str) -> None:
    if not cond:
        raise ConfigError(f"--{field.replace('_', '-')}={value}: {why}")


@dataclasses.dataclass(frozen=True)
class EnvConfig:
    env_id: str = _f("ALE/Breakout-v5", "environment: any ALE game id (ALE/Pong-v5, ...) or a gymnasium id with a flat vector observation (CartPole-v1)", flag="--env")
    envs_per_actor: int = _f(8, "environments stepped together by each actor (one batched forward pass per step)")
    episodic_life: Optional[bool] = _f(None, "treat a lost life as terminal for learning (auto: on for games with lives)")
    noop_max: int = _f(30, "up to this many no-op actions at the start of each episode")
    max_episode_frames: int = _f(108_000, "truncate an Atari episode after this many emulator frames")

    def __post_init__(self):
        _require(isinstance(self.env_id, str) and self.env_id != "", "env", self.env_id, "must name an environment")
        _require(self.envs_per_actor >= 1, "envs_per_actor", self.envs_per_actor, "must be at least 1")
        _require(self.noop_max >= 0, "noop_max", self.noop_max, "must be >= 0")
        _require(self.max_episode_frames >= 4, "max_episode_frames", self.max_episode_frames, "must be at least 4")


@dataclasses.dataclass(frozen=True)
class ActorConfig:
    num_actors: int = _f(2, "Ray actors stepping environments on CPUs")
    epsilon_schedule: str = _f("apex", "exploration: 'apex' gives stream i of N a fixed eps = base^(1 + alpha*i/(N-1)); 'linear' decays every stream from 1.0 to --epsilon-final", choices=("apex", "linear"))
    epsilon_base: float = _f(0.4, "Ape-X eps base")
    epsilon_alpha: float = _f(7.0, "Ape-X eps exponent spread")
    epsilon_final: float = _f(0.01, "final eps of the linear schedule")
    epsilon_decay_agent_steps: int = _f(250_000, "agent steps (all streams together) over which the linear schedule decays")
    actor_priorities: bool = _f(True, "actors compute each transition's initial priority from their own Q-values, as in Ape-X (off: new items get the replay's running max priority)")
    steps_per_batch: int = _f(64, "records of one env stream sent to the replay in one message")
    max_inflight_batches: int = _f(4, "messages an actor may have in flight to the replay before it waits (back-pressure)")
    actor_threads: int = _f(1, "torch threads per actor for the eps-greedy forward pass")

    def __post_init__(self):
        _require(self.num_actors >= 1, "num_actors", self.num_actors, "must be at least 1")
        _require(0 < self.epsilon_base <= 1, "epsilon_base", self.epsilon_base, "must be in (0, 1]")
        _require(self.epsilon_alpha >= 0, "epsilon_alpha", self.epsilon_alpha, "must be >= 0")
        _require(0 <= self.epsilon_final <= 1, "epsilon_final", self.epsilon_final, "must be in [0, 1]")
        _require(self.epsilon_decay_agent_steps >= 1, "epsilon_decay_agent_steps", self.epsilon_decay_agent_steps, "must be >= 1")
        _require(self.steps_per_batch >= 1, "steps_per_batch", self.steps_per_batch, "must be >= 1")
        _require(self.max_inflight_batches >= 1, "max_inflight_batches", self.max_inflight_batches, "must be >= 1")
        _require(self.actor_threads >= 1, "actor_threads", self.actor_threads, "must be >= 1")


@dataclasses.dataclass(frozen=True)
class ReplayConfig:
    replay_capacity: Optional[int] = _f(None, "transitions held in replay, FIFO (auto: 1,000,000 for Atari, 100,000 otherwise)")
    replay_shards: int = _f(1, "replay actors; actor i sends to shard i mod K and the learner samples shards in proportion to their sizes")
    snapshot_interval: float = _f(600.0, "seconds between replay snapshots in the run dir (also written at every checkpoint; a restarted replay and --resume start from them). 0: at checkpoints only; -1: never")
    n_step: int = _f(3, "n of the n-step return")
    prioritized: bool = _f(True, "prioritized sampling (off: uniform)")
    priority_alpha: float = _f(0.6, "priority exponent alpha")
    priority_beta_start: float = _f(0.4, "importance-sampling exponent at the start; annealed linearly to 1 over the run")
    learning_starts: Optional[int] = _f(None, "sampleable transitions in replay before the first update (auto: 50,000 for Atari, 1,000 otherwise)")
    replay_ratio: Optional[float] = _f(None, "transitions trained on per transition inserted; whichever side runs ahead waits (Reverb's samples-per-insert). 0: off, actors run free as in Ape-X (auto: 0 for Atari, 8 otherwise)")
    replay_ratio_tolerance: Optional[float] = _f(None, "samples the ratio may drift before a side waits (auto: enough for every stream's message and the learner's prefetch)")

    def __post_init__(self):
        if self.replay_capacity is not None:
            _require(self.replay_capacity >= 16, "replay_capacity", self.replay_capacity, "must be at least 16")
        _require(self.replay_shards >= 1, "replay_shards", self.replay_shards, "must be at least 1")
        _require(self.snapshot_interval >= 0 or self.snapshot_interval == -1, "snapshot_interval", self.snapshot_interval, "must be >= 0, or -1 for never")
        _require(1 <= self.n_step <= 100, "n_step", self.n_step, "must be in 1..100")
        _require(0 <= self.priority_alpha <= 1, "priority_alpha", self.priority_alpha, "must be in [0, 1]")
        _require(0 <= self.priority_beta_start <= 1, "priority_beta_start", self.priority_beta_start, "must be in [0, 1]")
        if self.learning_starts is not None:
            _require(self.learning_starts >= 1, "learning_starts", self.learning_starts, "must be at least 1")
        if self.replay_ratio is not None:
            _require(self.replay_ratio >= 0 and math.isfinite(self.replay_ratio), "replay_ratio", self.replay_ratio, "must be >= 0 (0: off)")
        if self.replay_ratio_tolerance is not None:
            _require(self.replay_ratio_tolerance > 0, "replay_ratio_tolerance", self.replay_ratio_tolerance, "must be > 0")


@dataclasses.dataclass(frozen=True)
class LearnerConfig:
    batch_size: Optional[int] = _f(None, "transitions per update (auto: 512 on a GPU, 64 on a CPU)")
    lr: Optional[float] = _f(None, "Adam learning rate (auto: 1e-4 for Atari, 5e-4 otherwise)")
    adam_eps: float = _f(1.5e-4, "Adam epsilon")
    gamma: float = _f(0.99, "discount per agent step")
    grad_clip: float = _f(40.0, "clip the gradient's global norm to this (0: off)")
    target_update_period: Optional[int] = _f(None, "updates between target-network syncs (auto: 2,500 for Atari, 200 otherwise)")
    publish_period: int = _f(50, "updates between weight broadcasts to the actors (one ray.put each)")
    checkpoint_period: int = _f(5_000, "updates between checkpoints")
    device: str = _f("auto", "torch device for the learner: auto (cuda when available), cpu, cuda, cuda:N")
    learner_threads: int = _f(0, "torch threads for a CPU learner (0: the cores left after the local actors and replay, at least 1)")
    prefetch: int = _f(4, "sample requests kept in flight to the replay so the learner never waits on a round trip")

    def __post_init__(self):
        if self.batch_size is not None:
            _require(self.batch_size >= 1, "batch_size", self.batch_size, "must be at least 1")
        if self.lr is not None:
            _require(self.lr > 0 and math.isfinite(self.lr), "lr", self.lr, "must be a positive number")
        _require(self.adam_eps > 0, "adam_eps", self.adam_eps, "must be > 0")
        _require(0 <= self.gamma <= 1, "gamma", self.gamma, "must be in [0, 1]")
        _require(self.grad_clip >= 0, "grad_clip", self.grad_clip, "must be >= 0")
        if self.target_update_period is not None:
            _require(self.target_update_period >= 1, "target_update_period", self.target_update_period, "must be at least 1")
        _require(self.publish_period >= 1, "publish_period", self.publish_period, "must be at least 1")
        _require(self.checkpoint_period >= 1, "checkpoint_period", self.checkpoint_period, "must be at least 1")
        _require(self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda"), "device", self.device, "must be auto, cpu, cuda or cuda:N")
        _require(self.learner_threads >= 0, "learner_threads", self.learner_threads, "must be >= 0")
        _require(self.prefetch >= 1, "prefetch", self.prefetch, "must be at least 1")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    total_env_frames: int = _f(50_000_000, "stop after this many emulator frames (4 per agent step on Atari, 1 otherwise)")
    total_learner_steps: int = _f(0, "stop after this many learner updates (0: no limit)")
    time_limit: float = _f(0.0, "stop after this many seconds of wall time (0: no limit)")
    run_dir: Optional[str] = _f(None, "directory for config, checkpoints, metrics (auto: runs/<env>-<time>)")
    resume: Optional[str] = _f(None, "continue the run in this directory from its last checkpoint")
    seed: int = _f(0, "seed for environments, exploration, replay sampling and network init")
    address: Optional[str] = _f(None, "Ray cluster to join ('auto' for the one this node belongs to); default: start a local Ray instance")
    stop_return: Optional[float] = _f(None, "stop early once the mean raw score of the last 20 episodes of the least-exploring streams (eps <= 0.05) reaches this")
    log_interval: float = _f(5.0, "seconds between progress lines and metrics.csv rows")
    placement_timeout: float = _f(600.0, "seconds to wait for a cluster's autoscaler to provide the CPUs the run needs before giving up")
    num_cpus: Optional[int] = _f(None, "CPUs Ray may use when it starts a local instance (default: all)")

    def __post_init__(self):
        _require(self.total_env_frames >= 1, "total_env_frames", self.total_env_frames, "must be at least 1")
        _require(self.total_learner_steps >= 0, "total_learner_steps", self.total_learner_steps, "must be >= 0")
        _require(self.time_limit >= 0, "time_limit", self.time_limit, "must be >= 0")
        _require(self.placement_timeout >= 0, "placement_timeout", self.placement_timeout, "must be >= 0")
        _require(self.log_interval > 0, "log_interval", self.log_interval, "must be > 0")
        if self.num_cpus is not None:
            _require(self.num_cpus >= 1, "num_cpus", self.num_cpus, "must be at least 1")


@dataclasses.dataclass(frozen=True)
class Config:
    env: EnvConfig = dataclasses.field(default_factory=EnvConfig)
    actors: ActorConfig = dataclasses.field(default_factory=ActorConfig)
    replay: ReplayConfig = dataclasses.field(default_factory=ReplayConfig)
    learner: LearnerConfig = dataclasses.field(default_factory=LearnerConfig)
    run: RunConfig = dataclasses.field(default_factory=RunConfig)

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


def build_arg_parser(prog: str = "python -m learner.main", description: str = "", parser_class=argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser = parser_class(prog=prog, description=description, allow_abbrev=False, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for section, cls in get_type_hints(Config).items():
        group = parser.add_argument_group(section)
        hints = get_type_hints(cls)
        for f in dataclasses.fields(cls):
            kwargs = dict(dest=f"{section}.{f.name}", type=_field_parser(f, hints[f.name]), default=f.default,
                          help=f.metadata["help"], metavar=_flag(f)[2:].replace("-", "_").upper())
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
    """The settings typed on the command line (not defaults), as {section: {field: value}}."""
    given = {a.split("=", 1)[0] for a in argv if a.startswith("--")}
    out: dict[str, dict] = {}
    for action in parser._actions:
        if "." in action.dest and any(o in given for o in action.option_strings):
            section, name = action.dest.split(".", 1)
            out.setdefault(section, {})[name] = getattr(ns, action.dest)
    return out


def resolve(config: Config, atari: bool, cuda: bool) -> Config:
    """Fill the 'auto' (None) values for this environment kind and device."""
    r, l = config.replay, config.learner
    batch_size = l.batch_size if l.batch_size is not None else (512 if cuda else 64)
    ratio = r.replay_ratio if r.replay_ratio is not None else (0.0 if atari else 8.0)
    a = config.actors
    streams = a.num_actors * config.env.envs_per_actor
    tolerance = r.replay_ratio_tolerance
    if tolerance is None:
        # Room for one message from every stream and the learner's requests in flight, so
        # neither side stalls on the other's granularity; the long-run ratio stays exact.
        tolerance = max(ratio * a.steps_per_batch * streams, 2.0 * batch_size * l.prefetch)
    replay = dataclasses.replace(
        r,
        replay_capacity=r.replay_capacity if r.replay_capacity is not None else (1_000_000 if atari else 100_000),
        learning_starts=r.learning_starts if r.learning_starts is not None else (50_000 if atari else 1_000),
        replay_ratio=ratio,
        replay_ratio_tolerance=float(tolerance),
    )
    if ratio:
        _require(tolerance >= max(ratio, batch_size), "replay_ratio_tolerance", tolerance,
                 f"must be at least --replay-ratio={ratio} and --batch-size={batch_size}, or a side could wait forever")
    learner = dataclasses.replace(
        l,
        batch_size=batch_size,
        lr=l.lr if l.lr is not None else (1e-4 if atari else 5e-4),
        target_update_period=l.target_update_period if l.target_update_period is not None else (2_500 if atari else 200),
    )
    return dataclasses.replace(config, replay=replay, learner=learner)


def dumps(config: Config) -> str:
    return json.dumps(config.to_dict(), indent=2, sort_keys=True)
