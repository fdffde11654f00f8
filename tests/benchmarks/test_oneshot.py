"""The one-shot instrument (``benchmarks/oneshot.py``): the deadline's shares, each phase's
status, and the record on disk after every step, a SIGTERM and a phase that overruns.
Plain functions stand in for the phases; nothing is timed but a short sleep."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from benchmarks import oneshot
from benchmarks.gpu_suite import FULL, TINY
from benchmarks.oneshot import Budget, Phase, PhaseFailed, Record, run_phases

LENT_CALL_S = 600  # the GPU machine's limit on one command


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def spend(budget: Budget, shares: dict, used) -> list[float]:
    """Each phase's limit when phase k uses ``used(k, limit)`` seconds of a fake clock."""
    limits, names = [], list(shares)
    for k, name in enumerate(names):
        limit = budget.limit(shares[name], sum(shares[n] for n in names[k + 1 :]))
        limits.append(limit)
        budget.clock.t += used(k, limit)
    return limits


@pytest.mark.parametrize("sizes", [FULL, TINY], ids=["full", "tiny"])
def test_worst_case_phases_end_before_the_deadline(sizes):
    # Every phase takes its whole limit and then the grace before it is interrupted.
    budget = Budget(480.0, sizes.margin_s, FakeClock())
    spend(budget, sizes.shares, lambda k, limit: limit + oneshot.OVERRUN_GRACE_S)
    assert budget.elapsed() <= 480.0 - sizes.margin_s + oneshot.OVERRUN_GRACE_S + 1e-6
    # ... and the watchdog's last resort still ends the program well inside the lent call.
    assert 480.0 + oneshot.WATCHDOG_GRACE_S <= LENT_CALL_S - 60


def test_the_default_deadline_leaves_the_command_time_to_start():
    from benchmarks.gpu_suite import parse

    args = parse(["--device", "cpu", "--out", "suite.json"])
    assert args.deadline + oneshot.WATCHDOG_GRACE_S <= LENT_CALL_S - 60


def test_a_phase_that_ends_early_passes_its_time_on():
    shares = {"a": 0.5, "b": 0.25, "c": 0.25}
    full = spend(Budget(100.0, 0.0, FakeClock()), shares, lambda k, limit: limit)
    quick = spend(Budget(100.0, 0.0, FakeClock()), shares, lambda k, limit: 10.0 if k == 0 else limit)
    assert full == pytest.approx([50.0, 25.0, 25.0])
    assert quick[0] == full[0] and quick[1] == pytest.approx(45.0) and quick[2] == pytest.approx(45.0)


def read(path) -> dict:
    return json.loads(path.read_text())  # strict JSON: no NaN


def test_each_phase_ends_with_its_status_and_the_record_follows(tmp_path, monkeypatch):
    out = tmp_path / "suite.json"
    seen_on_disk = {}

    def ok(limit, figures, save):
        figures["x"] = float("nan")
        save()
        seen_on_disk["ok"] = read(out)["phases"]["ok"]

    def broken(limit, figures, save):
        figures["partial"] = 1
        raise ValueError("no kernel image")

    def refuses(limit, figures, save):
        figures["exit_code"] = 3
        raise PhaseFailed("learner.main exited 3")

    def slow(limit, figures, save):
        figures["before"] = True
        time.sleep(10)

    monkeypatch.setattr(oneshot, "OVERRUN_GRACE_S", 0.05)
    phases = [
        Phase("ok", ok, 0.0, 1.0),
        Phase("broken", broken, 0.0, 1.0),
        Phase("refuses", refuses, 0.0, 1.0),
        Phase("greedy", ok, 1e6, 1.0),
        Phase("slow", slow, 0.0, 1.0),
    ]
    record = Record(out, {"device": "cpu"}, [p.name for p in phases])
    code = run_phases(record, Budget(1.5, 0.0), phases)
    data = read(out)
    assert code == 0 and data["status"] == "complete" and data["device"] == "cpu"
    assert seen_on_disk["ok"]["status"] == "running" and seen_on_disk["ok"]["figures"] == {"x": None}
    p = data["phases"]
    assert p["ok"]["status"] == "done" and p["ok"]["seconds"] >= 0
    assert p["broken"] == {**p["broken"], "status": "failed", "figures": {"partial": 1}}
    assert p["broken"]["reason"] == "ValueError: no kernel image"
    assert p["refuses"]["status"] == "failed" and p["refuses"]["reason"] == "learner.main exited 3"
    assert p["greedy"]["status"] == "skipped" and "needs at least 1000000 s" in p["greedy"]["reason"]
    assert p["slow"]["status"] == "interrupted" and "ran past its limit" in p["slow"]["reason"]
    assert p["slow"]["figures"] == {"before": True} and p["slow"]["seconds"] < 3
    assert [f.name for f in tmp_path.iterdir()] == ["suite.json"]  # no temporary file left


def test_sigterm_is_written_down_before_the_phase_cleans_up(tmp_path):
    out = tmp_path / "suite.json"
    on_disk_at_cleanup = {}
    before = signal.getsignal(signal.SIGTERM)

    def measuring(limit, figures, save):
        figures["variant_a"] = {"status": "done", "updates_per_s": 12.5}
        save()
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(10)
        finally:
            on_disk_at_cleanup.update(read(out))

    def later(limit, figures, save):
        raise AssertionError("must not run after a SIGTERM")

    phases = [Phase("first", lambda *a: None, 0.0, 1.0), Phase("measuring", measuring, 0.0, 1.0)]
    phases.append(Phase("later", later, 0.0, 1.0))
    record = Record(out, {}, [p.name for p in phases])
    t0 = time.monotonic()
    code = run_phases(record, Budget(60.0, 0.0), phases)
    assert code == 128 + signal.SIGTERM and time.monotonic() - t0 < 5
    assert on_disk_at_cleanup["status"] == "interrupted (SIGTERM)"
    assert on_disk_at_cleanup["phases"]["measuring"]["status"] == "interrupted"
    data = read(out)
    assert data["status"] == "interrupted (SIGTERM)"
    assert data["phases"]["first"]["status"] == "done"
    assert data["phases"]["measuring"]["figures"]["variant_a"]["updates_per_s"] == 12.5
    assert data["phases"]["later"]["status"] == "skipped" and "SIGTERM" in data["phases"]["later"]["reason"]
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_failing_derivation_never_costs_the_record(tmp_path):
    out = tmp_path / "suite.json"
    record = Record(out, {"a": (1, 2)}, ["p"], derive=lambda data: 1 / 0)
    record.save()
    data = read(out)
    assert data["a"] == [1, 2] and data["derived"]["error"].startswith("ZeroDivisionError")
    assert data["phases"] == {"p": {"status": "pending"}}


STUCK = """
import subprocess, sys, time
from benchmarks import oneshot
oneshot.OVERRUN_GRACE_S, oneshot.WATCHDOG_GRACE_S = 0.1, 0.5
record = oneshot.Record(sys.argv[1], {}, ["stuck"])
child = subprocess.Popen(["sleep", "60"], start_new_session=True)
record.children.append(child)
print(child.pid, flush=True)

def stuck(limit, figures, save):
    figures["before"] = 1
    while True:  # swallows even the overrun: a main thread that never comes back
        try:
            time.sleep(10)
        except BaseException:
            pass

oneshot.run_phases(record, oneshot.Budget(1.0, 0.0), [oneshot.Phase("stuck", stuck, 0.0, 1.0)])
"""


def test_the_watchdog_writes_and_ends_a_stuck_program(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    out = tmp_path / "suite.json"
    root = Path(__file__).resolve().parents[2]
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", STUCK, str(out)], cwd=root, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 124 and time.monotonic() - t0 < 30, proc.stderr[-2000:]
    data = read(out)
    assert data["status"] == "interrupted (the deadline passed with the main thread stuck)"
    assert data["phases"]["stuck"]["status"] == "interrupted" and data["phases"]["stuck"]["figures"] == {"before": 1}
    child = int(proc.stdout.split()[0])
    time.sleep(0.2)
    try:  # killed: gone, or a zombie that nobody has reaped yet
        with open(f"/proc/{child}/stat") as f:
            assert f.read().split(") ")[-1].startswith("Z")
    except FileNotFoundError:
        pass
