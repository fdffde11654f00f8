"""Evaluation during training: fresh whole games with the current weights, at a small ε.

The actors' own scores mix exploration levels (Ape-X streams explore with ε up to 0.4)
and over-represent short games, so they do not say how good the policy is. The
:class:`Evaluator` plays ``episodes`` fresh games under the evaluation protocol (up to
``noop_max`` no-ops at the start, the emulator-frame cap, whole games over all lives, raw
scores), never feeds the replay, and reports raw and, for Atari, human-normalized scores.
The fleet runs it as its own Ray actor every ``--eval-period`` env frames; here it is a
plain class, tested without Ray. The games are played and scored by ``learner.games``, the
same code ``learner.evaluate`` runs on a checkpoint.
"""

from __future__ import annotations

import time

import torch

from common.config import ALE_SEED_MODULUS, Config
from learner.games import MAX_EVAL_ENVS


class Evaluator:
    """Plays evaluation games for one run's config. ``num_envs`` games run side by side
    (one batched forward pass); each evaluation uses fresh emulators with its own seed."""

    def __init__(self, config: dict | Config, num_envs: int | None = None, threads: int = 1):
        from common.affinity import pin_worker_from_env

        pin_worker_from_env()  # --pin-cpus on: off the learner's cores (common.affinity)
        self.cfg = config if isinstance(config, Config) else Config.from_dict(config)
        self.episodes = self.cfg.eval.eval_episodes
        self.num_envs = max(1, min(num_envs or MAX_EVAL_ENVS, self.episodes))
        self.epsilon = self.cfg.eval.eval_epsilon
        torch.set_num_threads(threads)

    def evaluate(self, weights: dict, policy_version: int, run_counters: dict, index: int) -> dict:
        """One evaluation of ``weights``; ``run_counters`` (env_frames, agent_steps,
        learner_steps at publish time) are passed through to the result."""
        from common.atari_scores import human_normalized
        from common.envs import spec_of, vector_env_for
        from common.networks import q_network_for
        from learner.games import eval_core, play, score_stats

        t0 = time.monotonic()
        c, n = self.cfg, self.num_envs
        # An emulator's seed is an int32 and env i plays seed + i: all n below ALE_SEED_MODULUS.
        seed = (c.run.seed * 1_000_003 + 7_777_777 + index * n) % (ALE_SEED_MODULUS - n)
        env = vector_env_for(c.env, n, seed)
        try:
            spec = spec_of(env, c.env.env_id)
            core = eval_core(env, q_network_for(spec, c.learner), spec, self.epsilon, seed)
            core.set_weights(weights, policy_version)
            games = play(core, n, self.episodes, None, f"{c.env.env_id} (policy {policy_version})")
        finally:
            env.close()
        stats = score_stats(games, self.epsilon)
        return {
            **{k: int(run_counters.get(k, 0)) for k in ("env_frames", "agent_steps", "learner_steps")},
            "policy_version": int(policy_version),
            **stats,
            "human_normalized_mean": human_normalized(c.env.env_id, stats["mean"]),
            "eval_s": round(time.monotonic() - t0, 3),
            "eval_agent_steps": int(core.agent_steps),
        }


def due(env_frames: int, last_eval_frames: int | None, period: int) -> bool:
    """Whether an evaluation is due: every ``period`` env frames (0: never), the first one
    as soon as training has produced weights worth judging."""
    if period <= 0:
        return False
    if last_eval_frames is None:
        return True
    return env_frames - last_eval_frames >= period
