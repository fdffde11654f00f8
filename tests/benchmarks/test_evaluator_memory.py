"""benchmarks.evaluator_memory, its in-process part on CartPole: one figure per evaluation."""

from __future__ import annotations

import json

from benchmarks.evaluator_memory import main, second_half


def test_in_process_run_records_own_memory_after_each_evaluation(capsys):
    assert main(["--env", "CartPole-v1", "--evaluations", "3", "--episodes", "2", "--skip-ray"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    series = result["in_process"]["own_mb"]
    assert len(series) == 3 and all(v > 50 for v in series)  # a Python process with torch loaded
    assert "ray_actor" not in result


def test_second_half_slope_and_growth():
    s = second_half([100.0, 120.0, 130.0, 130.0, 132.0, 134.0])
    assert abs(s["slope_mb_per_eval"] - 2.0) < 1e-9 and s["growth_second_half_mb"] == 4.0 and s["max"] == 134.0
