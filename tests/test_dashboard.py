"""The Ray dashboard shows every part by name and our metrics, read over its HTTP API."""

import pytest

from tests.support.live_run import alive_actors, dashboard_get, finish, ray_info, start_run, summary, wait_for

pytestmark = pytest.mark.ray


def test_parts_are_named_and_metrics_exported(tmp_path):
    run = tmp_path / "watched"
    proc = start_run(run, "--num-cpus", 4, "--time-limit", 90)
    try:
        info = ray_info(run)
        assert info["dashboard_url"], info

        def named_alive():
            names = {a.get("name") for a in alive_actors(info)}
            return names if {"replay-0", "actor-0", "actor-1"} <= names else None

        wait_for(named_alive, 60, "named actors replay-0, actor-0, actor-1")

        def our_metrics():
            text = "".join(dashboard_get(f"http://127.0.0.1:{p}/metrics") for p in info["metrics_export_ports"])
            # the driver's gauges, and each actor's own, tagged with its name
            actor_lines = [line for line in text.splitlines() if line.startswith("ray_raydqn_actor_agent_steps{")]
            tagged = all(any(f'actor="actor-{i}"' in line for line in actor_lines) for i in (0, 1))
            return "ray_raydqn_agent_steps_per_s" in text and "ray_raydqn_replay_size" in text and tagged

        wait_for(our_metrics, 60, "raydqn metrics on the Prometheus endpoint")
    finally:
        proc.terminate()
    out = finish(proc, 120)
    # SIGTERM, like Ctrl-C, ends the run with a checkpoint and a summary.
    assert proc.returncode == 0, out[-2000:]
    assert (run / "checkpoint.pt").exists() and summary(run)["stop_reason"] == "interrupted"
