"""Entry point: ``python -m learner.main --num-actors 16``.

Everything that can be wrong with the input (a flag, the game, the run directory, the
checkpoint to resume) is checked before Ray starts or anything is written; it ends in one
line on stderr and exit code 2, and leaves the run directory as it was. Then the parts are
wired (:func:`build_trainer`): the config tree is resolved here and handed down as plain
values.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

from common.cli import OneLineParser, UsageError, report_usage_error
from common.config import (
    DEFAULT_ENVS_PER_ACTOR,
    Config,
    ConfigError,
    Machine,
    auto_fields,
    build_arg_parser,
    config_from_args,
    core_plan,
    dumps,
    explicit_overrides,
    is_cuda,
    make_record,
    pick_device,
    re_resolve,
    record_of,
    resolve,
)
from common.config.record import carry_auto
from learner.ray_setup import RAY_PROBE_TIMEOUT_S, check_ray_address  # noqa: F401  (the probe lives there)

DESCRIPTION = (
    "Train a distributed DQN (Ape-X family) on an Atari game or a flat-vector gymnasium env. "
    "Starts a local Ray instance unless --address names a cluster. Values shown as None are "
    "'auto': filled for the env and device, and recorded in the run's config.json."
)


def parse(argv: list[str]) -> tuple[Config, Path | None]:
    """The requested config (before 'auto' values are resolved) and the run to resume."""
    cfg, run_dir, _, _ = parse_resume(argv)
    return cfg, run_dir


def parse_resume(argv: list[str]) -> tuple[Config, Path | None, dict | None, dict]:
    """:func:`parse`, and for a resumed run its config.json's resolution record (None for an
    earlier version's) and the flags typed now ({section: {field: value}})."""
    parser = build_arg_parser(description=DESCRIPTION, parser_class=OneLineParser)
    ns = parser.parse_args(argv)
    resume = getattr(ns, "run.resume")
    if resume is None:
        return config_from_args(ns), None, None, {}
    run_dir = Path(resume)
    cfg_path = run_dir / "config.json"
    if not run_dir.exists():
        raise UsageError(f"--resume {resume}: no such directory")
    if not run_dir.is_dir():
        raise UsageError(f"--resume {resume}: is a file, not a run directory")
    if not cfg_path.is_file():
        raise UsageError(f"--resume {resume}: no config.json there (not a run directory)")
    try:
        saved = json.loads(cfg_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UsageError(f"--resume {resume}: unreadable config.json ({e})") from None
    record = record_of(saved)
    try:
        saved = Config.from_dict(saved).to_dict()
    except ConfigError as e:  # another version's config, or one edited by hand
        raise UsageError(f"--resume {resume}: config.json does not fit this version: {e}") from None
    # Flags typed now override the saved run's settings (more frames, another time limit...).
    typed = explicit_overrides(parser, argv, ns)
    for section, values in typed.items():
        saved[section].update(values)
    saved["run"]["resume"] = str(run_dir)
    saved["run"]["run_dir"] = str(run_dir)
    return Config.from_dict(saved), run_dir, record, typed


class Prepared(NamedTuple):
    """What :func:`prepare` found: the resolved config, where it runs, the env, the
    checkpoint to resume, and how the config was resolved (config.json's record, the core
    plan, the lines that say what was decided for this machine)."""

    cfg: Config
    run_dir: Path
    spec: Any
    payload: dict | None
    record: dict
    lines: list[str]


def resolve_here(cfg: Config, spec, resume_dir: Path | None, record: dict | None, typed: dict):
    """The config resolved for this machine (a resumed run's auto fields again, for it):
    (config, config.json's record, the lines to print at start)."""
    cuda = is_cuda(cfg.learner.device)
    machine = Machine(cuda, **device_facts(cfg.learner.device, spec, cuda))
    if resume_dir is None:
        auto, changes = auto_fields(cfg), []
    else:
        auto = carry_auto(record, typed)
        cfg, changes = re_resolve(cfg, record, typed, spec.atari, machine)
    cfg = resolve(cfg, atari=spec.atari, cuda=cuda, **machine.facts())
    envs_auto = "envs_per_actor" in auto.get("env", ())
    plan = core_plan(cfg, cuda, machine.cores or 1, auto_envs=envs_auto) if cfg.run.address is None else None
    lines = [plan.line()] if plan is not None else []
    if plan is not None and plan.envs_sized:
        lines.append(
            f"{plan.actors} actors on {plan.cores} cores: {plan.envs_per_actor} envs per actor instead of "
            f"{DEFAULT_ENVS_PER_ACTOR}, so that they start in seconds (--envs-per-actor sets it)"
        )
    if changes:
        lines.append(f"resumed on {machine.words()}: 'auto' settings resolved again: {', '.join(changes)}")
    return cfg, make_record(auto, machine, plan), lines


def prepare(argv: list[str]):
    """Parse, resolve and check everything (:class:`Prepared`)."""
    import torch

    from common.envs import EnvSpecError, describe_env
    from common.networks import signature_for
    from learner.checkpoint import CheckpointError, checkpoint_path, load_checkpoint

    try:
        cfg, resume_dir, record, typed = parse_resume(argv)
        spec = describe_env(cfg.env.env_id, full_action_space=cfg.env.full_action_space)
        if is_cuda(cfg.learner.device) and not torch.cuda.is_available():
            raise ConfigError(f"--device={cfg.learner.device}: no CUDA device is available to torch")
        cfg, record, lines = resolve_here(cfg, spec, resume_dir, record, typed)
        payload = None
        if resume_dir is not None:
            payload = load_checkpoint(checkpoint_path(resume_dir), signature_for(spec, cfg.learner))
            run_dir = resume_dir
        else:
            run_dir = Path(
                cfg.run.run_dir or f"runs/{cfg.env.env_id.replace('/', '_')}-{time.strftime('%Y%m%d-%H%M%S')}"
            )
            check_new_run_dir(run_dir)
            cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, run_dir=str(run_dir)))
        check_ray_address(cfg.run.address)
    except (ConfigError, EnvSpecError, CheckpointError) as e:
        raise UsageError(str(e)) from None
    return Prepared(cfg, run_dir, spec, payload, record, lines)


def check_new_run_dir(run_dir: Path) -> None:
    """UsageError unless a new run can be written in ``run_dir`` (it may exist, empty or not)."""
    if run_dir.exists() and not run_dir.is_dir():
        raise UsageError(f"--run-dir {run_dir}: is a file, not a directory")
    if (run_dir / "config.json").exists() or (run_dir / "checkpoint.pt").exists():
        raise UsageError(
            f"--run-dir {run_dir}: already holds a run; use --resume {run_dir} to continue it or pick another directory"
        )
    existing = run_dir
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"--run-dir {run_dir}: {existing} is a file, not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"--run-dir {run_dir}: {existing} is not writable")


class RunDirUndo:
    """What ``run_dir`` held before the run started writing (its paths, config.json's
    bytes), so that a run that never got going (a PlacementError) can leave it as it was."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.existed = run_dir.is_dir()
        self.paths = set(run_dir.rglob("*")) if self.existed else set()
        config = run_dir / "config.json"
        self.config = config.read_bytes() if config.is_file() else None

    def restore(self) -> None:
        try:
            for path in sorted(set(self.run_dir.rglob("*")) - self.paths, key=lambda p: len(p.parts), reverse=True):
                path.rmdir() if path.is_dir() else path.unlink()
            if self.config is not None:
                (self.run_dir / "config.json").write_bytes(self.config)
            if not self.existed:
                self.run_dir.rmdir()
        except OSError as e:
            logging.getLogger("raydqn").warning("could not restore %s: %s", self.run_dir, e)


def device_facts(device: str, spec, cuda: bool) -> dict:
    """What ``resolve`` needs to choose the feed and the shards: one frame's bytes, the
    learner device's free memory (None on a CPU) and this node's cores."""
    import math
    import os

    import numpy as np
    import torch

    free = None
    if cuda:
        free = torch.cuda.mem_get_info(pick_device(device))[0]
    return {
        "frame_bytes": math.prod(spec.frame_shape) * np.dtype(spec.frame_dtype).itemsize,
        "device_free_bytes": free,
        "cores": os.cpu_count(),
    }


def build_trainer(cfg: Config, run_dir: Path, spec, payload: dict | None):
    """The wiring: a learner on its device, the Ray fleet, the run log, the counters."""
    import torch

    from common.config import cpu_learner_threads
    from common.memory import hold_freed_memory
    from common.networks import signature_for
    from learner.dqn import build_learner
    from learner.fleet import Fleet
    from learner.run_log import RunLog
    from learner.trainer import Counters, Trainer

    hold_freed_memory()  # each update reuses the last one's freed blocks (common/memory.py)
    device = pick_device(cfg.learner.device)
    if not is_cuda(device):
        torch.set_num_threads(cpu_learner_threads(cfg))
    torch.manual_seed(cfg.run.seed)
    learner = build_learner(cfg, spec, device)
    if payload:
        from learner.checkpoint import CheckpointError, checkpoint_path

        try:
            learner.load_state_dict(payload["learner"])
            counters = Counters(payload["counters"])
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise CheckpointError(
                f"{checkpoint_path(run_dir)}: its state does not fit this network ({type(e).__name__}: {first})"
            ) from None
    else:
        counters = Counters(None)
    return Trainer(
        cfg, run_dir, learner, Fleet(cfg, spec, run_dir), RunLog(run_dir), counters, signature_for(spec, cfg.learner)
    )


def pace(cfg: Config) -> str:
    """Who sets the pace, in a few words for the first line."""
    r = cfg.replay.replay_ratio
    if r:
        return f"{r:g} samples trained per transition (the side that runs ahead waits)"
    return "actors run free (Ape-X's setting, for a GPU learner)"


def announce(cfg: Config, run_dir: Path, resumed: bool, lines: list[str]) -> None:
    """The run's first lines: what runs where, the core plan and what was decided for this machine."""
    print(
        f"raydqn: {cfg.env.env_id}, {cfg.actors.num_actors} actors x {cfg.env.envs_per_actor} envs, "
        f"batch {cfg.learner.batch_size}, {pace(cfg)}, run dir {run_dir}" + (" (resumed)" if resumed else ""),
        flush=True,
    )
    for line in lines:
        print(line, flush=True)
    if cfg.actors.epsilon_schedule == "apex" and cfg.actors.num_actors * cfg.env.envs_per_actor == 1:
        print(
            f"one env stream: Ape-X's per-stream eps is then a fixed {cfg.actors.epsilon_base:g} for the whole run; "
            f"--epsilon-schedule linear decays it from 1.0 to --epsilon-final instead",
            flush=True,
        )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg, run_dir, spec, payload, record, lines = prepare(argv)
    except UsageError as e:
        return report_usage_error(e)
    except SystemExit as e:  # the parser printed its one line (or --help)
        return int(e.code or 0)
    undo = RunDirUndo(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(dumps(cfg, record))
    from learner.fleet import PlacementError

    announce(cfg, run_dir, payload is not None, lines)
    niceness = (record.get("core_plan") or {}).get("worker_niceness")
    if niceness:  # before Ray starts (learner/fleet.py leaves a value set here)
        os.environ.setdefault("RAY_worker_niceness", str(niceness))
    from learner.checkpoint import CheckpointError

    try:
        trainer = build_trainer(cfg, run_dir, spec, payload)
    except CheckpointError as e:
        undo.restore()
        return report_usage_error(e)
    try:
        summary = trainer.run()
    except PlacementError as e:
        undo.restore()  # nothing ran: the run dir goes back to how the user left it
        return report_usage_error(e)
    print(
        json.dumps(
            {
                k: summary.get(k)
                for k in (
                    "env_frames",
                    "agent_steps",
                    "learner_steps",
                    "episodes",
                    "mean_return_100",
                    "wall_s",
                    "stop_reason",
                )
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
