"""Entry point: ``python -m learner.main --num-actors 16``.

Everything that can be wrong with the input (a flag, the game, the run directory, the
checkpoint to resume) is checked before Ray starts or anything is written; it ends in one
line on stderr and exit code 2, and leaves the run directory as it was.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path

from common.config import Config, ConfigError, build_arg_parser, config_from_args, dumps, explicit_overrides, resolve

USAGE_ERROR = 2
DESCRIPTION = ("Train a distributed DQN (Ape-X family) on an Atari game or a flat-vector gymnasium env. "
               "Starts a local Ray instance unless --address names a cluster. Values shown as None are "
               "'auto': filled for the env and device, and recorded in the run's config.json.")


class UsageError(Exception):
    """Bad input: printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage block
        raise UsageError(message)


def parse(argv: list[str]) -> tuple[Config, Path | None]:
    """The requested config (before 'auto' values are resolved) and the run to resume."""
    parser = build_arg_parser(description=DESCRIPTION, parser_class=_Parser)
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
    except (OSError, json.JSONDecodeError) as e:
        raise UsageError(f"--resume {resume}: unreadable config.json ({e})") from None
    saved = Config.from_dict(saved).to_dict()
    # Flags typed now override the saved run's settings (more frames, another time limit...).
    for section, values in explicit_overrides(parser, argv, ns).items():
        saved[section].update(values)
    saved["run"]["resume"] = str(run_dir)
    saved["run"]["run_dir"] = str(run_dir)
    return Config.from_dict(saved), run_dir


def prepare(argv: list[str]):
    """Parse and check everything; returns (config, run_dir, env_info, resume_payload)."""
    from common.envs import EnvSpecError, check_env_id, is_atari, make_vector_env
    from common.networks import network_signature
    from learner.checkpoint import CheckpointError, checkpoint_path, load_checkpoint
    import torch

    try:
        cfg, resume_dir = parse(argv)
        check_env_id(cfg.env.env_id)
        probe = make_vector_env(cfg.env.env_id, 1, cfg.run.seed)
        env_info = {"frame_shape": tuple(probe.frame_shape), "stack_size": probe.stack_size, "num_actions": probe.num_actions}
        probe.close()
        env_info["signature"] = network_signature(env_info["frame_shape"], env_info["stack_size"], env_info["num_actions"])
        cuda = cfg.learner.device.startswith("cuda") or (cfg.learner.device == "auto" and torch.cuda.is_available())
        if cfg.learner.device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"--device={cfg.learner.device}: no CUDA device is available to torch")
        cfg = resolve(cfg, atari=is_atari(cfg.env.env_id), cuda=cuda)
        payload = None
        if resume_dir is not None:
            payload = load_checkpoint(checkpoint_path(resume_dir), env_info["signature"])
            run_dir = resume_dir
        else:
            run_dir = Path(cfg.run.run_dir or f"runs/{cfg.env.env_id.replace('/', '_')}-{time.strftime('%Y%m%d-%H%M%S')}")
            if (run_dir / "config.json").exists() or (run_dir / "checkpoint.pt").exists():
                raise UsageError(f"--run-dir {run_dir}: already holds a run; use --resume {run_dir} to continue it or pick another directory")
            cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, run_dir=str(run_dir)))
    except (ConfigError, EnvSpecError, CheckpointError) as e:
        raise UsageError(str(e)) from None
    return cfg, run_dir, env_info, payload


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg, run_dir, env_info, payload = prepare(argv)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return USAGE_ERROR
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(dumps(cfg))
    from learner.trainer import Trainer

    print(f"raydqn: {cfg.env.env_id}, {cfg.actors.num_actors} actors x {cfg.env.envs_per_actor} envs, "
          f"batch {cfg.learner.batch_size}, run dir {run_dir}" + (" (resumed)" if payload else ""), flush=True)
    trainer = Trainer(cfg, run_dir, env_info, payload)
    try:
        summary = trainer.run()
    except RuntimeError as e:  # e.g. the cluster cannot place the run
        print(f"error: {e}", file=sys.stderr)
        return USAGE_ERROR
    print(json.dumps({k: summary.get(k) for k in ("env_frames", "agent_steps", "learner_steps", "episodes", "mean_return_100", "wall_s", "stop_reason")}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
