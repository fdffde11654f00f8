"""The soak's bookkeeping: one series per process, whatever method a Ray worker is in."""

from __future__ import annotations

import numpy as np

from benchmarks.soak import process_name, slope_and_noise


class FakeProcess:
    def __init__(self, cmdline, name="python"):
        self._cmd, self._name = cmdline, name

    def cmdline(self):
        return self._cmd

    def name(self):
        return self._name


def test_a_ray_worker_keeps_one_name_whatever_method_it_runs():
    names = {process_name(FakeProcess([title])) for title in ("ray::ReplayServer", "ray::ReplayServer.sample")}
    assert names == {"ray::ReplayServer"}
    assert process_name(FakeProcess(["ray::ActorShell.run"])) == "ray::ActorShell"
    assert process_name(FakeProcess(["/usr/bin/python", "-m", "learner.main", "--env", "x"])) == "learner.main"
    assert process_name(FakeProcess(["/bin/sleep", "5"], name="sleep")) == "sleep"


def test_slope_of_a_line_in_mb_per_hour():
    t = np.arange(0, 1800, 30.0)
    slope, noise = slope_and_noise(t, 200 + t / 3600 * 40)
    assert abs(slope - 40) < 1e-6 and noise < 1e-6


def test_each_process_reports_its_rss_and_its_shared_pages():
    import os

    from benchmarks.soak import snapshot_processes

    mem = snapshot_processes(os.getpid())
    (key,) = [k for k in mem if k.endswith(f"#{os.getpid()}")]
    rss, shared = mem[key]
    assert rss > shared > 0  # a Python process with numpy loaded has both
    assert snapshot_processes(2**22 + 12345) == {}  # a process that is gone: nothing, no error


def test_the_replays_memory_beyond_its_frames():
    from benchmarks.soak import replay_beyond_frames

    mem = {"ray::ReplayServer#7": (220.0, 100.0), "learner.main#1": (600.0, 250.0)}
    assert replay_beyond_frames(mem, {"replay_frames_mb:replay-0": 24.5}) == {"beyond_frames_mb:replay-0": 95.5}
    assert replay_beyond_frames(mem, {}) == {}  # the state query did not answer
    two = {**mem, "ray::ReplayServer#9": (150.0, 90.0)}  # a restarted replay beside its old pid
    assert replay_beyond_frames(two, {"replay_frames_mb:replay-0": 24.5}) == {}


def test_a_zombie_is_not_a_sample(monkeypatch):
    """A killed actor not yet reaped reads 0 MB: recording it put a false -736 MB/h slope
    on the killed actor's series."""
    import os
    import subprocess
    import sys
    import time

    from benchmarks.soak import snapshot_processes

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # exited but not waited for: a zombie
        with open(f"/proc/{child.pid}/stat") as f:
            if f.read().split(")")[-1].split()[0] == "Z":
                break
        time.sleep(0.05)
    try:
        keys = snapshot_processes(os.getpid())
        assert not any(k.endswith(f"#{child.pid}") for k in keys)
        assert any(k.endswith(f"#{os.getpid()}") for k in keys)
    finally:
        child.wait()
