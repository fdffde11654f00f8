"""The real system as a benchmark runs it: ``python -m learner.main`` in a subprocess, watched.

:class:`SystemRun` starts the real entry point (a real local Ray instance), reads its
``metrics.csv`` as rows appear and samples every process it started
(:class:`~benchmarks.procs.ProcSampler`); :func:`window_rate` turns the cumulative
counters of ``metrics.csv`` into a rate over a window, so no figure rests on one noisy
row; :func:`memory_projection` fits memory growth against the replay's fill. Nothing
here changes the system: it only starts it with flags and watches it.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.machine import psutil
from benchmarks.procs import MB, ProcSampler, process_kind

ROOT = Path(__file__).resolve().parents[1]


def read_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    rows = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            rows.append({k: (float(v) if v not in ("", None) else None) for k, v in r.items()})
    return rows


class SystemRun:
    """``python -m learner.main ARGS --run-dir DIR`` (or another ``module`` that writes the
    same ``metrics.csv`` columns) as a subprocess, watched.

    ``poll()`` (call it often) samples memory and CPU of the run's processes and reads new
    metrics rows; each row gets ``t_local``, the monotonic time of this process when the
    row was written (estimated from the earliest sighting of each row, so within one poll).
    ``stop()`` sends SIGINT (the run checkpoints and exits as on Ctrl-C) and, if it hangs,
    kills the processes it started, one by one by id.
    """

    def __init__(
        self,
        argv: list[str],
        run_dir: Path,
        python: str = sys.executable,
        pss: bool = True,
        env: dict | None = None,
        module: str = "learner.main",
        worker_niceness: int | None = None,
    ):
        self.module = module
        self.worker_niceness = worker_niceness
        self.argv = [str(a) for a in argv]
        self.run_dir = Path(run_dir)
        self.python = python
        self.pss = pss
        self.env = env
        self.rows: list[dict] = []
        self.samples: list[dict] = []
        self.offset: float | None = None  # t_local = wall_s + offset
        self.proc: subprocess.Popen | None = None
        self.sampler: ProcSampler | None = None
        self.known_pids: dict[int, float] = {}  # pid -> create_time, to end only those very processes

    @property
    def command(self) -> str:
        return f"python -m {self.module} " + " ".join(self.argv + ["--run-dir", str(self.run_dir)])

    def start(self) -> "SystemRun":
        self.run_dir.parent.mkdir(parents=True, exist_ok=True)
        self.log = open(self.run_dir.parent / (self.run_dir.name + ".log"), "w")
        self.t_start = time.monotonic()
        # RAY_ADDRESS=local: a fresh local Ray instance even when another one runs on this
        # machine (ray.init() with no address joins the last instance started here, found
        # through /tmp/ray/ray_current_cluster, and learner.main then fails with "When
        # connecting to an existing cluster, num_cpus and num_gpus must not be provided").
        env = dict(os.environ if self.env is None else self.env)
        env.setdefault("RAY_ADDRESS", "local")
        if self.worker_niceness is not None:
            # Ray starts worker processes (actors, the replay) at nice 15 by default; the
            # driver (the learner) stays at 0, so on shared cores the learner starves them.
            env["RAY_worker_niceness"] = str(self.worker_niceness)
        self.proc = subprocess.Popen(
            [self.python, "-m", self.module, *self.argv, "--run-dir", str(self.run_dir)],
            cwd=ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        self.sampler = ProcSampler(self.proc.pid, pss=self.pss)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def poll(self) -> None:
        now = time.monotonic()
        if self.alive():
            s = self.sampler.sample()
            for p in s["per_process"]:
                if p["pid"] not in self.known_pids:
                    try:
                        self.known_pids[p["pid"]] = psutil.Process(p["pid"]).create_time()
                    except psutil.NoSuchProcess:
                        pass
            self.samples.append(s)
        rows = read_rows(self.run_dir / "metrics.csv")
        for r in rows[len(self.rows) :]:
            off = now - r["wall_s"]
            self.offset = off if self.offset is None else min(self.offset, off)
        self.rows = rows
        for r in self.rows:
            r["t_local"] = r["wall_s"] + self.offset

    def watch(self, until, timeout: float, interval: float = 0.5) -> bool:
        """Poll until ``until(self)`` is true (True), the run ends or ``timeout`` s pass (False)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.poll()
            if until(self):
                return True
            if not self.alive():
                self.poll()
                return bool(until(self))
            time.sleep(interval)
        return False

    def first_row(self, pred) -> dict | None:
        return next((r for r in self.rows if pred(r)), None)

    def stop(self, timeout: float = 60.0) -> int:
        if self.proc is None:
            return -1
        if self.alive():
            try:
                os.kill(self.proc.pid, signal.SIGINT)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        # Anything it started that outlived it (Ray daemons, workers): end them by id.
        time.sleep(1.0)
        for pid, created in self.known_pids.items():
            try:
                p = psutil.Process(pid)
                if p.create_time() == created and pid != os.getpid():
                    p.kill()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        self.log.close()
        self.poll()
        return self.proc.returncode

    def summary(self) -> dict:
        path = self.run_dir / "summary.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def log_tail(self, n: int = 20) -> str:
        try:
            return "".join(open(self.log.name).readlines()[-n:])
        except OSError:
            return ""


def value_at(rows: list[dict], key: str, t: float) -> float:
    """A cumulative counter at local time ``t``, linearly interpolated between rows."""
    pts = [(r["t_local"], r[key]) for r in rows if r.get(key) is not None]
    if not pts:
        return float("nan")
    if t <= pts[0][0]:
        return pts[0][1]
    for (t0, v0), (t1, v1) in zip(pts, pts[1:]):
        if t0 <= t <= t1:
            return v0 + (v1 - v0) * (t - t0) / max(t1 - t0, 1e-9)
    return pts[-1][1]


def window_rate(rows: list[dict], key: str, t0: float, t1: float) -> float:
    """Rate of the cumulative counter ``key`` over rows whose times lie in [t0, t1]:
    (last - first) / (their time difference)."""
    inside = [r for r in rows if t0 - 1e-6 <= r["t_local"] <= t1 + 1e-6 and r.get(key) is not None]
    if len(inside) < 2:
        return float("nan")
    a, b = inside[0], inside[-1]
    return (b[key] - a[key]) / max(b["t_local"] - a["t_local"], 1e-9)


def window_bounds(rows: list[dict], t0: float, t1: float) -> tuple[float, float]:
    inside = [r["t_local"] for r in rows if t0 - 1e-6 <= r["t_local"] <= t1 + 1e-6]
    return (inside[0], inside[-1]) if len(inside) >= 2 else (float("nan"), float("nan"))


def memory_projection(
    run: SystemRun, size_key: str, kinds: tuple[str, ...], t_from: float, capacity: int, size_cap: int | None = None
) -> dict:
    """RSS growth of the processes of ``kinds`` (see :func:`process_kind`) per stored item,
    fitted over the samples from ``t_from`` on against the replay size (``size_key`` of the
    metrics rows, interpolated), and the run's RSS ("ours") projected to ``capacity`` items:
    last RSS + slope x (capacity - last size). An estimate, labelled as such wherever printed."""
    xs, ys = [], []
    for s in run.samples:
        if s["t"] < t_from:
            continue
        size = value_at(run.rows, size_key, s["t"])
        if size != size:
            continue
        if size_cap:
            size = min(size, size_cap)
        xs.append(size)
        ys.append(sum(e["rss_mb"] for e in s["per_process"] if process_kind(e) in kinds))
    if len(xs) < 5 or max(xs) - min(xs) < 5000:  # below that, start-up allocations dominate the slope
        return {"error": "too little replay growth to fit (under 5,000 items)"}
    slope, _ = np.polyfit(np.asarray(xs, float), np.asarray(ys, float), 1)
    last = [s for s in run.samples if s["ours_rss"] > 0][-1]  # not a sample taken as the run exited
    size_now = value_at(run.rows, size_key, last["t"])
    if size_cap:
        size_now = min(size_now, size_cap)
    ours_now = last["ours_rss"] / MB
    return {
        "mb_per_1k_items": slope * 1000,
        "fitted_from_items": min(xs),
        "fitted_to_items": max(xs),
        "ours_rss_now_mb": ours_now,
        "items_now": size_now,
        "projected_ours_rss_mb": ours_now + slope * max(capacity - size_now, 0),
        "capacity": capacity,
    }


def tmp_dir(prefix: str) -> Path:
    """A fresh directory for a benchmark's run directories (``--out-dir`` not given)."""
    return Path(tempfile.mkdtemp(prefix=prefix))
