"""The processes of a running system: what each one is, and its memory and CPU over time.

A run of ``learner.main`` is a driver plus Ray's worker processes (our actors, the
replay) plus Ray's own daemons. :class:`ProcSampler` samples the resident memory (RSS and
PSS) and CPU seconds of every one of them with psutil and keeps the three kinds apart, so
a figure can say "ours" without counting Ray's dashboard; :func:`cpu_delta` and
:func:`foreign_cores` turn two samples into cores used over the interval between them.
"""

from __future__ import annotations

import os
import time

from benchmarks.machine import busy_cpu_s, psutil

MB = 1024 * 1024
RAY_DAEMON_WORKERS = ("DashboardAgent", "RuntimeEnvAgent")


def classify(proc: psutil.Process, root_pid: int) -> tuple[str, str]:
    """(category, label) of one process of a run: ``driver``; ``worker``: Ray worker
    processes running our code (actors ``ray::actor-3:ActorShell.run``, the replay, idle
    workers); ``ray_system``: Ray's own daemons (gcs_server, raylet, dashboard and its
    modules, the dashboard and runtime-env agents, log monitor, autoscaler monitor)."""
    if proc.pid == root_pid:
        return "driver", "driver"
    try:
        cmd = proc.cmdline()
        name = proc.name()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return "gone", "?"
    first = cmd[0] if cmd else name
    if first.startswith("ray::"):
        label = first.split()[0]
        return ("ray_system" if any(d in label for d in RAY_DAEMON_WORKERS) else "worker"), label
    if "default_worker.py" in " ".join(cmd):
        return "worker", "ray::(starting)"
    label = os.path.basename(first.split()[0]) if first else name
    for part in cmd[:3]:
        base = os.path.basename(part)
        if base.endswith(".py") or base in ("gcs_server", "raylet"):
            label = base
    return "ray_system", label


def process_kind(entry: dict) -> str:
    """A short name for a process of the run: driver, actors, replay, env runner, ..."""
    label = entry["label"]
    if entry["category"] == "driver":
        return "driver"
    for part, kind in (("ActorShell", "actors"), ("ReplayServer", "replay"), ("EnvRunner", "env runners")):
        if part in label:
            return kind
    if entry["category"] == "worker":
        return "other Ray workers"
    return "Ray daemons"


class ProcSampler:
    """Resident memory (RSS and PSS) and CPU seconds of a process and all its descendants.

    PSS splits pages shared between processes (Ray's object store, libraries) among them,
    so the PSS sum is the memory the run really holds; the RSS sum counts shared pages
    once per process that maps them.
    """

    CATEGORIES = ("driver", "worker", "ray_system")

    def __init__(self, root_pid: int, pss: bool = True):
        self.root_pid = root_pid
        self.pss = pss
        self.peak = {f"{c}_{k}": 0.0 for c in self.CATEGORIES for k in ("rss", "pss")}
        self.peak["ours_rss"] = self.peak["ours_pss"] = 0.0
        self.cpu_seen: dict[int, tuple[str, str, float]] = {}  # pid -> (category, label, cpu s)
        self.peak_by_kind: dict[str, dict] = {}  # kind -> {"count", "rss_mb", "pss_mb"} at the peak of the total RSS
        self.last: dict = {}

    def processes(self) -> list[psutil.Process]:
        try:
            root = psutil.Process(self.root_pid)
            return [root] + root.children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def sample(self) -> dict:
        out = {f"{c}_{k}": 0.0 for c in self.CATEGORIES for k in ("rss", "pss")}
        per = []
        for p in self.processes():
            measured = self._measure(p)
            if measured is None:
                continue
            entry, rss, pss = measured
            out[f"{entry['category']}_rss"] += rss
            out[f"{entry['category']}_pss"] += pss
            per.append(entry)
        out["ours_rss"] = out["driver_rss"] + out["worker_rss"]
        if out["ours_rss"] + out["ray_system_rss"] >= self.peak.get("all_rss", 0.0):
            self.peak_by_kind = _by_kind(per)  # the breakdown at the peak of the run's total RSS
            self.peak["all_rss"] = out["ours_rss"] + out["ray_system_rss"]
        out["ours_pss"] = out["driver_pss"] + out["worker_pss"]
        for k, v in out.items():
            self.peak[k] = max(self.peak[k], v)
        out["t"] = time.monotonic()
        out["machine_busy_cpu_s"] = busy_cpu_s()
        out["per_process"] = per
        self.last = out
        return out

    def _measure(self, p: psutil.Process) -> tuple[dict, int, int] | None:
        """(entry of ``per_process``, RSS bytes, PSS bytes) of one process; None if it is
        gone or not ours to read."""
        try:
            cat, label = classify(p, self.root_pid)  # titles change as workers take tasks
            if cat == "gone":
                return None
            if self.pss:
                info = p.memory_full_info()
                rss, pss = info.rss, info.pss
            else:
                rss = pss = p.memory_info().rss
            t = p.cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            return None
        self.cpu_seen[p.pid] = (cat, label, t.user + t.system)
        return (
            {
                "pid": p.pid,
                "category": cat,
                "label": label,
                "rss_mb": rss / MB,
                "pss_mb": pss / MB,
                "cpu_s": t.user + t.system,
            },
            rss,
            pss,
        )

    def pids(self, part: str) -> list[int]:
        """Live processes (as last sampled) whose label contains ``part``, oldest pid first."""
        return sorted(p["pid"] for p in self.last.get("per_process", []) if part in p["label"])


def _by_kind(per: list[dict]) -> dict[str, dict]:
    kinds: dict[str, dict] = {}
    for e in per:
        k = kinds.setdefault(process_kind(e), {"count": 0, "rss_mb": 0.0, "pss_mb": 0.0})
        k["count"] += 1
        k["rss_mb"] += e["rss_mb"]
        k["pss_mb"] += e["pss_mb"]
    return kinds


def cpu_delta(s0: dict, s1: dict, pred=lambda p: True) -> float:
    """CPU seconds used between two samples by the processes for which ``pred(entry)`` holds
    (an entry of ``per_process``); a process born in between counts from 0."""
    before = {p["pid"]: p["cpu_s"] for p in s0["per_process"]}
    return sum(p["cpu_s"] - before.get(p["pid"], 0.0) for p in s1["per_process"] if pred(p))


def foreign_cores(s0: dict, s1: dict) -> float:
    """Cores used between two samples by processes that are not the run's: the machine's
    other work (this benchmark's own polling included, a few percent of a core)."""
    dt = max(s1["t"] - s0["t"], 1e-9)
    ours = cpu_delta(s0, s1)
    return max(s1["machine_busy_cpu_s"] - s0["machine_busy_cpu_s"] - ours, 0.0) / dt


def sample_near(samples: list[dict], t: float) -> dict | None:
    return min(samples, key=lambda s: abs(s["t"] - t)) if samples else None
