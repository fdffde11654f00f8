"""Chaos: kill the parts of a live run one after another and measure the recovery.

    python -m benchmarks.chaos --out-dir runs/chaos

One run of ``python -m learner.main`` (CartPole by default, 2 actors). On a schedule:

1. SIGKILL ``actor-1``'s process: time until the driver reports it restarted;
2. SIGKILL ``replay-0``: time until it is back from its snapshot, and the records lost
   (what arrived after that snapshot);
3. SIGKILL the learner (the driver itself, no chance to save), then ``--resume``: time
   from the resume command to its first update past the checkpoint, and the counters
   lost (what happened after the last checkpoint).

The learner's updates per second are printed around each event, so a stall shows. The
same scenarios run as tests (tests/test_failures.py); this program is for watching
them at leisure and for the numbers in docs/benchmarks.md.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from benchmarks.cli import SECONDS_OR_ZERO, check_env, check_out_dir, parser
from benchmarks.system_run import ROOT
from tests.support.live_run import actor_pid, learner_steps, ray_info, summary, wait_for


class LogWatcher:
    """Reads a run's output in a thread; remembers when each line arrived."""

    def __init__(self, proc: subprocess.Popen):
        self.lines: list[tuple[float, str]] = []
        self.thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self.thread.start()

    def _read(self, proc):
        for line in proc.stdout:
            self.lines.append((time.monotonic(), line.rstrip()))

    def first_after(self, t0: float, text: str, timeout: float) -> float:
        """Seconds from t0 until a line containing ``text`` appeared."""

        def seen():
            return next((t for t, line in self.lines if t >= t0 and text in line), None)

        return wait_for(seen, timeout, repr(text)) - t0


def saved_counters(run: Path) -> dict:
    """The counters of the run's last checkpoint, its tensors loaded onto the CPU: a
    checkpoint written by a GPU learner names CUDA tensors this process need not have."""
    import torch

    return torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)["counters"]


def updates_per_s(run: Path, around_wall_s: float, window: float = 10.0) -> tuple[float, float]:
    """Mean updates/s in metrics.csv in the window before and after a moment of the run."""
    with open(run / "metrics.csv") as f:
        rows = [(float(r["wall_s"]), float(r["updates_per_s"] or 0)) for r in csv.DictReader(f)]
    before = [u for t, u in rows if around_wall_s - window <= t < around_wall_s]
    after = [u for t, u in rows if around_wall_s <= t < around_wall_s + window]
    mean = lambda xs: sum(xs) / len(xs) if xs else float("nan")  # noqa: E731
    return mean(before), mean(after)


def run_wall_s(run: Path) -> float:
    with open(run / "metrics.csv") as f:
        return float(list(csv.DictReader(f))[-1]["wall_s"])


def parse(argv):
    ap = parser(__doc__.splitlines()[0])
    ap.add_argument("--out-dir", default="runs/chaos")
    ap.add_argument("--env", default="CartPole-v1")
    ap.add_argument("--settle", type=SECONDS_OR_ZERO, default=20.0, help="seconds between events")
    args = ap.parse_args(argv)
    check_env(ap, "--env", args.env)
    check_out_dir(ap, "--out-dir", args.out_dir)
    return args


def start_run(args, run: Path) -> subprocess.Popen:
    flags = ["--env", args.env, "--num-actors", "2", "--envs-per-actor", "2", "--log-interval", "1"]
    flags += ["--snapshot-interval", "5", "--checkpoint-period", "500", "--run-dir", str(run)]
    return subprocess.Popen(
        [sys.executable, "-m", "learner.main", *flags, "--time-limit", "3600"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def kill_actor(args, run: Path, info, log: LogWatcher) -> dict:
    """1. an actor: SIGKILL, then the time until the driver reports it restarted."""
    wall = run_wall_s(run)
    t0 = time.monotonic()
    os.kill(wait_for(lambda: actor_pid(info, "actor-1"), 30, "actor-1"), signal.SIGKILL)
    back = log.first_after(t0, "actor-1 restarted", 180)
    time.sleep(args.settle)
    return {"recovery_s": round(back, 1), "updates_per_s_before_after": updates_per_s(run, wall)}


def kill_replay(args, run: Path, info, log: LogWatcher) -> dict:
    """2. the replay: SIGKILL, then the time until it is back from its snapshot."""
    wall = run_wall_s(run)
    t0 = time.monotonic()
    os.kill(wait_for(lambda: actor_pid(info, "replay-0"), 30, "replay-0"), signal.SIGKILL)
    back = log.first_after(t0, "restarted from its snapshot", 180)
    time.sleep(args.settle)
    line = next(line for t, line in log.lines if t >= t0 and "restarted from its snapshot" in line)
    return {
        "recovery_s": round(back, 1),
        "report": line.split("raydqn: ")[-1],
        "updates_per_s_before_after": updates_per_s(run, wall),
    }


def kill_learner(run: Path, proc: subprocess.Popen) -> dict:
    """3. the learner itself: SIGKILL the driver, ``--resume``, and the time to its first
    update past the checkpoint."""
    before = max(learner_steps(run))
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    saved = saved_counters(run)
    t0 = time.monotonic()
    resumed = subprocess.Popen(
        [sys.executable, "-m", "learner.main", "--resume", str(run), "--time-limit", "40"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    wait_for(
        lambda: max(learner_steps(run)) > saved["learner_steps"] + 1 and max(learner_steps(run)) != before,
        300,
        "an update after the resume",
    )
    back = time.monotonic() - t0
    resumed.communicate(timeout=300)
    s = summary(run)
    return {
        "recovery_s": round(back, 1),
        "updates_lost": before - saved["learner_steps"],
        "replay_restored_records": s["replay"]["restored_records"],
        "learner_steps_after_resume": s["learner_steps"],
    }


def main(argv=None) -> int:
    args = parse(argv)
    run = Path(args.out_dir) / f"run-{time.strftime('%Y%m%d-%H%M%S')}"
    proc = start_run(args, run)
    log = LogWatcher(proc)
    results = {}
    try:
        info = ray_info(run)
        wait_for(lambda: max(learner_steps(run), default=0) > 200, 180, "training")
        time.sleep(args.settle)
        results["actor killed"] = kill_actor(args, run, info, log)
        print("actor-1 killed:", results["actor killed"], flush=True)
        results["replay killed"] = kill_replay(args, run, info, log)
        print("replay-0 killed:", results["replay killed"], flush=True)
        results["learner killed"] = kill_learner(run, proc)
        print("learner killed and resumed:", results["learner killed"], flush=True)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
