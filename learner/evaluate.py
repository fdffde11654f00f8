"""Evaluate a checkpoint: ``python -m learner.evaluate --checkpoint RUN/checkpoint.pt --episodes 20``.

Plays the game the checkpoint was trained on, with the same preprocessing (no-op starts,
FIRE where the game needs it), eps-greedy with a small eps, and prints statistics of the
raw game score over whole games.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import torch

from common.config import Config, ConfigError


def evaluate(checkpoint: str, episodes: int, epsilon: float = 0.0, seed: int = 12345, num_envs: int | None = None) -> dict:
    """Raw scores of ``episodes`` whole games played by the checkpoint's policy."""
    from actors.actor import ActorCore
    from common.envs import is_atari, make_vector_env
    from common.networks import build_q_network, network_signature
    from learner.checkpoint import CheckpointError, load_checkpoint

    payload = load_checkpoint(checkpoint)
    try:
        cfg = Config.from_dict(payload["config"])
    except ConfigError as e:
        raise CheckpointError(f"{checkpoint}: bad config inside: {e}") from None
    n = num_envs or min(episodes, 8)
    env = make_vector_env(cfg.env.env_id, n, seed, episodic_life=cfg.env.episodic_life,
                          noop_max=cfg.env.noop_max, max_episode_frames=cfg.env.max_episode_frames)
    sig = network_signature(env.frame_shape, env.stack_size, env.num_actions)
    if sig != payload["signature"]:
        raise CheckpointError(f"{checkpoint} was trained on {payload['signature']}, {cfg.env.env_id} needs {sig}")
    network = build_q_network(env.frame_shape, env.stack_size, env.num_actions)
    core = ActorCore(env, network, lambda _: np.full(n, epsilon), list(range(n)), steps_per_batch=1,
                     frames_per_step=4 if is_atari(cfg.env.env_id) else 1, clip_rewards=False, seed=seed, record=False)
    core.set_weights(payload["learner"]["online"], payload["counters"].get("policy_version", 0))
    scores: list[float] = []
    while len(scores) < episodes:
        core.step()
        scores.extend(e.score for e in core.drain_episodes())
    env.close()
    s = np.array(scores[:episodes])
    return {"env": cfg.env.env_id, "episodes": int(len(s)), "epsilon": epsilon, "mean": float(s.mean()),
            "median": float(np.median(s)), "min": float(s.min()), "max": float(s.max()), "scores": s.tolist()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m learner.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="path to a checkpoint.pt")
    parser.add_argument("--episodes", type=int, default=10, help="whole games to play")
    parser.add_argument("--epsilon", type=float, default=0.0, help="probability of a random action")
    parser.add_argument("--seed", type=int, default=12345, help="environment and exploration seed")
    args = parser.parse_args(argv)
    from learner.checkpoint import CheckpointError

    if args.episodes < 1 or not 0 <= args.epsilon <= 1:
        print(f"error: --episodes must be >= 1 and --epsilon in [0, 1] (got {args.episodes}, {args.epsilon})", file=sys.stderr)
        return 2
    try:
        torch.set_num_threads(1)
        result = evaluate(args.checkpoint, args.episodes, args.epsilon, args.seed)
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
