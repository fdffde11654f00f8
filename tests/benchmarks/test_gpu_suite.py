"""The device suite's smoke test: every phase of ``benchmarks.gpu_suite`` with tiny sizes on
the CPU, so the program that the scarce GPU machine runs cannot rot between lent machines."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.ray


def test_tiny_cpu_run_writes_every_phase(tmp_path):
    out = tmp_path / "suite.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu_suite", "--device", "cpu", "--tiny", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    suite = json.loads(out.read_text())
    assert set(suite["standalone"]) == {"fp32", "bf16"}
    assert all(v["updates_per_s"] > 0 for v in suite["standalone"].values())
    assert suite["system"]["exit_code"] == 0 and suite["system"]["updates_per_s"] > 0
    assert suite["system"]["feed"] == "stacked" and suite["system"]["replay_shards"] == 1  # a CPU learner
    feed = suite["feed"]["result"]["in_process"]
    assert feed["mirror"]["bytes"] < feed["stacked"]["bytes"]
