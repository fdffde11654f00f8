"""The Ray dashboard shows every part by name and our metrics, read over its HTTP API."""

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.ray


def get(url, token):
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    return urllib.request.urlopen(req, timeout=10).read().decode()


def wait_for(fn, timeout, what):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = fn()
            if last:
                return last
        except Exception as e:  # not up yet
            last = e
        time.sleep(1)
    raise AssertionError(f"{what} not seen within {timeout}s (last: {last!r})")


def test_parts_are_named_and_metrics_exported(tmp_path):
    run = tmp_path / "watched"
    proc = subprocess.Popen([sys.executable, "-m", "learner.main", "--env", "CartPole-v1", "--num-actors", "2",
                             "--envs-per-actor", "2", "--num-cpus", "4", "--time-limit", "90", "--log-interval", "1",
                             "--run-dir", str(run)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        info = wait_for(lambda: json.loads((run / "ray.json").read_text()), 60, "ray.json")
        assert info["dashboard_url"], info
        token_file = Path.home() / ".ray" / "auth_token"
        token = token_file.read_text().strip() if token_file.exists() else None

        def named_alive():
            body = json.loads(get(f"{info['dashboard_url']}/api/v0/actors?limit=1000", token))
            names = {a.get("name") for a in body["data"]["result"]["result"]
                     if a.get("state") == "ALIVE" and a.get("ray_namespace") == info["namespace"]}
            return names if {"replay-0", "actor-0", "actor-1"} <= names else None

        wait_for(named_alive, 60, "named actors replay-0, actor-0, actor-1")

        def our_metrics():
            text = "".join(get(f"http://127.0.0.1:{p}/metrics", None) for p in info["metrics_export_ports"])
            wanted = ("raydqn_agent_steps_per_s", "raydqn_replay_size", "raydqn_actor_agent_steps")
            return all(w in text for w in wanted) and text

        text = wait_for(our_metrics, 60, "raydqn metrics on the Prometheus endpoint")
        assert 'actor="actor-1"' in text
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=120)
    # SIGTERM, like Ctrl-C, ends the run with a checkpoint and a summary.
    assert proc.returncode == 0, out[-2000:]
    assert (run / "checkpoint.pt").exists() and json.loads((run / "summary.json").read_text())["stop_reason"] == "interrupted"
