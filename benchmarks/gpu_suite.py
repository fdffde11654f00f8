"""The GPU machine's measurements in one call: ``python -m benchmarks.gpu_suite --out suite.json``.

Built for the lent H200 box (one GPU, 16 cores), where device time is scarce: one program,
under 9 minutes, that writes one JSON file. Phases, each with its own time budget and each
recorded even if another fails:

1. ``standalone``: learner updates/s at batch 512 on random batches already on the host,
   for fp32, TF32, bf16 and bf16 compiled (``benchmarks.learner.standalone_rate``);
2. ``system``: the real system (``learner.main``) at batch 512 with 14 actors, ``auto``
   shards and the ``auto`` feed, its updates/s after learning starts, against the
   standalone bf16 rate, and the fraction of time the GPU was busy (``nvidia-smi``);
3. ``feed``: ``benchmarks.feed`` (mirror against stacked), its final JSON line.

``--device cpu --tiny`` runs every phase with tiny sizes on a CPU in about a minute: the
suite's smoke test runs it so the program cannot rot between lent machines.

On the device machine (ray, gymnasium and ale-py come from the bundle, see
``../shared/tools/device-bundle.sh``)::

    source .device/activate.sh && PYTHONUNBUFFERED=1 python -m benchmarks.gpu_suite --out $OUT/suite.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.machine import describe_machine, loadavg, machine

ROOT = Path(__file__).resolve().parents[1]

#: fast-path settings of each standalone variant (LearnerConfig values).
VARIANTS = {
    "fp32": {"precision": "fp32", "tf32": False, "compile": False},
    "tf32": {"precision": "fp32", "tf32": True, "compile": False},
    "bf16": {"precision": "bf16", "compile": False},
    "bf16_compiled": {"precision": "bf16", "compile": True},
}


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


def standalone(args) -> dict:
    from benchmarks.learner import standalone_rate

    out = {}
    names = [v for v in VARIANTS if args.device != "cpu" or v in ("fp32", "bf16")]  # TF32 and compile: CUDA
    for name in names:
        try:
            out[name] = standalone_rate(
                args.batch_size, args.threads, args.standalone_s, device=args.device, fast_paths=VARIANTS[name]
            )
        except Exception as e:  # one variant failing (a compile error, say) must not lose the others
            out[name] = {"error": f"{type(e).__name__}: {e}"[:300]}
        print(f"standalone {name}: {out[name]}", flush=True)
    return out


def system(args, busy: GpuBusy, bf16_rate: float | None) -> dict:
    from benchmarks.system_run import SystemRun, window_rate

    run_dir = Path(tempfile.mkdtemp(prefix="gpu-suite-")) / "run"
    flags = [
        "--env",
        args.env,
        "--num-actors",
        args.actors,
        "--batch-size",
        args.batch_size,
        "--learning-starts",
        args.learning_starts,
        "--replay-capacity",
        args.replay_capacity,
        "--device",
        args.device,
        "--log-interval",
        2,
        "--time-limit",
        args.system_s + args.system_startup_s,
        "--eval-period",
        0,
        "--snapshot-interval",
        -1,
        "--replay-shards",
        "auto",
        "--feed",
        "auto",
    ]
    if args.tiny:
        flags += ["--envs-per-actor", 2]
    run = SystemRun(flags, run_dir, pss=False).start()
    run.watch(lambda r: any(row.get("learner_steps", 0) > 0 for row in r.rows), args.system_startup_s)
    t0, mark = time.monotonic(), busy.mark()
    run.watch(lambda r: False, args.system_s)
    t1 = time.monotonic()
    gpu_busy = busy.busy_since(mark)
    code = run.stop()
    rate = window_rate(run.rows, "learner_steps", t0, t1)
    config = json.loads((run_dir / "config.json").read_text()) if (run_dir / "config.json").exists() else {}
    return {
        "updates_per_s": rate,
        "vs_standalone_bf16": (rate / bf16_rate) if bf16_rate else None,
        "gpu_busy": gpu_busy,
        "exit_code": code,
        "window_s": round(t1 - t0, 1),
        "env_frames_per_s": window_rate(run.rows, "env_frames", t0, t1),
        "command": run.command,
        "feed": config.get("learner", {}).get("feed"),
        "replay_shards": config.get("replay", {}).get("replay_shards"),
        "log_tail": run.log_tail(8) if code not in (0, None) or rate != rate else None,
    }


def feed(args) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.feed",
        "--records",
        str(args.feed_records),
        "--batch-size",
        str(args.batch_size),
        "--device",
        args.device,
    ]
    if args.tiny:
        cmd += ["--skip-ray", "--real-frames", "2000", "--batches", "10"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=args.feed_timeout_s)
    lines = [ln for ln in proc.stdout.strip().splitlines() if ln.startswith("{")]
    result = json.loads(lines[-1]) if lines else {}
    return {
        "exit_code": proc.returncode,
        "result": result,
        "stderr_tail": proc.stderr.strip().splitlines()[-5:] if proc.returncode else None,
    }


def parse(argv) -> argparse.Namespace:
    from benchmarks.cli import check_out_file, parser

    p = parser(__doc__.splitlines()[0], prog="python -m benchmarks.gpu_suite")
    p.add_argument("--out", required=True, help="the JSON file to write")
    p.add_argument(
        "--device", default="cuda", choices=("cuda", "cpu"), help="cuda (the lent machine) or cpu (a smoke test here)"
    )
    p.add_argument("--tiny", action="store_true", help="tiny sizes: a smoke test of every phase in about a minute")
    args = p.parse_args(argv)
    check_out_file(p, "--out", args.out)
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            p.error("--device cuda: torch sees no CUDA device here (a smoke test: --device cpu --tiny)")
    big = not args.tiny
    defaults = dict(
        batch_size=512 if big else 8,
        threads=1,
        standalone_s=20.0 if big else 1.0,
        env="ALE/Breakout-v5" if big else "CartPole-v1",
        actors=14 if big else 1,
        learning_starts=20_000 if big else 200,
        replay_capacity=1_000_000 if big else 5_000,
        system_s=150.0 if big else 8.0,
        system_startup_s=240.0 if big else 90.0,
        feed_records=300_000 if big else 4096,
        feed_timeout_s=240 if big else 120,
    )
    for k, v in defaults.items():
        setattr(args, k, v)
    return args


def main(argv=None) -> int:
    args = parse(argv)
    t_start = time.monotonic()
    result = {"machine": machine(), "device": args.device, "tiny": args.tiny, "load_before": loadavg()}
    print(describe_machine(result["machine"]), flush=True)
    busy = GpuBusy()
    try:
        result["standalone"] = standalone(args)
        bf16 = result["standalone"].get("bf16", {}).get("updates_per_s")
        for name, phase in (("system", lambda: system(args, busy, bf16)), ("feed", lambda: feed(args))):
            try:
                result[name] = phase()
            except Exception as e:
                result[name] = {"error": f"{type(e).__name__}: {e}"[:300]}
            print(f"{name}: {json.dumps(result[name], default=str)[:600]}", flush=True)
    finally:
        busy.close()
    result["wall_s"] = round(time.monotonic() - t_start, 1)
    Path(args.out).write_text(json.dumps(result, indent=2, default=str))
    print(f"wrote {args.out} after {result['wall_s']} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
