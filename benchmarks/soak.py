"""Soak: a long run with 2 actors, watched for leaks.

    python -m benchmarks.soak --minutes 30 --out-dir runs/soak

Starts ``python -m learner.main`` (Breakout, 2 actors, a replay small enough to fill and
wrap early), and every ``--every`` seconds records the resident memory of every process
of the run (the driver and each Ray worker, by name), the object store in use, and the
Ray tasks not yet finished (the actors' messages queued at the replay, samples queued
for the learner). Memory is recorded twice: RSS, and RSS minus shared pages (a process's
own memory; RSS also counts the pages of Ray's shared object store it has touched, which
grows without any allocation, see :func:`snapshot_processes`). At the end it fits a line to each series after the warm-up
(``--warmup-minutes``, by then the replay is full and evicting) and prints the slopes:
flat memory and a bounded queue are what "no leak" means. Samples go to soak.csv.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil

from benchmarks.cli import SECONDS, SECONDS_OR_ZERO, at_least, check_env, check_learner_flags, check_out_dir, parser


def process_name(p: psutil.Process) -> str:
    try:
        cmd = p.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return "?"
    if cmd and cmd[0].startswith("ray::"):
        # ray::ActorShell, ray::ReplayServer, ray::IDLE; without the method a worker is in
        # (ray::ReplayServer.sample), which would split one process's series in two.
        return cmd[0].split(".")[0]
    text = " ".join(cmd)
    for key in (
        "learner.main",
        "raylet",
        "gcs_server",
        "dashboard",
        "log_monitor",
        "monitor.py",
        "runtime_env",
        "plasma",
    ):
        if key in text:
            return key
    return p.name()


def snapshot_processes(root_pid: int) -> dict[str, tuple[float, float]]:
    """(RSS, shared resident) in MB of each process under the driver, keyed name#pid.

    RSS counts the pages of Ray's object store a process has touched: it is shared memory
    mapped into every worker, and a process that writes objects (the replay's answers, the
    driver's weights) touches more of its pages as the store's allocator moves through them,
    up to the store's size, without allocating anything. RSS - shared, the process's own
    (anonymous) memory, is what a leak makes grow."""
    out = {}
    try:
        root = psutil.Process(root_pid)
        procs = [root] + root.children(recursive=True)
    except psutil.NoSuchProcess:
        return out
    for p in procs:
        try:
            m = p.memory_info()
            if m.rss == 0:  # a killed actor not yet reaped (a zombie) holds no memory: not a sample
                continue
            out[f"{process_name(p)}#{p.pid}"] = (m.rss / 2**20, m.shared / 2**20)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return out


def replay_beyond_frames(mem: dict[str, tuple[float, float]], state: dict) -> dict:
    """The replay's own memory minus the compressed frames it holds (its stats' frame_bytes).

    A full replay's frames are not a fixed size: as the agent plays better its screens
    compress less well (Breakout: more bricks gone, the ball in play longer), so its own
    memory may rise with nothing leaking. What is left after the frames is what must be flat.
    With one shard (the soak's) the one ReplayServer process is replay-0."""
    frames = state.get("replay_frames_mb:replay-0")
    replays = [rss - shared for k, (rss, shared) in mem.items() if k.startswith("ray::ReplayServer#")]
    if frames is None or len(replays) != 1:
        return {}
    return {"beyond_frames_mb:replay-0": round(replays[0] - frames, 1)}


def ray_state(address: str, namespace: str) -> dict:
    """Object store bytes in use and unfinished tasks, asked of the run's Ray instance."""
    code = (
        "import ray, json\n"
        f"ray.init(address={address!r}, namespace={namespace!r}, logging_level='ERROR', log_to_driver=False)\n"
        "from ray.util.state import list_tasks, list_objects\n"
        "objs = list_objects(limit=10000, raise_on_missing_output=False)\n"
        "used = sum((o.object_size or 0) for o in objs)\n"
        "tasks = list_tasks(filters=[('state', '!=', 'FINISHED')], limit=10000, raise_on_missing_output=False)\n"
        "kinds = {}\n"
        "for o in objs: kinds[f'objects:{o.reference_type}'] = kinds.get(f'objects:{o.reference_type}', 0) + 1\n"
        "frames = {}\n"
        "for j in range(64):\n"
        "    try: st = ray.get(ray.get_actor(f'replay-{j}').stats.remote(), timeout=10)\n"
        "    except Exception: break\n"
        "    frames[f'replay_frames_mb:replay-{j}'] = st.get('frame_bytes', 0) / 2**20\n"
        "print(json.dumps({'object_store_mb': used / 2**20, 'objects': len(objs), 'unfinished_tasks': len(tasks), **kinds, **frames}))\n"
    )
    # A local instance Ray started turns its token authentication on, and a client joins
    # it only in token mode; a cluster with authentication off, as the environment says.
    # The first mode that answers is kept.
    modes = sorted(("token", None), key=lambda m: m != _STATE_AUTH[0])
    for mode in modes:
        env = dict(os.environ, RAY_AUTH_MODE=mode) if mode else dict(os.environ)
        try:
            r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
            out = json.loads(r.stdout.strip().splitlines()[-1])
        except Exception:  # the run may be between states; a missing sample is not a failure
            continue
        _STATE_AUTH[0] = mode
        return out
    return {}


_STATE_AUTH: list = ["token"]  # the authentication mode the last state query answered in


def slope_per_hour(t_s: np.ndarray, y: np.ndarray) -> float:
    return slope_and_noise(t_s, y)[0]


def slope_and_noise(t_s: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares slope per hour and its standard error (the measurement noise a slope
    must exceed to mean anything)."""
    if len(t_s) < 3:
        return float("nan"), float("nan")
    x = t_s / 3600.0
    (slope, icept) = np.polyfit(x, y, 1)
    resid = y - (slope * x + icept)
    sxx = float(((x - x.mean()) ** 2).sum())
    stderr = float(np.sqrt((resid**2).sum() / (len(x) - 2) / sxx)) if sxx > 0 else float("nan")
    return float(slope), stderr


def kill_one_actor(root_pid: int, turn: int) -> str | None:
    """SIGKILL one of the run's actor processes (they take turns); its name, or None."""
    try:
        procs = psutil.Process(root_pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return None
    actors = sorted((p for p in procs if process_name(p).startswith("ray::ActorShell")), key=lambda p: p.pid)
    if not actors:
        return None
    victim = actors[turn % len(actors)]
    try:
        victim.kill()
    except psutil.NoSuchProcess:
        return None
    return f"ActorShell#{victim.pid}"


def parse_args(argv):
    ap = parser(__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=SECONDS, default=30.0)
    ap.add_argument("--warmup-minutes", type=SECONDS_OR_ZERO, default=8.0)
    ap.add_argument(
        "--every",
        type=SECONDS,
        default=30.0,
        help="seconds between samples (each asks Ray for its state: a short extra driver)",
    )
    ap.add_argument("--out-dir", default="runs/soak")
    ap.add_argument("--env", default="ALE/Breakout-v5")
    ap.add_argument(
        "--replay-capacity",
        type=at_least(int, 64),
        default=50_000,
        help="small, so the replay is full and evicting after a few minutes",
    )
    ap.add_argument(
        "--snapshot-interval", type=at_least(float, -1.0), default=60.0, help="seconds between replay snapshots"
    )
    ap.add_argument(
        "--kill-every",
        type=SECONDS_OR_ZERO,
        default=300.0,
        help="SIGKILL one actor process every this many seconds (0: never)",
    )
    args = ap.parse_args(argv)
    if args.warmup_minutes >= args.minutes:
        ap.error(
            f"--warmup-minutes={args.warmup_minutes:g}: must be less than --minutes={args.minutes:g}, or nothing is measured"
        )
    check_env(ap, "--env", args.env)
    check_out_dir(ap, "--out-dir", args.out_dir)
    check_learner_flags(ap, learner_flags(args))
    return args


def learner_flags(args) -> list[str]:
    """The settings of the run, as learner.main's flags (time limit and run dir apart)."""
    return [
        "--env",
        args.env,
        "--batch-size",
        "32",
        "--replay-capacity",
        str(args.replay_capacity),
        "--learning-starts",
        str(min(20_000, args.replay_capacity // 2)),
        "--snapshot-interval",
        str(args.snapshot_interval),
    ]


def learner_command(args, run: Path) -> list[str]:
    """``python -m learner.main``: 2 actors x 4 envs, the soak's settings, logging every 30 s."""
    flags = learner_flags(args)
    return [sys.executable, "-m", "learner.main", *flags[:2], "--num-actors", "2", "--envs-per-actor", "4"] + [
        *flags[2:],
        "--time-limit",
        str(args.minutes * 60),
        "--log-interval",
        "30",
        "--run-dir",
        str(run),
    ]


def sample_row(proc, run: Path, t: float, info: dict | None) -> tuple[dict, dict | None]:
    """One sample: each process's memory, Ray's state, the replay beyond its frames; printed."""
    if info is None and (run / "ray.json").exists():
        info = json.loads((run / "ray.json").read_text())
    mem = snapshot_processes(proc.pid)
    state = ray_state(info.get("gcs_address") or "auto", info["namespace"]) if info else {}
    row = {
        "t_s": round(t, 1),
        **{f"rss_mb:{k}": round(rss, 1) for k, (rss, _) in mem.items()},
        **{f"private_mb:{k}": round(rss - shared, 1) for k, (rss, shared) in mem.items()},
        **state,
        **replay_beyond_frames(mem, state),
    }
    total = sum(rss for rss, _ in mem.values())
    private = sum(rss - shared for rss, shared in mem.values())
    print(
        f"[{t:6.0f}s] processes {len(mem)}  rss {total:,.0f} MB (own {private:,.0f})  object store {state.get('object_store_mb', float('nan')):.1f} MB"
        f"  unfinished tasks {state.get('unfinished_tasks', '-')}",
        flush=True,
    )
    return row, info


def watch(proc, args, run: Path) -> tuple[list[dict], list[dict]]:
    """Samples every ``--every`` seconds until the run ends, killing an actor every
    ``--kill-every`` seconds; returns (samples, kills)."""
    rows: list[dict] = []
    kills: list[dict] = []
    t0 = time.monotonic()
    info = None
    while proc.poll() is None:
        time.sleep(args.every)
        if proc.poll() is not None:
            break  # the run ended while we slept: its Ray is gone, a state query would only time out
        t = time.monotonic() - t0
        if args.kill_every and t >= (len(kills) + 1) * args.kill_every and t < args.minutes * 60 - 30:
            victim = kill_one_actor(proc.pid, len(kills))
            kills.append({"t_s": round(t, 1), "killed": victim})
            print(f"[{t:6.0f}s] killed {victim}", flush=True)
        row, info = sample_row(proc, run, t, info)
        rows.append(row)
    return rows, kills


def write_csv(path: Path, rows: list[dict]) -> list[str]:
    keys = sorted({k for r in rows for k in r})
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    return keys


def fit_slopes(rows: list[dict], keys: list[str], warmup_minutes: float) -> dict:
    """A line fitted to each series after the warm-up (a process's own warm-up too); printed."""
    t = np.array([r["t_s"] for r in rows])
    after = t >= warmup_minutes * 60
    print(f"\nslopes after {warmup_minutes:g} min of warm-up ({after.sum()} samples):")
    result = {}
    for k in keys:
        if k == "t_s":
            continue
        present = np.array([k in r for r in rows])
        # A process born after the run's warm-up (an actor Ray restarted after a kill) has a
        # warm-up of its own: its first minutes of growth are not a leak.
        born = t[present][0]
        own = t >= born + warmup_minutes * 60 / 2 if born > t[0] + 60 else np.ones_like(present)
        mask = after & present & own
        y = np.array([r[k] for r, m in zip(rows, mask) if m], dtype=float)
        if len(y) < 5:
            if k.startswith("private_mb:") and present.any():
                print(f"  {k:45s} lived {t[present][-1] - born:5.0f} s from t={born:.0f} s: too short to fit")
            continue
        s, noise = slope_and_noise(t[mask], y)
        result[k] = {
            "first": float(y[0]),
            "last": float(y[-1]),
            "max": float(y.max()),
            "slope_per_hour": s,
            "slope_stderr_per_hour": noise,
            "born_s": float(born),
            "samples": int(len(y)),
        }
        print(
            f"  {k:45s} first {y[0]:9.1f}  last {y[-1]:9.1f}  max {y.max():9.1f}  slope {s:+9.2f} ± {noise:.2f}/h"
            f"  ({len(y)} samples from t={t[mask][0]:.0f} s)"
        )
    return result


def losses(run: Path, kills: list[dict]) -> dict:
    """What the kills cost, from the run's summary.json; printed."""
    summary = json.loads((run / "summary.json").read_text()) if (run / "summary.json").exists() else {}
    replay = summary.get("replay", {})
    # A net figure, not a loss: a killed actor's unsent records, less the steps it made after
    # its last stats answer (inserted, never counted by the driver). The loss is the seq gaps.
    lost = (summary.get("agent_steps", 0) or 0) - replay.get("transitions_inserted", 0)
    gaps = replay.get("records_lost")
    print(
        f"\nactor kills {len(kills)}, actor restarts {summary.get('actor_restarts')}, "
        f"replay restarts {summary.get('replay_restarts')}; records lost in transit (gaps in a stream's "
        f"sequence numbers at the replay) {gaps}; items cut off by a kill (n-step window never completed) "
        f"{replay.get('items_dropped')}; agent steps counted minus transitions inserted {lost:,} "
        f"(net of a killed actor's unsent records, at most {4 * 64 + 4 * 3} a kill, and the steps it made "
        f"after its last stats answer, which the driver never counted)"
    )
    return {
        "actor_restarts": summary.get("actor_restarts"),
        "replay_restarts": summary.get("replay_restarts"),
        "transitions_never_inserted": lost,
        "records_lost_in_transit": gaps,
        "items_cut_by_kills": replay.get("items_dropped"),
        "replay_heap_trims": replay.get("heap_trims"),
        "agent_steps": summary.get("agent_steps"),
        "env_frames": summary.get("env_frames"),
        "learner_steps": summary.get("learner_steps"),
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    run = out / f"run-{time.strftime('%Y%m%d-%H%M%S')}"
    cmd = learner_command(args, run)
    print("soak:", " ".join(cmd), flush=True)
    proc = subprocess.Popen(cmd, stdout=open(out / "learner.log", "w"), stderr=subprocess.STDOUT)
    rows, kills = watch(proc, args, run)
    keys = write_csv(out / "soak.csv", rows)
    result = fit_slopes(rows, keys, args.warmup_minutes)
    lost = losses(run, kills)
    print(json.dumps({"soak": result, "run": str(run), "exit_code": proc.returncode, "kills": kills, **lost}))
    return 0 if proc.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
