"""Shared pieces of the benchmarks: running the real system as a subprocess and watching it.

* :class:`SystemRun` starts ``python -m learner.main`` (the real entry point, a real local
  Ray instance), reads its ``metrics.csv`` as rows appear, and samples the resident memory
  and CPU time of every process it started (the driver, Ray's worker processes, Ray's own
  daemons, kept apart) with psutil, which Ray ships.
* :func:`window_rate` turns the cumulative counters of ``metrics.csv`` into a rate over a
  window, so a benchmark never depends on one noisy 5-second row.
* :func:`pyspy_record` / :func:`stack_shares`: py-spy on a live process (when py-spy is
  installed) and the share of samples under chosen functions.

Nothing here changes the system; it only starts it with flags and watches it.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

try:
    import psutil
except ImportError:  # Ray ships psutil in ray/thirdparty_files and puts it on sys.path when imported
    import ray  # noqa: F401
    import psutil

ROOT = Path(__file__).resolve().parents[1]
MB = 1024 * 1024


# --------------------------------------------------------------------------- machine


def machine() -> dict:
    """What the figures were taken on; load averages tell how busy the shared machine was."""
    import torch

    model = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cuda = torch.cuda.is_available()
    return {
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu": model or platform.processor(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }


def describe_machine(m: dict) -> str:
    return (f"machine: {m['cores']} cores ({m['cpu']}), {m['memory_gb']} GB, "
            f"{'GPU ' + m['gpu'] if m['gpu'] else 'no GPU'}, torch {m['torch']}, load average {m['loadavg']}")


def busy_cpu_s() -> float:
    """CPU seconds the whole machine has been busy (all processes, everyone's)."""
    t = psutil.cpu_times()
    return sum(getattr(t, k, 0.0) for k in ("user", "nice", "system", "irq", "softirq", "steal", "guest"))


class ForeignLoad:
    """CPU cores used by everything else on the machine over an interval (this machine is
    shared): machine busy time minus the CPU time of the processes we account for."""

    def __init__(self):
        self.t0, self.busy0 = time.monotonic(), busy_cpu_s()

    def cores(self, ours_cpu_s: float) -> float:
        dt = max(time.monotonic() - self.t0, 1e-9)
        return max(busy_cpu_s() - self.busy0 - ours_cpu_s, 0.0) / dt


def wait_quiet(threshold: float = 0.25, timeout: float = 0.0, probe_s: float = 3.0) -> float:
    """Wait (at most ``timeout`` s) until the rest of the machine uses under ``threshold``
    cores over ``probe_s`` seconds; returns the last reading. The machine is shared, and
    torch's OpenMP threads collapse when a core they need is busy, so a phase that starts
    under foreign load measures the load, not the code."""
    deadline = time.monotonic() + timeout
    while True:
        probe = ForeignLoad()
        time.sleep(probe_s)
        load = probe.cores(0.0)
        if load < threshold or time.monotonic() >= deadline:
            return load
        print(f"  (waiting for the machine to quieten: other work uses {load:.2f} cores)", flush=True)


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# --------------------------------------------------------------------------- output


def table(headers: list[str], rows: list[list], title: str | None = None) -> str:
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = [] if title is None else [title]
    for k, r in enumerate(cells):
        lines.append("  ".join(c.rjust(w) if k and _numeric(c) else c.ljust(w) for c, w in zip(r, widths)).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(c) -> str:
    if c is None:
        return "-"
    if isinstance(c, float):
        if c != c:
            return "nan"
        if abs(c) >= 100:
            return f"{c:,.0f}"
        if abs(c) >= 10:
            return f"{c:.1f}"
        return f"{c:.2f}" if abs(c) >= 1 else f"{c:.3f}"
    if isinstance(c, int):
        return f"{c:,}"
    return str(c)


def _numeric(s: str) -> bool:
    return s.replace(",", "").replace(".", "").replace("-", "").replace("x", "").replace("%", "").isdigit()


def final_json(obj: dict) -> None:
    """The last line a benchmark prints: everything it measured, as one JSON object."""
    print(json.dumps(obj, default=_jsonable, sort_keys=False), flush=True)


def _jsonable(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return str(x)


def verdict(value: float | None, target: float, higher_is_better: bool = True) -> str:
    if value is None:
        return "n/a"
    ok = value >= target if higher_is_better else value <= target
    return "MET" if ok else "missed"


# --------------------------------------------------------------------------- processes


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
            try:
                cat, label = classify(p, self.root_pid)  # titles change as workers take tasks
                if cat == "gone":
                    continue
                if self.pss:
                    info = p.memory_full_info()
                    rss, pss = info.rss, info.pss
                else:
                    rss = p.memory_info().rss
                    pss = rss
                t = p.cpu_times()
                self.cpu_seen[p.pid] = (cat, label, t.user + t.system)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            out[f"{cat}_rss"] += rss
            out[f"{cat}_pss"] += pss
            per.append({"pid": p.pid, "category": cat, "label": label, "rss_mb": rss / MB, "pss_mb": pss / MB,
                        "cpu_s": t.user + t.system})
        kinds: dict[str, dict] = {}
        for e in per:
            k = kinds.setdefault(process_kind(e), {"count": 0, "rss_mb": 0.0, "pss_mb": 0.0})
            k["count"] += 1
            k["rss_mb"] += e["rss_mb"]
            k["pss_mb"] += e["pss_mb"]
        out["ours_rss"] = out["driver_rss"] + out["worker_rss"]
        if out["ours_rss"] + out["ray_system_rss"] >= self.peak.get("all_rss", 0.0):
            self.peak_by_kind = kinds  # the breakdown at the peak of the run's total RSS
            self.peak["all_rss"] = out["ours_rss"] + out["ray_system_rss"]
        out["ours_pss"] = out["driver_pss"] + out["worker_pss"]
        for k, v in out.items():
            self.peak[k] = max(self.peak[k], v)
        out["t"] = time.monotonic()
        out["machine_busy_cpu_s"] = busy_cpu_s()
        out["per_process"] = per
        self.last = out
        return out

    def pids(self, part: str) -> list[int]:
        """Live processes (as last sampled) whose label contains ``part``, oldest pid first."""
        return sorted(p["pid"] for p in self.last.get("per_process", []) if part in p["label"])


# --------------------------------------------------------------------------- the system


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

    def __init__(self, argv: list[str], run_dir: Path, python: str = sys.executable, pss: bool = True, env: dict | None = None,
                 module: str = "learner.main", worker_niceness: int | None = None):
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
        self.proc = subprocess.Popen([self.python, "-m", self.module, *self.argv, "--run-dir", str(self.run_dir)],
                                     cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
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
        for r in rows[len(self.rows):]:
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


# --------------------------------------------------------------------------- py-spy


def pyspy_path() -> str | None:
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


def pyspy_start(pid: int, seconds: float, out: Path, rate: int = 50) -> subprocess.Popen | None:
    """Start sampling ``pid`` for ``seconds`` with py-spy (collapsed stacks, idle included,
    non-blocking so the process is not paused); None when py-spy is not installed."""
    exe = pyspy_path()
    if exe is None:
        return None
    return subprocess.Popen([exe, "record", "-p", str(pid), "-d", str(int(seconds)), "-r", str(rate), "-f", "raw",
                             "--idle", "--nolineno", "--nonblocking", "-o", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def read_stacks(path: Path) -> list[tuple[list[str], int]]:
    stacks = []
    if not path.exists():
        return stacks
    for line in path.read_text().splitlines():
        frames, _, count = line.rpartition(" ")
        if frames and count.isdigit():
            stacks.append((frames.split(";"), int(count)))
    return stacks


def frame_match(frame: str, needle: str) -> bool:
    """``"func|path/part"`` matches a py-spy frame ``[Class.]func (.../path/part.py)``; a needle
    without ``|`` matches any frame containing it."""
    if "|" in needle:
        func, path = needle.split("|", 1)
        name, _, where = frame.partition(" (")
        return (name == func or name.endswith("." + func)) and path in where
    return needle in frame


def stack_shares(stacks, keep: str | None, categories: list[tuple[str, list[str]]]) -> tuple[dict, int]:
    """Share of samples per category. Only stacks containing a frame that includes ``keep``
    count (e.g. the one thread of interest). A stack goes to the first category one of
    whose needles appears in one of its frames (outermost categories first in the list
    win, so list the specific ones first); the rest is 'other'."""
    totals: dict[str, int] = {name: 0 for name, _ in categories}
    totals["other"] = 0
    n = 0
    for frames, count in stacks:
        if keep is not None and not any(frame_match(f, keep) for f in frames):
            continue
        n += count
        for name, needles in categories:
            if any(any(frame_match(f, nd) for nd in needles) for f in frames):
                totals[name] += count
                break
        else:
            totals["other"] += count
    return ({k: v / n for k, v in totals.items()} if n else {}), n


def top_leaves(stacks, keep: str | None, k: int = 8) -> list[tuple[str, float]]:
    """The innermost Python frames that take the most samples (self time)."""
    counts: dict[str, int] = {}
    n = 0
    for frames, count in stacks:
        if keep is not None and not any(frame_match(f, keep) for f in frames):
            continue
        n += count
        counts[frames[-1]] = counts.get(frames[-1], 0) + count
    return [(f, c / n) for f, c in sorted(counts.items(), key=lambda x: -x[1])[:k]] if n else []


def tmp_dir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))


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


def spy_processes(run: SystemRun, targets: dict, seconds: float, out_prefix: Path) -> dict:
    """py-spy on several live processes of ``run`` at once, for ``seconds``, while the run
    goes on being polled. ``targets``: name -> (pid, keep, categories) as for
    :func:`stack_shares`. Returns name -> {file, samples, shares, top_self} (or {error})."""
    spies, out = {}, {}
    for name, (pid, keep, cats) in targets.items():
        if pid is None:
            out[name] = {"error": "process not found"}
            continue
        path = Path(f"{out_prefix}-{name}.pyspy.txt")
        spy = pyspy_start(pid, seconds, path)
        if spy is None:
            out[name] = {"error": "py-spy is not installed (pip install py-spy)"}
            continue
        spies[name] = (spy, path, keep, cats)
    end = time.monotonic() + seconds + 20
    while any(s.poll() is None for s, *_ in spies.values()) and time.monotonic() < end:
        run.poll()
        time.sleep(0.5)
    for name, (spy, path, keep, cats) in spies.items():
        if spy.poll() is None:
            spy.kill()
            spy.wait()
        stacks = read_stacks(path)
        shares, n = stack_shares(stacks, keep, cats)
        out[name] = {"file": str(path), "samples": n, "shares": shares, "top_self": top_leaves(stacks, keep)}
    return out


def print_spy(title: str, result: dict) -> None:
    if "shares" not in result:
        print(f"{title}: {result.get('error', 'no samples')}")
        return
    print(table([title, "share of samples"], [[k, v] for k, v in result["shares"].items()]))
    print(f"  ({result['samples']} samples; top self time: "
          + "; ".join(f"{f} {s:.0%}" for f, s in result["top_self"][:5]) + ")")


# Where the learner driver's main loop spends its time (py-spy categories, first match wins).
DRIVER_CATEGORIES = [
    ("learner update (DQNLearner.update)", ["update|learner/dqn.py"]),
    ("stats polling (poll_stats, check_actors)", ["poll_stats|learner/trainer.py", "check_actors|learner/trainer.py"]),
    ("weights publish (publish_weights)", ["publish_weights|learner/trainer.py"]),
    ("metrics, TensorBoard, checkpoint", ["write_metrics|learner/trainer.py", "save|learner/trainer.py", "progress_line|"]),
    ("waiting for a sample (ray.get in _loop)", ["get|ray/_private/worker.py"]),
    ("sample / priority requests (.remote)", ["remote|ray/actor.py", "_remote|ray/actor.py"]),
]
DRIVER_KEEP = "_loop|learner/trainer.py"

REPLAY_CATEGORIES = [
    ("sample (rebuild stacks, PER)", ["sample|replay_server/remote.py"]),
    ("add (decode + insert)", ["add|replay_server/remote.py"]),
    ("update_priorities", ["update_priorities|replay_server/remote.py"]),
    ("insert_allowance (rate limiter polls)", ["insert_allowance|replay_server/remote.py"]),
    ("stats", ["stats|replay_server/remote.py"]),
]

ACTOR_CATEGORIES = [
    ("weights swap (set_weights)", ["set_weights|actors/actor.py"]),
    ("emulator + preprocessing (env.step)", ["step|common/envs.py"]),
    ("inference (_q_values)", ["_q_values|actors/actor.py"]),
    ("StepBatch + lz4 (_batch)", ["_batch|actors/actor.py"]),
    ("initial priorities (_resolve)", ["_resolve|actors/actor.py"]),
    ("msgpack + Ray send (_send)", ["_send|actors/remote.py"]),
    ("rate limiter poll (ray.get insert_allowance)", ["get|ray/_private/worker.py"]),
    ("back-pressure (ray.wait on sends)", ["wait|ray/_private/worker.py"]),
    ("throttled sleep (_stop.wait)", ["wait|threading.py"]),
]
ACTOR_KEEP = "run|actors/remote.py"


def memory_projection(run: SystemRun, size_key: str, kinds: tuple[str, ...], t_from: float, capacity: int,
                      size_cap: int | None = None) -> dict:
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
    return {"mb_per_1k_items": slope * 1000, "fitted_from_items": min(xs), "fitted_to_items": max(xs),
            "ours_rss_now_mb": ours_now, "items_now": size_now,
            "projected_ours_rss_mb": ours_now + slope * max(capacity - size_now, 0), "capacity": capacity}
