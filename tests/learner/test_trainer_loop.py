"""The learner's loop, driven in-process: a fake fleet over a real replay and a real
actor core on CartPole, a real learner, real files. No Ray."""

from __future__ import annotations

import csv
import dataclasses
import io
import json

import pytest
import torch

from common.config import ActorConfig, Config, EnvConfig, EvalConfig, LearnerConfig, ReplayConfig, RunConfig, resolve
from common.envs import describe_env
from common.networks import signature_for
from learner.checkpoint import checkpoint_path, load_checkpoint
from learner.dqn import build_learner
from learner.run_log import METRIC_FIELDS, RunLog
from learner.trainer import Counters, Trainer
from tests.support.fake_fleet import FakeFleet

SPEC = describe_env("CartPole-v1")


def make(tmp_path, counters=None, steps_per_poll=16, **sections):
    # One thread, as an actor and a CPU learner on a busy machine have: OpenMP threads
    # spinning against other processes make tiny forwards 100x slower.
    torch.set_num_threads(1)
    base = Config(
        env=EnvConfig(env_id="CartPole-v1", envs_per_actor=4),
        actors=ActorConfig(num_actors=1),
        replay=ReplayConfig(replay_capacity=5_000, learning_starts=64, replay_ratio=0.0),
        learner=LearnerConfig(batch_size=16, publish_period=10, checkpoint_period=20, learner_threads=1),
        run=RunConfig(log_interval=0.05, total_env_frames=10**9, time_limit=600.0),
        eval=EvalConfig(eval_period=0),
    )
    cfg = resolve(
        dataclasses.replace(base, **{k: dataclasses.replace(getattr(base, k), **v) for k, v in sections.items()}),
        atari=False,
        cuda=False,
    )
    fleet = FakeFleet(cfg, SPEC, steps_per_poll)
    log = RunLog(tmp_path, stream=io.StringIO())
    trainer = Trainer(
        cfg,
        tmp_path,
        build_learner(cfg, SPEC, "cpu"),
        fleet,
        log,
        counters or Counters(),
        signature_for(SPEC, cfg.learner),
    )
    return trainer, fleet


def test_stops_at_the_update_limit_with_publish_and_checkpoint_cadence(tmp_path):
    trainer, fleet = make(tmp_path, run={"total_learner_steps": 45})
    summary = trainer.run()
    assert summary["stop_reason"] == "total_learner_steps" and summary["learner_steps"] == 45
    assert fleet.samples == 45 and fleet.priority_updates == 45
    # Version 0 at start, then one every 10 updates, each with the run's agent steps.
    assert [v for v, _ in fleet.published] == [0, 1, 2, 3, 4]
    assert all(steps > 0 for _, steps in fleet.published[1:])
    # Checkpoints at update 20, 40 and at the end, each followed by a blocking snapshot.
    assert fleet.snapshots == [True, True, True]
    payload = load_checkpoint(checkpoint_path(tmp_path), signature_for(SPEC, trainer.cfg.learner))
    assert payload["counters"]["learner_steps"] == 45 and payload["counters"]["policy_version"] == 4
    assert fleet.stopped


def test_no_update_before_learning_starts_and_none_samples_are_skipped(tmp_path):
    # A replay ratio of 1 with a small tolerance: the learner outruns the actor and the
    # replay answers None until the actor inserts more.
    trainer, fleet = make(
        tmp_path,
        steps_per_poll=2,
        replay={"replay_ratio": 1.0, "replay_ratio_tolerance": 32.0},
        run={"total_learner_steps": 20},
    )
    summary = trainer.run()
    assert summary["stop_reason"] == "total_learner_steps"
    assert fleet.empty_samples > 0
    stats = fleet.server.stats()
    # Never more samples than the ratio and its tolerance allow past learning_starts.
    assert stats["transitions_sampled"] <= 1.0 * stats["transitions_inserted"] + 32 + 16
    assert summary["learner_steps"] == fleet.samples


@pytest.mark.parametrize(
    "run,reason",
    [
        ({"total_env_frames": 500}, "total_env_frames"),
        ({"time_limit": 1.0}, "time_limit"),
        ({"stop_return": 5.0}, "stop_return"),  # without an evaluator: the least-exploring streams
    ],
)
def test_stop_conditions(tmp_path, run, reason):
    trainer, _ = make(tmp_path, run=run)
    summary = trainer.run()
    assert summary["stop_reason"] == reason
    if reason == "total_env_frames":
        assert summary["env_frames"] >= 500
    if reason == "stop_return":
        assert summary["mean_return_greedy_20"] >= 5.0


def test_a_run_without_actors_stops(tmp_path):
    trainer, fleet = make(tmp_path)
    fleet.alive = False
    assert trainer.run()["stop_reason"] == "no actors left"


def test_beta_follows_the_whole_run_after_a_resume(tmp_path):
    # Half the run's frames already done before the resume: beta is half-way, not back at the start.
    trainer, _ = make(
        tmp_path,
        counters=Counters({"env_frames": 5_000}),
        run={"total_env_frames": 10_000},
        replay={"priority_beta_start": 0.4},
    )
    assert trainer.beta() == pytest.approx(0.7)
    fresh, _ = make(tmp_path / "b", run={"total_env_frames": 10_000}, replay={"priority_beta_start": 0.4})
    assert fresh.beta() == pytest.approx(0.4)


def test_outputs_follow_the_run_log_schema(tmp_path):
    trainer, _ = make(tmp_path, run={"total_learner_steps": 30})
    summary = trainer.run()
    with open(tmp_path / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows and list(rows[0]) == METRIC_FIELDS
    assert int(rows[-1]["learner_steps"]) <= 30
    assert json.loads((tmp_path / "summary.json").read_text()) == json.loads(json.dumps(summary))
    with open(tmp_path / "episodes.csv") as f:
        assert sum(1 for _ in csv.DictReader(f)) == summary["episodes"]


def test_the_evaluator_plays_every_period_and_its_score_is_the_headline(tmp_path):
    trainer, fleet = make(tmp_path, run={"total_env_frames": 3_000}, eval={"eval_period": 1_000, "eval_episodes": 2})
    summary = trainer.run()
    # Due once training has begun, then every 1,000 env frames.
    frames = [r["env_frames"] for r in fleet.eval_requests]
    assert frames and all(b - a >= 1_000 for a, b in zip(frames, frames[1:]))
    with open(tmp_path / "evals.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["env_frames"]) for r in rows] == frames
    assert all(int(r["episodes"]) == 2 and float(r["epsilon"]) == trainer.cfg.eval.eval_epsilon for r in rows)
    assert summary["evals"] == len(rows) and summary["eval_return"] == float(rows[-1]["mean"])
    with open(tmp_path / "metrics.csv") as f:
        last = list(csv.DictReader(f))[-1]
    assert last["eval_return"] == "" or float(last["eval_return"]) in {float(r["mean"]) for r in rows}
    from tests.learner.test_tensorboard import read_scalars

    tb = read_scalars(tmp_path / "tb")  # eval/... against env frames, one point per evaluation
    assert [(step, value) for step, value in tb["eval/mean_return"]] == [
        (int(r["env_frames"]), pytest.approx(float(r["mean"]))) for r in rows
    ]


def test_stop_return_judges_the_evaluators_score(tmp_path):
    trainer, fleet = make(tmp_path, run={"stop_return": 8.0}, eval={"eval_period": 500, "eval_episodes": 2})
    summary = trainer.run()
    assert summary["stop_reason"] == "stop_return"
    assert summary["eval_return"] >= 8.0 and fleet.eval_requests


def test_best_pt_keeps_the_weights_of_the_best_evaluation(tmp_path):
    trainer, fleet = make(tmp_path, run={"total_env_frames": 4_000}, eval={"eval_period": 500, "eval_episodes": 2})
    summary = trainer.run()
    with open(tmp_path / "evals.csv") as f:
        means = [float(r["mean"]) for r in csv.DictReader(f)]
    assert len(means) >= 3 and len(fleet.evaluated_log) == len(means)
    first_best = means.index(max(means))  # a later tie is not better
    version, weights = fleet.evaluated_log[first_best]
    best = load_checkpoint(tmp_path / "best.pt", trainer.signature)
    assert best["counters"]["eval"]["mean"] == max(means) == summary["best_eval_return"]
    assert best["counters"]["policy_version"] == version
    assert set(best["learner"]) == {"online"}
    for k, v in weights.items():
        assert torch.equal(best["learner"]["online"][k], torch.from_numpy(v)), k
    from learner.evaluate import evaluate

    result = evaluate(str(tmp_path / "best.pt"), episodes=2, epsilon=0.0)
    assert result["checkpoint"]["policy_version"] == version and result["episodes"] == 2


def test_no_best_pt_without_evaluations(tmp_path):
    trainer, _ = make(tmp_path, run={"total_learner_steps": 20})
    trainer.run()
    assert (tmp_path / "checkpoint.pt").is_file() and not (tmp_path / "best.pt").exists()


def test_no_evaluation_when_the_period_is_zero(tmp_path):
    trainer, fleet = make(tmp_path, run={"total_learner_steps": 20}, eval={"eval_period": 0})
    summary = trainer.run()
    assert not fleet.eval_requests and summary["evals"] == 0 and not (tmp_path / "evals.csv").exists()
