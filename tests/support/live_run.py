"""Helpers for tests that start the real entry point and watch it while it runs."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def start_run(run: Path, *flags, env: str = "CartPole-v1", **popen) -> subprocess.Popen:
    """``python -m learner.main`` with 2 actors x 2 envs writing to ``run``, output captured."""
    cmd = [
        sys.executable,
        "-m",
        "learner.main",
        "--env",
        env,
        "--num-actors",
        "2",
        "--envs-per-actor",
        "2",
        "--log-interval",
        "1",
        "--run-dir",
        str(run),
        *map(str, flags),
    ]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def finish(proc: subprocess.Popen, timeout: float) -> str:
    """Wait for the run to end by itself; its output. Kills it if the test fails first."""
    try:
        out, _ = proc.communicate(timeout=timeout)
        return out
    finally:
        if proc.poll() is None:
            proc.kill()


def wait_for(fn, timeout: float, what: str):
    """Poll ``fn`` until it returns something truthy; AssertionError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = fn()
            if last:
                return last
        except Exception as e:  # not there yet
            last = e
        time.sleep(0.5)
    raise AssertionError(f"{what} not seen within {timeout}s (last: {last!r})")


def ray_info(run: Path) -> dict:
    """What the run wrote about its Ray instance (dashboard URL, namespace, metrics ports)."""
    return wait_for(lambda: json.loads((run / "ray.json").read_text()), 60, "ray.json")


def dashboard_get(url: str) -> str:
    """GET from the dashboard's HTTP API with Ray's auth token, as a user would."""
    token_file = Path.home() / ".ray" / "auth_token"
    headers = {"Authorization": f"Bearer {token_file.read_text().strip()}"} if token_file.exists() else {}
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10).read().decode()


def alive_actors(info: dict) -> list[dict]:
    """The run's live actors, as the dashboard lists them."""
    body = json.loads(dashboard_get(f"{info['dashboard_url']}/api/v0/actors?limit=1000&detail=1"))
    return [
        a
        for a in body["data"]["result"]["result"]
        if a.get("state") == "ALIVE" and a.get("ray_namespace") == info["namespace"]
    ]


def actor_pid(info: dict, name: str) -> int | None:
    return next((a.get("pid") for a in alive_actors(info) if a.get("name") == name), None)


def learner_steps(run: Path) -> list[int]:
    """learner_steps of each metrics.csv row so far."""
    with open(run / "metrics.csv") as f:
        return [int(r["learner_steps"]) for r in csv.DictReader(f)]


def summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())
