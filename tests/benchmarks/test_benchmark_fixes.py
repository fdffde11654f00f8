"""Small fixes to the benchmark helpers before the first GPU run (issue 20): psutil found
through Ray when it is not installed on its own, a checkpoint read onto the CPU, and the
feed benchmark's Ray instance its own."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# psutil hidden everywhere but in Ray's bundled copy, as where only ray[default] is installed.
HIDE_PSUTIL = """
import importlib.abc, importlib.machinery, sys
class OnlyRaysPsutil(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != "psutil":
            return None
        bundled = [p for p in sys.path if p.endswith("thirdparty_files")]
        spec = importlib.machinery.PathFinder.find_spec(name, bundled) if bundled else None
        if spec is None:
            raise ModuleNotFoundError("No module named 'psutil'", name="psutil")
        return spec
sys.meta_path.insert(0, OnlyRaysPsutil())
try:
    import psutil
    raise SystemExit("psutil was not hidden")
except ModuleNotFoundError:
    pass
import benchmarks.machine as m
print(m.psutil.__file__)
print(m.machine()["memory_gb"] > 0)
"""


def test_machine_falls_back_to_rays_psutil():
    proc = subprocess.run([sys.executable, "-c", HIDE_PSUTIL], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    where, memory_ok = proc.stdout.split()
    assert "thirdparty_files" in where and memory_ok == "True"


def test_chaos_reads_the_checkpoint_onto_the_cpu(tmp_path, monkeypatch):
    import torch

    from benchmarks import chaos

    torch.save({"counters": {"learner_steps": 7}, "online": {"w": torch.ones(2)}}, tmp_path / "checkpoint.pt")
    calls = []
    real_load = torch.load

    def load(*args, **kwargs):
        calls.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", load)
    assert chaos.saved_counters(tmp_path) == {"learner_steps": 7}
    assert calls and calls[0]["map_location"] == "cpu" and calls[0]["weights_only"] is True


def test_feed_starts_a_ray_instance_of_its_own(monkeypatch):
    import ray

    from benchmarks import feed

    seen = {}
    monkeypatch.setattr(ray, "init", lambda **kwargs: seen.update(kwargs))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    feed.start_ray()
    assert seen["address"] == "local" and seen["num_cpus"] == 2
