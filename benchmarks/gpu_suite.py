"""The GPU machine's measurements in one call: ``python3 -m benchmarks.gpu_suite --out suite.json``.

Built for a lent GPU machine (one H100 or H200, 16 cores) that runs one command of at most
10 minutes: one program with one overall deadline (``--deadline``) that writes one JSON
file, rewritten after every phase and every variant, and on SIGTERM or SIGINT, so a run
cut short keeps what it measured (``benchmarks/oneshot.py``). Each phase gets its share of
the time left and is skipped, with the reason, when too little is left:

1. ``standalone``: ``DQNLearner.update``'s updates/s at batch 512 in variants that each
   decide a default: the reference ``auto_on_device`` (the CUDA defaults, compiled, frames
   already on the device as the mirror feed gives them), compile off, cudnn.benchmark, one
   packed copy of the small per-batch arrays, CUDA graphs, the stacked feed's host batch,
   batch 256 and 1024, fp32 (``benchmarks/gpu_variants.py``);
2. ``system``: the real system (``learner.main``, 14 actors, ``auto`` shards and feed) at
   batch 512, its updates/s after learning starts and the GPU's busy fraction (nvidia-smi);
3. ``feed``: ``benchmarks.feed``, mirror against stacked;
4. ``presets``: each preset's standalone updates/s at its own batch size.

``derived`` compares them: each variant against the reference, the system against the
standalone variant fed the way it was. ``--device cpu --tiny`` runs every phase with tiny
sizes on a CPU: the tests run it, so the program cannot rot between lent machines. On the
GPU machine, with a virtualenv or bundle holding the project's dependencies activated,
from the project root (``docs/benchmarks.md``, "First GPU run", says what each figure
decides)::

    PYTHONUNBUFFERED=1 python3 -m benchmarks.gpu_suite --out $OUT/suite.json
"""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from benchmarks.machine import describe_machine, loadavg, machine
from benchmarks.oneshot import Budget, Overrun, Phase, PhaseFailed, Record, run_phases

ROOT = Path(__file__).resolve().parents[1]
PHASES = ("standalone", "system", "feed", "presets")


@dataclass(frozen=True)
class Sizes:
    """What each phase runs at: full sizes on the GPU machine, tiny ones for a CPU smoke test."""

    batch_size: int
    variant_s: float  # seconds each standalone variant is timed (after its warm-up)
    warmup: int  # updates before timing (the first compiles; CUDA graphs are recorded in the next)
    preset_batch: int | None  # None: each preset's own batch size for the device
    env: str
    actors: int
    learning_starts: int
    replay_capacity: int
    window_s: float  # the system's measuring window, at most
    min_window_s: float  # ... and at least (else the phase is skipped)
    stop_s: float  # kept for stopping the system
    feed_flags: tuple[str, ...]
    margin_s: float  # kept from the deadline for the last write
    shares: dict  # each phase's share of the time left, against those after it
    min_s: dict  # the least time worth starting each phase with


FULL = Sizes(
    batch_size=512,
    variant_s=3.0,
    warmup=5,
    preset_batch=None,
    env="ALE/Breakout-v5",
    actors=14,
    learning_starts=20_000,
    replay_capacity=1_000_000,
    window_s=150.0,
    min_window_s=20.0,
    stop_s=20.0,
    feed_flags=("--records", "100000", "--ray-records", "50000", "--real-frames", "10000", "--batches", "100"),
    margin_s=20.0,
    shares={"standalone": 0.36, "system": 0.36, "feed": 0.16, "presets": 0.12},
    min_s={"standalone": 30.0, "system": 90.0, "feed": 30.0, "presets": 15.0},
)
TINY = Sizes(
    batch_size=4,
    variant_s=0.05,
    warmup=1,
    preset_batch=2,
    env="CartPole-v1",
    actors=1,
    learning_starts=200,
    replay_capacity=5_000,
    window_s=10.0,  # rows come every 2 s, later on a loaded machine: room for several
    min_window_s=4.0,
    stop_s=15.0,
    feed_flags=("--skip-ray", "--records", "4096", "--real-frames", "2000", "--batches", "10"),
    margin_s=5.0,
    shares=FULL.shares,
    min_s={"standalone": 5.0, "system": 30.0, "feed": 10.0, "presets": 3.0},
)


class GpuBusy:
    """Samples ``nvidia-smi``'s utilization.gpu every 200 ms in a thread: the fraction of
    time a kernel ran. None where there is no nvidia-smi (a CPU run)."""

    def __init__(self):
        self.samples: list[float] = []
        self.proc = None
        if shutil.which("nvidia-smi"):
            self.proc = subprocess.Popen(
                ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-lms", "200"],
                stdout=subprocess.PIPE,
                text=True,
            )
            threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                self.samples.append(float(line.strip().split(",")[0]))
            except ValueError:
                pass

    def mark(self) -> int:
        return len(self.samples)

    def busy_since(self, mark: int) -> float | None:
        window = self.samples[mark:]
        return sum(window) / len(window) / 100.0 if window else None

    def close(self) -> None:
        if self.proc is not None:
            self.proc.terminate()


@dataclass
class Suite:
    """What every phase needs: the arguments, their sizes, the GPU sampler and the record."""

    args: object
    sizes: Sizes
    busy: GpuBusy
    record: Record | None = None


def standalone(suite: Suite, limit: float, figures: dict, save) -> None:
    from benchmarks.gpu_variants import run_variants, variants

    s = suite.sizes
    try:
        run_variants(variants(s.batch_size), suite.args.device, s.variant_s, s.warmup, limit, figures, save)
    finally:
        release_compile_workers()


def release_compile_workers() -> None:
    """End inductor's pool of compile processes (one per core), idle from now on, before
    the system phase needs the cores and the memory."""
    if "torch._inductor.async_compile" in sys.modules:
        try:
            sys.modules["torch._inductor.async_compile"].shutdown_compile_workers()
        except Exception:  # not in every torch version: the pool then stays, idle
            pass


def presets(suite: Suite, limit: float, figures: dict, save) -> None:
    from benchmarks.gpu_variants import preset_variants, run_variants

    s = suite.sizes
    run_variants(preset_variants(s.preset_batch), suite.args.device, s.variant_s, s.warmup, limit, figures, save)


def system_flags(suite: Suite, time_limit: float) -> list:
    s = suite.sizes
    flags = ["--env", s.env, "--num-actors", s.actors, "--batch-size", s.batch_size]
    flags += ["--learning-starts", s.learning_starts, "--replay-capacity", s.replay_capacity]
    flags += ["--device", suite.args.device, "--log-interval", 2, "--time-limit", round(time_limit)]
    flags += ["--eval-period", 0, "--snapshot-interval", -1, "--feed", "auto"]
    flags += ["--replay-shards", suite.args.replay_shards]
    if suite.args.tiny:
        flags += ["--envs-per-actor", 2]
    return flags


def system(suite: Suite, limit: float, figures: dict, save) -> None:
    """The real system: start it, wait for its first update, measure a window (saving the
    figures so far every 10 s), stop it; its resolved config.json goes into the record."""
    from benchmarks.system_run import SystemRun

    s, end = suite.sizes, time.monotonic() + limit
    run_dir = Path(tempfile.mkdtemp(prefix="gpu-suite-")) / "run"
    # Its own --time-limit ends it even if this program is killed and cannot stop it.
    run = SystemRun(system_flags(suite, limit + 30), run_dir, pss=False).start()
    suite.record.children.append(run.proc)
    figures.update(command="python3" + run.command.removeprefix("python"), run_dir=str(run_dir), pid=run.proc.pid)
    save()
    try:
        started = run.watch(
            lambda r: any((row.get("learner_steps") or 0) > 0 for row in r.rows),
            end - s.stop_s - s.min_window_s - time.monotonic(),
        )
        figures["startup_s"] = round(time.monotonic() - run.t_start, 1)
        if not started:
            figures["log_tail"] = run.log_tail(12)
            raise PhaseFailed(
                f"no update within {figures['startup_s']} s of the start (log_tail has the run's last lines)"
            )
        _window(suite, run, min(s.window_s, end - s.stop_s - time.monotonic()), figures, save)
    finally:
        code = run.stop(timeout=max(5.0, min(s.stop_s, end - time.monotonic())))
        figures["exit_code"] = code
        config_path = run_dir / "config.json"
        config = json.loads(config_path.read_text()) if config_path.exists() else {}
        figures["config"] = config
        figures["feed"] = config.get("learner", {}).get("feed")
        figures["replay_shards"] = config.get("replay", {}).get("replay_shards")
        if code not in (0, None) and "log_tail" not in figures:
            figures["log_tail"] = run.log_tail(12)


def _window(suite: Suite, run, seconds: float, figures: dict, save) -> None:
    from benchmarks.system_run import window_rate

    t0, mark = time.monotonic(), suite.busy.mark()
    while (left := t0 + seconds - time.monotonic()) > 0:
        run.watch(lambda r: False, min(10.0, left))
        t1 = time.monotonic()
        figures.update(
            updates_per_s=window_rate(run.rows, "learner_steps", t0, t1),
            env_frames_per_s=window_rate(run.rows, "env_frames", t0, t1),
            gpu_busy=suite.busy.busy_since(mark),
            window_s=round(t1 - t0, 1),
        )
        save()
        if not run.alive():
            raise PhaseFailed(f"learner.main ended {t1 - t0:.0f} s into the window")
    if figures.get("updates_per_s") != figures.get("updates_per_s"):  # NaN: fewer than two rows came
        raise PhaseFailed(f"fewer than two progress rows in the {figures.get('window_s')} s window: no rate")


def feed(suite: Suite, limit: float, figures: dict, save) -> None:
    """``benchmarks.feed`` as a subprocess; each JSON line it prints (a partial result after
    each of its phases, the whole at the end) goes into the record as it comes."""
    cmd = [sys.executable, "-m", "benchmarks.feed", *suite.sizes.feed_flags]
    cmd += ["--batch-size", str(suite.sizes.batch_size), "--device", suite.args.device]
    figures["command"] = "python3 " + " ".join(cmd[1:])
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=err, text=True, start_new_session=True)
        suite.record.children.append(proc)
        figures["pid"] = proc.pid
        save()
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
        reader.start()
        end, seen = time.monotonic() + limit, 0
        try:
            while proc.poll() is None and time.monotonic() < end:
                time.sleep(0.5)
                seen = _take_json(lines, seen, figures, save)
            if proc.poll() is None:
                raise Overrun(
                    f"benchmarks.feed ran past the phase's limit of {limit:.0f} s (result: its last partial line)"
                )
            reader.join(timeout=5)
            _take_json(lines, seen, figures, save)
            figures["exit_code"] = proc.returncode
            if proc.returncode:
                err.seek(0)
                figures["stderr_tail"] = err.read().strip().splitlines()[-5:]
                raise PhaseFailed(f"benchmarks.feed exited {proc.returncode}")
        finally:
            if proc.poll() is None:
                _kill_group(proc)


def _take_json(lines: list[str], seen: int, figures: dict, save) -> int:
    for line in lines[seen:]:
        if line.startswith("{"):
            try:
                figures["result"] = json.loads(line)
            except json.JSONDecodeError:
                continue
            save()
    return len(lines)


def _kill_group(proc) -> None:
    import os
    import signal

    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait(timeout=10)


def _rate(data: dict, phase: str, name: str) -> float | None:
    entry = data["phases"].get(phase, {}).get("figures", {}).get(name, {})
    return entry.get("updates_per_s") if entry.get("status") == "done" else None


def _ratio(a, b) -> float | None:
    return a / b if a is not None and b else None


def derive(data: dict) -> dict:
    """The comparisons the defaults are decided on, from whatever the record holds so far:
    each standalone variant against ``auto_on_device``; the system against the standalone
    variant fed as it was (the mirror: frames on the device; stacked: from the host) and,
    under its own name, against eager bf16 from host memory (the old, unlike comparison);
    the feed's mirror against stacked, through Ray."""
    out: dict = {}
    ref = _rate(data, "standalone", "auto_on_device")
    for name in data["phases"].get("standalone", {}).get("figures", {}):
        if name != "auto_on_device":
            out[f"{name}_vs_auto_on_device"] = _ratio(_rate(data, "standalone", name), ref)
    system = data["phases"].get("system", {}).get("figures", {})
    rate = system.get("updates_per_s")
    if system.get("feed"):
        reference = "auto_on_device" if system["feed"] == "mirror" else "auto_host_feed"
        out["system_reference"] = reference
        out["system_vs_standalone"] = _ratio(rate, _rate(data, "standalone", reference))
    out["system_vs_bf16_eager_host_feed"] = _ratio(rate, _rate(data, "standalone", "bf16_eager_host_feed"))
    ray = data["phases"].get("feed", {}).get("figures", {}).get("result", {}).get("ray", {})
    if "mirror" in ray and "stacked" in ray:
        out["feed_mirror_vs_stacked"] = _ratio(ray["mirror"].get("batches_per_s"), ray["stacked"].get("batches_per_s"))
    return out


def shards(text: str) -> str:
    """An argparse ``type``: auto or a count of at least 1."""
    import argparse

    if text != "auto" and not (text.isdigit() and int(text) >= 1):
        raise argparse.ArgumentTypeError(f"expected auto or a count of at least 1, got {text!r}")
    return text


def parse(argv):
    from benchmarks.cli import SECONDS, check_out_file, parser

    p = parser(__doc__.splitlines()[0], prog="python3 -m benchmarks.gpu_suite")
    p.add_argument("--out", required=True, help="the JSON file to write (rewritten after every step)")
    p.add_argument(
        "--device", default="cuda", choices=("cuda", "cpu"), help="cuda (the lent machine) or cpu (a smoke test here)"
    )
    p.add_argument("--tiny", action="store_true", help="tiny sizes: a smoke test of every phase on a CPU")
    p.add_argument(
        "--deadline",
        type=SECONDS,
        default=480.0,
        help="seconds for the whole suite, start-up included; each phase gets its share of what is left",
    )
    p.add_argument(
        "--phases",
        default=",".join(PHASES),
        help=f"the phases to run, in this order, comma-separated (of {','.join(PHASES)})",
    )
    p.add_argument(
        "--replay-shards",
        type=shards,
        default="auto",
        help="the system phase's replay shards (auto: learner.main's choice); another count to compare with",
    )
    args = p.parse_args(argv)
    check_out_file(p, "--out", args.out)
    names = [n for n in args.phases.split(",") if n]
    unknown = [n for n in names if n not in PHASES]
    if unknown or not names:
        p.error(f"--phases {args.phases}: {'unknown phase ' + unknown[0] if unknown else 'no phase named'}")
    args.phases = [n for n in PHASES if n in names]
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            p.error("--device cuda: torch sees no CUDA device here (a smoke test: --device cpu --tiny)")
    return args


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse(argv)
    sizes = TINY if args.tiny else FULL
    budget = Budget(args.deadline, sizes.margin_s)
    head = {
        "suite": "benchmarks.gpu_suite",
        "command": "python3 -m benchmarks.gpu_suite " + " ".join(argv),
        "started_utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
        "device": args.device,
        "tiny": args.tiny,
        "deadline_s": args.deadline,
        "machine": machine(),
        "load_before": loadavg(),
    }
    print(describe_machine(head["machine"]), flush=True)
    suite = Suite(args, sizes, GpuBusy())
    suite.record = Record(args.out, head, args.phases, derive=derive)
    runs = {"standalone": standalone, "system": system, "feed": feed, "presets": presets}
    phases = [Phase(n, functools.partial(runs[n], suite), sizes.min_s[n], sizes.shares[n]) for n in args.phases]
    suite.record.save()  # the file exists from the start
    try:
        code = run_phases(suite.record, budget, phases)
    finally:
        suite.busy.close()
    report(suite.record.data, args.out)
    return code


def report(data: dict, out: str) -> None:
    for name, entry in data["phases"].items():
        why = entry.get("reason")
        print(f"{name}: {entry['status']}{', ' + why if why else ''} ({entry.get('seconds', 0)} s)", flush=True)
    for key, value in data.get("derived", {}).items():
        print(f"  {key}: {value:.3f}" if isinstance(value, float) else f"  {key}: {value}", flush=True)
    print(f"wrote {out} ({data['status']}) after {data['elapsed_s']} s", flush=True)


if __name__ == "__main__":
    sys.exit(main())
