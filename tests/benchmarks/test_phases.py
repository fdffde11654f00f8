"""The benchmark programs' phases and reports, driven by fake measurements.

Each ``main`` runs its phases in order and reports what they measured; the measurements
themselves (a system run, an update loop, an emulator) are replaced here by fakes that
return fixed figures, so what is checked is the plumbing: every phase runs, every figure
reaches the table and the final JSON line, and the ratios against the targets are the
figures' ratios. Nothing starts Ray or times anything.
"""

from __future__ import annotations

import itertools
import json

import pytest

MACHINE = {"cores": 2, "cpu": "fake CPU", "memory_gb": 8.0}


def fake_system(counter, batch_size: int = 32, replay_ratio: float | None = None) -> dict:
    k = next(counter)
    return {
        "agent_steps_per_s": 50.0 + k,
        "updates_per_s": 10.0 + k,
        "trained_samples_per_s": (10.0 + k) * batch_size,
        "window_s": 40.0,
        "cpu_cores": {"learner (driver)": 0.9, "actors": 0.3, "replay": 0.1, "ray daemons": 0.05},
        "foreign_cores": 0.01 * k,
        "updates_per_learner_cpu_s": 11.0 + k,
        "replay_size_end": 1000 * k,
        "memory_peak_mb": {"ours_rss": 1000.0 + k, "ours_pss": 800.0 + k, "ray_system_rss": 300.0},
        "memory_by_kind_mb": {"driver": {"rss_mb": 700.0, "count": 1, "pss_mb": 600.0}},
        "memory_projection": {
            "projected_ours_rss_mb": 1500.0 + k,
            "mb_per_1k_items": 7.0,
            "fitted_from_items": 100,
            "fitted_to_items": 5000,
            "capacity": 100_000,
        },
        "replay_ratio": replay_ratio,
    }


def fake_update(counter) -> dict:
    k = next(counter)
    return {"updates_per_s": 20.0 + k, "updates_per_cpu_s": 21.0 + k, "cpu_per_wall": 1.0, "foreign_cores": 0.02}


def fake_loop(counter) -> dict:
    k = next(counter)
    return {
        "agent_steps_per_s": 60.0 + k,
        "updates_per_s": 15.0 + k,
        "trained_samples_per_s": (15.0 + k) * 32,
        "peak_rss_mb": 900.0 + k,
        "replay_size": 20_000,
        "foreign_cores": 0.03,
        "cpu_cores": 1.9,
        "torch_threads": 2,
    }


def quiet_machine(monkeypatch, module):
    monkeypatch.setattr(module, "machine", lambda: dict(MACHINE))
    monkeypatch.setattr(module, "describe_machine", lambda m: "fake machine")
    monkeypatch.setattr(module, "wait_quiet", lambda **kw: 0.0)
    if hasattr(module, "loadavg"):  # a module that prints the load average
        monkeypatch.setattr(module, "loadavg", lambda: [0.1, 0.1, 0.1])


def last_json(capsys) -> tuple[dict, str]:
    out = capsys.readouterr().out
    return json.loads(out.strip().splitlines()[-1]), out


def fake_peers(monkeypatch, rllib: bool):
    from benchmarks import learner as L
    from benchmarks import peers, peers_report

    counter = itertools.count(1)
    quiet_machine(monkeypatch, peers)
    monkeypatch.setattr(peers_report, "loadavg", lambda: [0.1, 0.1, 0.1])
    monkeypatch.setattr(L, "standalone_rate", lambda *a, **kw: fake_update(counter))
    monkeypatch.setattr(L, "system_rate", lambda args, run_dir, profile, replay_ratio=None: fake_system(counter))
    monkeypatch.setattr(peers, "cleanrl_update_rate", lambda *a, **kw: fake_update(counter))
    monkeypatch.setattr(peers, "run_cleanrl_child", lambda args, optimizer="adam": fake_loop(counter))
    monkeypatch.setattr(peers, "rllib_python", lambda args: "/fake/python" if rllib else None)
    monkeypatch.setattr(peers, "run_rllib", lambda args, py, run_dir: {**fake_system(counter), "replay_steps_end": 9})
    return peers


@pytest.mark.parametrize("rllib", [False, True])
def test_peers_runs_every_phase_and_reports_their_ratios(capsys, monkeypatch, tmp_path, rllib):
    peers = fake_peers(monkeypatch, rllib)
    assert peers.main(["--threads", "1", "--out-dir", str(tmp_path)]) == 0
    result, out = last_json(capsys)
    ray8, loop, rl = result["raydqn"], result["single_process_loop"], result["rllib"]
    assert result["ratios"]["samples_vs_loop"] == pytest.approx(
        ray8["trained_samples_per_s"] / loop["trained_samples_per_s"]
    )
    assert result["ratios"]["samples_vs_rllib"] == pytest.approx(
        ray8["trained_samples_per_s"] / rl["trained_samples_per_s"]
    )
    eq = result["equal_work"]
    assert set(eq["raydqn"]) == {"adam", "rmsprop", "rllib_settings"}
    assert len(eq["update_alone_raydqn"]) == len(eq["update_alone_cleanrl"]) == 2  # before and after
    assert "equal_work_rllib_settings_vs_rllib" not in result["ratios"]
    assert result["ratios"]["rllib_settings_vs_rllib"] == pytest.approx(
        eq["raydqn"]["rllib_settings"]["trained_samples_per_s"] / rl["trained_samples_per_s"]
    )
    assert set(result["met"]) <= set(result["targets"])
    assert "Equal work per update" in out and "Targets (RLlib" in out
    if rllib:
        assert (
            rl.get("source") != peers.RLLIB_RECORDED["source"] and "memory_projected_100k_vs_rllib" in result["ratios"]
        )
    else:
        assert rl["agent_steps_per_s"] == 17.6 and "docs/peers.md" in rl["source"]
        assert "NOT measured in this run" in out


def test_peers_skips_what_it_is_told_to(capsys, monkeypatch, tmp_path):
    peers = fake_peers(monkeypatch, rllib=False)
    argv = ["--threads", "1", "--out-dir", str(tmp_path), "--skip-equal-work", "--skip-free-running", "--quick"]
    assert peers.main(argv) == 0
    result, out = last_json(capsys)
    assert result["equal_work"] is None and result["raydqn_free_running"] is None
    assert "free_steps_vs_rllib" not in result["ratios"] and "QUICK MODE" in out


def test_learner_efficiency_is_the_system_over_the_mean_standalone(capsys, monkeypatch, tmp_path):
    from benchmarks import learner

    counter = itertools.count(1)
    quiet_machine(monkeypatch, learner)
    monkeypatch.setattr(learner, "standalone_rate", lambda *a, **kw: fake_update(counter))
    monkeypatch.setattr(learner, "system_rate", lambda args, run_dir, profile, replay_ratio=None: fake_system(counter))
    assert learner.main(["--threads", "1", "--out-dir", str(tmp_path)]) == 0
    result, out = last_json(capsys)
    alone = (result["standalone_before"]["updates_per_s"] + result["standalone_after"]["updates_per_s"]) / 2
    assert result["standalone_updates_per_s"] == pytest.approx(alone)
    assert result["efficiency"] == pytest.approx(result["system"]["updates_per_s"] / alone)
    assert result["met"] == (result["efficiency"] >= learner.TARGET) and "Learner efficiency" in out


def fake_core(counter, profile=False) -> dict:
    k = next(counter)
    out = {
        "agent_steps_per_s": 400.0 + k,
        "agent_steps_per_cpu_s": 410.0 + k,
        "cpu_per_wall": 1.0,
        "message_bytes_per_step": 900.0,
        "foreign_cores": 0.02,
        "precision": "fp32",
        "envs_per_actor": 8,
        "forward_share": 0.3,
        "forward_ms_per_stack": 0.1,
        "publish": {"median_ms": 2.0, "max_ms": 3.0},
        "core_rss_mb": 120.0,
    }
    if profile:
        out["profile"] = {"emulator": 0.6, "forward pass": 0.4}
    return out


def test_actors_rows_are_each_fleet_against_the_emulator(capsys, monkeypatch, tmp_path):
    from benchmarks import actors

    counter = itertools.count(1)
    quiet_machine(monkeypatch, actors)
    monkeypatch.setattr(
        actors,
        "emulator_rate",
        lambda env, e, s, seed: {
            "agent_steps_per_s": 500.0 + next(counter),
            "agent_steps_per_cpu_s": 520.0,
            "cpu_per_wall": 1.0,
            "foreign_cores": 0.01,
        },
    )
    monkeypatch.setattr(actors, "actor_core_rate", lambda *a, profile=False, **kw: fake_core(counter, profile))

    def fleet(args, n, run_dir, profile):
        cpu = {"actors": 0.9 * n, "replay": 0.1, "driver": 0.1, "ray_system": 0.05, "other_workers": 0.0}
        return {
            "num_actors": n,
            "agent_steps_per_s": 300.0 * n,
            "window_s": 40.0,
            "cpu_cores": cpu,
            "foreign_cores": 0.0,
        }

    monkeypatch.setattr(actors, "fleet_rate", fleet)
    argv = ["--out-dir", str(tmp_path), "--actor-counts", "1,2", "--sweep", "--sweep-envs", "8,16"]
    assert actors.main(argv + ["--sweep-precisions", "fp32,bf16", "--profile"]) == 0
    result, out = last_json(capsys)
    per_core = result["baseline_per_core"]
    assert per_core == pytest.approx(
        (result["baseline_before"]["agent_steps_per_s"] + result["baseline_after"]["agent_steps_per_s"]) / 2
    )
    one, two = result["fleets"]
    assert one["efficiency"] == pytest.approx(300.0 / per_core)
    assert two["marginal_efficiency"] == pytest.approx(300.0 / per_core)  # 2 cores here: one more core used
    assert result["met"] == {"N=1": one["efficiency"] >= 0.75, "N=2": two["efficiency"] >= 0.65}
    assert len(result["sweep"]) == 4  # E in 8, 16 x two precisions
    assert "Actor core (no Ray) per precision" in out and "part of the actor core loop" in out


class FakeProc:
    """learner.main as the soak sees it: alive for ``alive`` polls, then exit code 0."""

    def __init__(self, alive: int):
        self.alive, self.pid, self.returncode = alive, 4242, None

    def poll(self):
        if self.alive > 0:
            self.alive -= 1
            return None
        self.returncode = 0
        return 0


def test_soak_samples_until_the_run_ends_and_fits_slopes(capsys, monkeypatch, tmp_path):
    import time
    import types

    from benchmarks import soak

    clock = itertools.count(0.0, 60.0)  # a sample a minute, without the wait
    fake_time = types.SimpleNamespace(sleep=lambda s: None, monotonic=lambda: next(clock), strftime=time.strftime)
    monkeypatch.setattr(soak, "time", fake_time)
    monkeypatch.setattr(soak.subprocess, "Popen", lambda cmd, **kw: FakeProc(alive=40))
    growth = itertools.count(0.0, 1.0)
    monkeypatch.setattr(soak, "snapshot_processes", lambda pid: {"learner.main#4242": (500.0 + next(growth), 100.0)})
    monkeypatch.setattr(soak, "ray_state", lambda address, namespace: {"object_store_mb": 5.0})
    monkeypatch.setattr(soak, "kill_one_actor", lambda pid, turn: f"ActorShell#{turn}")
    assert soak.main(["--out-dir", str(tmp_path), "--minutes", "30", "--warmup-minutes", "5"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    series = result["soak"]["rss_mb:learner.main#4242"]
    assert series["slope_per_hour"] == pytest.approx(60.0)  # 1 MB a sample, a sample a minute
    assert [k["killed"] for k in result["kills"]][:2] == ["ActorShell#0", "ActorShell#1"]
    header = (tmp_path / "soak.csv").read_text().splitlines()[0]
    assert header == "private_mb:learner.main#4242,rss_mb:learner.main#4242,t_s"


def test_rllib_child_writes_a_row_per_train_call(tmp_path, monkeypatch):
    import csv
    import types

    from benchmarks import _rllib_dqn

    clock = itertools.count(0.0, 0.05)  # each reading of the clock 50 ms later: 4 train() calls in 0.2 s
    monkeypatch.setattr(_rllib_dqn, "time", types.SimpleNamespace(monotonic=lambda: next(clock)))

    class FakeAlgo:  # RLlib's result layout: the counters nested, under names that move
        calls = 0

        def train(self):
            self.calls += 1
            trained = 32 * (self.calls - 1)
            return {
                "env_runners": {"num_env_steps_sampled_lifetime": 100 * self.calls},
                "learners": {"__all_modules__": {"num_env_steps_trained_lifetime": trained}},
                "training_iteration": self.calls,
            }

    args = _rllib_dqn.parse_args(["--run-dir", str(tmp_path), "--seconds", "0.2"])
    algo = FakeAlgo()
    _rllib_dqn.train(algo, args, tmp_path, t_start=0.0)
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert len(rows) == algo.calls >= 2
    assert [r["agent_steps"] for r in rows[:2]] == ["100", "200"] and float(rows[1]["learner_steps"]) == 1.0
    keys = json.loads((tmp_path / "result_keys.json").read_text())
    assert "learners/__all_modules__/num_env_steps_trained_lifetime" in keys


def test_the_system_runs_command_lines_are_ones_learner_main_takes():
    """What benchmarks.learner and benchmarks.actors hand to learner.main parses into a Config."""
    from benchmarks import actors, learner
    from common.config import build_arg_parser, config_from_args

    def config(argv):
        return config_from_args(build_arg_parser().parse_args([str(a) for a in argv]))

    bench = learner.parser("benchmarks.learner")
    learner.add_system_flags(bench)
    args = bench.parse_args(["--threads", "1", "--batch-size", "64", "--replay-shards", "2"])
    cfg = config(learner.system_argv(args, 0.0, profile=False))
    assert (cfg.learner.batch_size, cfg.replay.replay_ratio, cfg.replay.replay_shards) == (64, 0.0, 2)
    assert cfg.eval.eval_period == 0 and cfg.learner.learner_threads == 1

    args = actors.parse_args(["--envs-per-actor", "4", "--actor-precision", "fp32"], cores=2)
    cfg = config(actors.fleet_argv(args, 3, profile=False))
    assert (cfg.actors.num_actors, cfg.env.envs_per_actor, cfg.actors.actor_precision) == (3, 4, "fp32")
    assert cfg.replay.learning_starts == cfg.replay.replay_capacity == 1_000_000  # the learner never trains
