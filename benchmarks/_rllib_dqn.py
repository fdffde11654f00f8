"""RLlib's DQN as the recorded peer figures were taken; a child process of ``benchmarks.peers``.

    python -m benchmarks._rllib_dqn --run-dir DIR --seconds 300

Needs ``ray[rllib]`` (dm-tree, pandas, pyarrow, scipy...): ``benchmarks.peers`` runs it with
``--rllib-python`` pointing at an interpreter that has them. Writes ``metrics.csv`` after
every ``train()`` call, in the columns ``benchmarks.system_run.SystemRun`` reads. The
settings and the figures recorded with them: ``docs/peers.md``; two choices they do not
state: ``docs/benchmark-methods.md`` (RLlib DQN).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path


def find(d, key):
    """The first value under ``key`` anywhere in nested dicts (RLlib's result layout moves)."""
    if isinstance(d, dict):
        if key in d and not isinstance(d[key], dict):
            return d[key]
        for v in d.values():
            r = find(v, key)
            if r is not None:
                return r
    return None


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--run-dir", required=True)
    p.add_argument("--seconds", type=float, default=300.0)
    p.add_argument("--learning-starts", type=int, default=10_000)
    p.add_argument("--replay-capacity", type=int, default=100_000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def register_breakout() -> None:
    """Breakout at 84x84, 4 frames skipped and stacked, as ``breakout84`` (Ray's env registry)."""
    import ale_py  # noqa: F401  (registers the ALE ids)
    import gymnasium as gym
    from ray import tune
    from ray.rllib.env.wrappers.atari_wrappers import wrap_atari_for_new_api_stack

    gym.register_envs(ale_py)

    def env_creator(_cfg):
        import ale_py

        gym.register_envs(ale_py)  # in the env runner's process too
        return wrap_atari_for_new_api_stack(
            gym.make("ALE/Breakout-v5", frameskip=1, repeat_action_probability=0), dim=84, frameskip=4, framestack=4
        )

    tune.register_env("breakout84", env_creator)


def build_algo(args):
    """RLlib's DQN at the recorded settings (docs/peers.md), on the new API stack."""
    from ray.rllib.algorithms.dqn import DQNConfig

    config = (
        DQNConfig()
        .api_stack(enable_rl_module_and_learner=True, enable_env_runner_and_connector_v2=True)
        .environment("breakout84", clip_rewards=True)
        .env_runners(num_env_runners=1, num_envs_per_env_runner=1, rollout_fragment_length=4)
        .learners(num_learners=0)
        .training(
            train_batch_size=args.batch_size,
            lr=1e-4,
            n_step=1,
            double_q=True,
            dueling=False,
            target_network_update_freq=1000,
            num_steps_sampled_before_learning_starts=args.learning_starts,
            replay_buffer_config={"type": "EpisodeReplayBuffer", "capacity": args.replay_capacity},
        )
        .rl_module(
            model_config={
                "conv_filters": [[32, [8, 8], 4], [64, [4, 4], 2], [64, [3, 3], 1]],
                "conv_activation": "relu",
                "head_fcnet_hiddens": [512],
            }
        )
        .reporting(min_sample_timesteps_per_iteration=100)
        .debugging(seed=args.seed)
    )
    return config.build_algo() if hasattr(config, "build_algo") else config.build()


FIELDS = ["wall_s", "agent_steps", "learner_steps", "trained_samples", "replay_size", "iteration"]


def metrics_row(result: dict, t0: float, batch_size: int) -> dict:
    """One row of metrics.csv from a ``train()`` result."""
    steps = find(result, "num_env_steps_sampled_lifetime") or 0
    trained = find(result, "num_env_steps_trained_lifetime") or find(result, "num_module_steps_trained_lifetime") or 0
    return {
        "wall_s": round(time.monotonic() - t0, 3),
        "agent_steps": int(steps),
        "learner_steps": trained / batch_size,
        "trained_samples": int(trained),
        "replay_size": find(result, "num_env_steps_stored") or "",
        "iteration": result.get("training_iteration"),
    }


def train(algo, args, run_dir: Path, t_start: float) -> None:
    """``train()`` until ``--seconds`` after the start, a row of metrics.csv after each call;
    the result's keys once learning has begun (result_keys.json: RLlib's layout moves)."""
    t0 = time.monotonic()
    path = run_dir / "metrics.csv"
    with open(path, "w", newline="") as f:
        csv.DictWriter(f, fieldnames=FIELDS).writeheader()
    first = True
    while time.monotonic() - t_start < args.seconds:
        result = algo.train()
        row = metrics_row(result, t0, args.batch_size)
        if first and row["trained_samples"]:
            keys = sorted(k for k in _flat(result) if "lifetime" in k or "replay" in k.lower())
            (run_dir / "result_keys.json").write_text(json.dumps(keys, indent=1))
            first = False
        with open(path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=FIELDS).writerow(row)
        print(json.dumps(row), flush=True)


def main(argv=None) -> int:
    args = parse_args(argv)
    t_start = time.monotonic()
    run_dir = Path(args.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    import ray

    register_breakout()
    ray.init(include_dashboard=None, logging_level="WARNING")
    algo = build_algo(args)
    train(algo, args, run_dir, t_start)
    algo.stop()
    ray.shutdown()
    return 0


def _flat(d, prefix=""):
    out = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(_flat(v, f"{prefix}{k}/"))
    else:
        out[prefix.rstrip("/")] = d
    return out


if __name__ == "__main__":
    sys.exit(main())
