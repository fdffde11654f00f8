"""Playing and scoring evaluation games: what the evaluator and ``learner.evaluate`` share.

Both judge a policy the same way: E envs side by side under the run's protocol (no-op
starts, FIRE where the game needs it, the emulator-frame cap), eps-greedy at a small eps,
whole games over all lives, raw scores (never clipped), and each env playing a fixed share
of the games so short games are not over-represented. This module holds that once: the
:class:`~actors.actor.ActorCore` that plays (:func:`eval_core`), the loop (:func:`play`)
and the statistics of a result (:func:`score_stats`, :func:`summarise`). The running
system (``learner.evaluator``) imports it without importing a command-line tool; recording
a video is ``learner.video``'s. No Ray here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from common.progress import Status

if TYPE_CHECKING:
    import torch

    from actors.actor import ActorCore
    from common.env_spec import EnvSpec
    from common.envs import VectorEnv
    from learner.video import BestGameRecorder


#: At most this many games are played side by side (one batched forward pass over their envs).
MAX_EVAL_ENVS = 8


class EvaluationError(ValueError):
    """Bad input to an evaluation (a video we cannot write, a game without screens); one line."""


def eval_core(env: VectorEnv, network: torch.nn.Module, spec: EnvSpec, epsilon: float, seed: int) -> ActorCore:
    """An :class:`~actors.actor.ActorCore` that plays ``env``'s games with ``network`` at eps
    ``epsilon``, one stream per env, recording nothing for a replay. It reports raw scores:
    evaluation never clips. Its weights are set by the caller (``set_weights``). A noisy
    network plays with its noise off, on its mean weights, as Dopamine's evaluation does
    (``eval_mode``); the small eps keeps a deterministic emulator from looping."""
    from actors.actor import ActorCore
    from common.noisy import set_noise

    set_noise(getattr(network, "network", network), False)  # an ActingNetwork or the module itself

    n = env.num_envs
    return ActorCore(
        env,
        network,
        lambda _: np.full(n, epsilon),
        list(range(n)),
        steps_per_batch=1,
        frames_per_step=spec.frames_per_step,
        clip_rewards=False,
        seed=seed,
        record=False,
    )


def play(
    core, n: int, episodes: int, recorder: BestGameRecorder | None, label: str
) -> list[tuple[float, int, int | None]]:
    """Play ``core``'s ``n`` envs until ``episodes`` games are counted; (score, agent steps,
    emulator frames or None) per game, env by env. Env i plays a fixed quota of the games and
    its games beyond that are not counted, so short games are not over-represented."""
    quota = [episodes // n + (i < episodes % n) for i in range(n)]
    per_env: list[list] = [[] for _ in range(n)]
    counted = 0
    status = Status()
    while counted < episodes:
        status.update(f"evaluating {label}: {counted}/{episodes} games done, {core.agent_steps:,} agent steps")
        core.step()
        if recorder is not None:
            recorder.end_step()
        for ep in core.drain_episodes():
            i = ep.stream_id
            keep = len(per_env[i]) < quota[i]
            # Episode index in the result's order (env by env), for the video's caption.
            index = sum(quota[:i]) + len(per_env[i])
            frames = recorder.finished(i, ep.score, index, keep) if recorder is not None else None
            if keep:
                per_env[i].append((ep.score, ep.agent_steps, frames))
                counted += 1
    status.done()
    return [g for env_games in per_env for g in env_games]


def score_stats(games: list[tuple], epsilon: float) -> dict:
    """The figures every evaluation result has, from the games :func:`play` counted:
    episodes, epsilon, and the mean, median, min and max raw score."""
    s = np.array([g[0] for g in games], dtype=np.float64)
    return {
        "episodes": int(s.size),
        "epsilon": epsilon,
        "mean": float(s.mean()),
        "median": float(np.median(s)),
        "min": float(s.min()),
        "max": float(s.max()),
    }


def summarise(env_id: str, epsilon: float, games: list[tuple], checkpoint: str, counters: dict) -> dict:
    """The result of evaluating a checkpoint (``learner.evaluate.evaluate``, without ``video``)
    from the games :func:`play` counted."""
    from common.atari_scores import human_normalized, reference_scores

    stats = score_stats(games, epsilon)
    ref = reference_scores(env_id)
    return {
        "env": env_id,
        **stats,
        "scores": [float(g[0]) for g in games],
        "agent_steps": [int(g[1]) for g in games],
        "human_normalized_mean": human_normalized(env_id, stats["mean"]),
        "human_normalized_median": human_normalized(env_id, stats["median"]),
        "reference": {"random": ref[0], "human": ref[1]} if ref else None,
        "checkpoint": {
            "path": str(checkpoint),
            "policy_version": int(counters.get("policy_version", 0)),
            "env_frames": int(counters.get("env_frames", 0)),
        },
    }
