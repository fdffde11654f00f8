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
