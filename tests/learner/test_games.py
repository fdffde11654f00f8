"""learner.games: the games the evaluator and learner.evaluate both play and score, and
the running system's evaluator playing them without importing the command-line tool."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from learner.games import play, score_stats, summarise

ROOT = Path(__file__).resolve().parents[2]


class _ScriptedCore:
    """A core whose env i finishes a game every ``every[i]`` steps, scoring its step count."""

    def __init__(self, every):
        self.every, self.agent_steps, self._t = every, 0, 0
        self._done = []

    def step(self):
        self._t += 1
        self.agent_steps += len(self.every)
        for i, k in enumerate(self.every):
            if self._t % k == 0:
                self._done.append(SimpleNamespace(stream_id=i, score=float(100 * i + self._t), agent_steps=k))

    def drain_episodes(self):
        done, self._done = self._done, []
        return done


def test_each_env_plays_a_fixed_share_so_short_games_are_not_over_represented():
    # Env 0's games last 1 step, env 1's 5: the first 5 games to finish would all be env 0's.
    games = play(_ScriptedCore([1, 5]), n=2, episodes=5, recorder=None, label="test")
    assert [g[0] for g in games] == [1.0, 2.0, 3.0, 105.0, 110.0]  # 3 + 2 games, env by env
    assert [g[1] for g in games] == [1, 1, 1, 5, 5] and all(g[2] is None for g in games)


def test_a_checkpoints_result_keeps_its_keys_in_order():
    games = [(3.0, 10, None), (1.0, 4, None), (8.0, 20, None)]
    r = summarise("CartPole-v1", 0.05, games, "run/best.pt", {"policy_version": 7, "env_frames": 900})
    assert list(r) == [
        "env",
        "episodes",
        "epsilon",
        "mean",
        "median",
        "min",
        "max",
        "scores",
        "agent_steps",
        "human_normalized_mean",
        "human_normalized_median",
        "reference",
        "checkpoint",
    ]
    assert (r["episodes"], r["mean"], r["median"], r["min"], r["max"]) == (3, 4.0, 3.0, 1.0, 8.0)
    assert r["scores"] == [3.0, 1.0, 8.0] and r["agent_steps"] == [10, 4, 20]
    assert r["human_normalized_mean"] is None and r["reference"] is None
    assert r["checkpoint"] == {"path": "run/best.pt", "policy_version": 7, "env_frames": 900}
    assert score_stats(games, 0.05) == {k: r[k] for k in ("episodes", "epsilon", "mean", "median", "min", "max")}


EVALUATOR_RUN = """
import json, sys
import torch
from common.config import Config, EnvConfig, EvalConfig, resolve
from common.envs import describe_env
from common.networks import q_network_for
from learner.evaluator import Evaluator

torch.set_num_threads(1)
cfg = resolve(Config(env=EnvConfig(env_id="CartPole-v1"), eval=EvalConfig(eval_episodes=3, eval_epsilon=0.3)),
              atari=False, cuda=False)
weights = q_network_for(describe_env("CartPole-v1"), cfg.learner).state_dict()
r = Evaluator(cfg, num_envs=2).evaluate(weights, 4, {"env_frames": 800, "agent_steps": 200}, index=0)
print(json.dumps({"result": r, "modules": sorted(m for m in sys.modules if m.startswith("learner."))}))
"""


def test_the_evaluator_plays_without_importing_the_command_line_tool():
    from learner.run_log import EVAL_FIELDS

    proc = subprocess.run([sys.executable, "-c", EVALUATOR_RUN], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "learner.games" in out["modules"]
    assert "learner.evaluate" not in out["modules"] and "learner.video" not in out["modules"]
    r = out["result"]
    assert list(r) == [f for f in EVAL_FIELDS if f != "wall_s"]  # evals.csv's columns, in order
    assert (r["env_frames"], r["agent_steps"], r["learner_steps"], r["policy_version"]) == (800, 200, 0, 4)
    assert r["episodes"] == 3 and r["epsilon"] == pytest.approx(0.3)
    assert r["min"] <= r["median"] <= r["max"] and r["min"] <= r["mean"] <= r["max"]
    assert r["eval_agent_steps"] >= 3 * r["min"]  # CartPole pays 1 a step: 3 games of at least min steps


def test_a_noisy_network_is_evaluated_on_its_mean_weights():
    # Dopamine's eval_mode: the evaluator's games use the noisy layers' mean, so two forward
    # passes over the same states agree, and they equal the network with its noise off.
    import numpy as np
    import torch

    from common.envs import describe_env, make_vector_env
    from common.heads import HeadSpec
    from common.networks import build_q_network
    from common.noisy import noisy_layers
    from learner.games import eval_core

    spec = describe_env("CartPole-v1")
    env = make_vector_env("CartPole-v1", 2, seed=0)
    try:
        torch.manual_seed(0)
        net = build_q_network(spec.frame_shape, spec.stack_size, spec.num_actions, head=HeadSpec(noisy=True))
        core = eval_core(env, net, spec, epsilon=0.0, seed=0)
        assert noisy_layers(core.network) and not any(layer.noise for layer in noisy_layers(core.network))
        stacks = core.stacker.stacks
        first, second = core.acting.q_values(stacks), core.acting.q_values(stacks)
        np.testing.assert_array_equal(first, second)
        for layer in noisy_layers(net):
            layer.noise = True
        assert not np.array_equal(core.acting.q_values(stacks), first)  # with noise the values move
    finally:
        env.close()
