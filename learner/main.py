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
import sys
import time
from pathlib import Path

from common.cli import USAGE_ERROR, OneLineParser, UsageError, report_usage_error
from common.config import Config, ConfigError, build_arg_parser, config_from_args, dumps, explicit_overrides, resolve

DESCRIPTION = ("Train a distributed DQN (Ape-X family) on an Atari game or a flat-vector gymnasium env. "
               "Starts a local Ray instance unless --address names a cluster. Values shown as None are "
               "'auto': filled for the env and device, and recorded in the run's config.json.")


def parse(argv: list[str]) -> tuple[Config, Path | None]:
    """The requested config (before 'auto' values are resolved) and the run to resume."""
    parser = build_arg_parser(description=DESCRIPTION, parser_class=OneLineParser)
    ns = parser.parse_args(argv)
    resume = getattr(ns, "run.resume")
    if resume is None:
        return config_from_args(ns), None
    run_dir = Path(resume)
    cfg_path = run_dir / "config.json"
    if not cfg_path.is_file():
        raise UsageError(f"--resume {resume}: no config.json there (not a run directory)")
    try:
        saved = json.loads(cfg_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UsageError(f"--resume {resume}: unreadable config.json ({e})") from None
    saved = Config.from_dict(saved).to_dict()
    # Flags typed now override the saved run's settings (more frames, another time limit...).
    for section, values in explicit_overrides(parser, argv, ns).items():
        saved[section].update(values)
    saved["run"]["resume"] = str(run_dir)
    saved["run"]["run_dir"] = str(run_dir)
    return Config.from_dict(saved), run_dir


def prepare(argv: list[str]):
    """Parse and check everything; returns (config, run_dir, env spec, resume payload)."""
    import torch

    from common.envs import EnvSpecError, describe_env
    from common.networks import signature_for
    from learner.checkpoint import CheckpointError, checkpoint_path, load_checkpoint

    try:
        cfg, resume_dir = parse(argv)
        spec = describe_env(cfg.env.env_id)
        if cfg.learner.device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"--device={cfg.learner.device}: no CUDA device is available to torch")
        cuda = cfg.learner.device.startswith("cuda") or (cfg.learner.device == "auto" and torch.cuda.is_available())
        cfg = resolve(cfg, atari=spec.atari, cuda=cuda)
        payload = None
        if resume_dir is not None:
            payload = load_checkpoint(checkpoint_path(resume_dir), signature_for(spec, cfg.learner))
            run_dir = resume_dir
        else:
            run_dir = Path(cfg.run.run_dir or f"runs/{cfg.env.env_id.replace('/', '_')}-{time.strftime('%Y%m%d-%H%M%S')}")
            if (run_dir / "config.json").exists() or (run_dir / "checkpoint.pt").exists():
                raise UsageError(f"--run-dir {run_dir}: already holds a run; use --resume {run_dir} to continue it or pick another directory")
            cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, run_dir=str(run_dir)))
    except (ConfigError, EnvSpecError, CheckpointError) as e:
        raise UsageError(str(e)) from None
    return cfg, run_dir, spec, payload


def build_trainer(cfg: Config, run_dir: Path, spec, payload: dict | None):
    """The wiring: a learner on its device, the Ray fleet, the run log, the counters."""
    import torch

    from common.networks import signature_for
    from learner.dqn import build_learner
    from learner.fleet import Fleet
    from learner.run_log import RunLog
    from learner.trainer import Counters, Trainer, cpu_learner_threads, pick_device

    device = pick_device(cfg.learner.device)
    if device.type == "cpu":
        torch.set_num_threads(cpu_learner_threads(cfg))
    torch.manual_seed(cfg.run.seed)
    learner = build_learner(cfg, spec, device)
    if payload:
        learner.load_state_dict(payload["learner"])
    counters = Counters(payload["counters"] if payload else None)
    return Trainer(cfg, run_dir, learner, Fleet(cfg, spec, run_dir), RunLog(run_dir), counters,
                   signature_for(spec, cfg.learner))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg, run_dir, spec, payload = prepare(argv)
    except UsageError as e:
        return report_usage_error(e)
    except SystemExit as e:  # the parser printed its one line (or --help)
        return int(e.code or 0)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(dumps(cfg))
    from learner.fleet import PlacementError

    print(f"raydqn: {cfg.env.env_id}, {cfg.actors.num_actors} actors x {cfg.env.envs_per_actor} envs, "
          f"batch {cfg.learner.batch_size}, run dir {run_dir}" + (" (resumed)" if payload else ""), flush=True)
    trainer = build_trainer(cfg, run_dir, spec, payload)
    try:
        summary = trainer.run()
    except PlacementError as e:
        return report_usage_error(e)
    print(json.dumps({k: summary.get(k) for k in ("env_frames", "agent_steps", "learner_steps", "episodes",
                                                   "mean_return_100", "wall_s", "stop_reason")}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
