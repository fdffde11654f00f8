"""Learner efficiency: updates/s inside the running system against a standalone update loop.

    python -m benchmarks.learner              # B=32, R=8, 2 actors (about 3 min here)
    python -m benchmarks.learner --quick      # smoke check, under a minute
    python -m benchmarks.learner --batch-size 512 --device cuda --replay-ratio 0   # on a GPU machine

efficiency = updates/s in the system / updates/s of ``DQNLearner.update`` alone on batches
already in memory (same batch size, threads, device and run); target >= 0.9. The CPU
figures beside it separate a learner starved of CPU from a loop that wastes time. Method:
``docs/benchmark-methods.md`` (learner).

The flags handed to ``learner.main`` under its own names (``LEARNER_DEFAULTS``) are
learner.main's: their type, choices and help come from its parser, and their values are
checked by its Config before anything starts, so a bad one gets learner.main's own error.
``--threads`` is the benchmark's (also the standalone loop's threads, so at least 1).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.cli import (
    NICENESS,
    POSITIVE_INT,
    SECONDS,
    SECONDS_OR_ZERO,
    add_learner_flags,
    check_env,
    check_learner_flags,
    check_out_dir,
    parser,
)
from benchmarks.machine import ForeignLoad, describe_machine, loadavg, machine, wait_quiet
from benchmarks.procs import MB, cpu_delta, foreign_cores, sample_near
from benchmarks.profiling import (
    ACTOR_CATEGORIES,
    ACTOR_KEEP,
    DRIVER_CATEGORIES,
    DRIVER_KEEP,
    REPLAY_CATEGORIES,
    print_spy,
    spy_processes,
)
from benchmarks.report import final_json, table, verdict
from benchmarks.system_run import SystemRun, memory_projection, tmp_dir, window_bounds, window_rate

#: The in-system learner against the same update alone (issue 11: >= 0.95, "keep it"; 0.9 before).
TARGET = 0.95


def _standalone_learner(batch_size: int, device: str, num_actions: int, fast_paths: dict | None):
    """The system's own update: the default (apex) preset resolved for Atari, built as the trainer builds it."""
    from common.config import Config, LearnerConfig, resolve
    from common.env_spec import EnvSpec
    from learner.dqn import build_learner

    cfg = resolve(
        Config(learner=LearnerConfig(batch_size=batch_size, **(fast_paths or {}))), atari=True, cuda=device != "cpu"
    )
    spec = EnvSpec("ALE/Breakout-v5", (84, 84), "uint8", 4, num_actions, 4, "lz4", True, True)
    return cfg, build_learner(cfg, spec, device)


def random_sample_batches(batch_size: int, num_actions: int, seed: int, count: int = 8) -> list:
    """``count`` SampleBatches of random Atari stacks, as a replay shard hands them over."""
    from common.messages import SampleBatch

    rng = np.random.default_rng(seed)
    return [
        SampleBatch(
            ids=np.arange(batch_size, dtype=np.int64),
            obs=rng.integers(0, 256, (batch_size, 4, 84, 84), dtype=np.uint8),
            actions=rng.integers(0, num_actions, batch_size).astype(np.int64),
            returns=rng.normal(size=batch_size).astype(np.float32),
            discounts=np.full(batch_size, 0.99**3, np.float32),
            next_obs=rng.integers(0, 256, (batch_size, 4, 84, 84), dtype=np.uint8),
            weights=np.ones(batch_size, np.float32),
        )
        for _ in range(count)
    ]


FAST_PATHS = ("precision", "tf32", "channels_last", "fused_optimizer", "compile", "joint_forward", "stats_period")


def standalone_rate(
    batch_size: int,
    threads: int,
    seconds: float,
    device: str = "cpu",
    seed: int = 0,
    num_actions: int = 4,
    warmup_updates: int = 5,
    fast_paths: dict | None = None,
) -> dict:
    """updates/s of DQNLearner.update on random batches already in memory.

    ``fast_paths``: LearnerConfig values to set instead of 'auto' (``{"precision": "fp32"}``,
    ``{"compile": True}``, ...), so that fp32, bf16 and compiled updates can be compared; the
    result names the values used and the compile time (the first update, not timed)."""
    import torch

    from common.memory import hold_freed_memory

    hold_freed_memory()  # as learner.main's process does: the same allocator settings
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(seed)
        cfg, learner = _standalone_learner(batch_size, device, num_actions, fast_paths)
        pool = random_sample_batches(batch_size, num_actions, seed)
        for i in range(warmup_updates):
            learner.update(pool[i % len(pool)])
        n = 0
        foreign = ForeignLoad()
        t0, c0 = time.perf_counter(), time.process_time()
        while time.perf_counter() - t0 < seconds:
            learner.update(pool[n % len(pool)])  # priorities to the host (on CUDA one update late: no sync)
            n += 1
        learner.flush()  # the last update's priorities: the device has finished every update timed
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        return {
            "updates_per_s": n / wall,
            "updates_per_cpu_s": n / cpu if cpu > 0 else float("nan"),
            "cpu_per_wall": cpu / wall,
            "foreign_cores": foreign.cores(cpu),
            "updates": n,
            "threads": threads,
            "batch_size": batch_size,
            "device": device,
            "fast_paths": {k: getattr(cfg.learner, k) for k in FAST_PATHS},
            "compile_seconds": learner.compile_seconds,
            "compile_error": learner.compile_error,
        }
    finally:
        torch.set_num_threads(before)


def system_argv(args, ratio: float, profile: bool) -> list:
    """learner.main's command line for a measured run of the system."""
    return [
        "--env",
        args.env,
        "--num-actors",
        args.num_actors,
        "--envs-per-actor",
        args.envs_per_actor,
        "--batch-size",
        args.batch_size,
        "--replay-ratio",
        ratio,
        "--replay-capacity",
        args.replay_capacity,
        "--learning-starts",
        args.learning_starts,
        "--learner-threads",
        args.threads,
        "--device",
        args.device,
        "--replay-shards",
        args.replay_shards,
        "--log-interval",
        1,
        # No evaluator: it would play 10 Breakout games inside the window on the same cores,
        # taking CPU from the learner this measures (the evaluator's cost is measured apart).
        "--eval-period",
        0,
        "--seed",
        args.seed,
        "--pin-cpus",
        args.pin_cpus,
        "--time-limit",
        180 + args.warmup + args.window + (args.spy_seconds if profile else 0),
    ]


def window_figures(run: SystemRun, args, t_learn: float) -> dict:
    """Rates, CPU per process class and memory over the window that opens ``--warmup``
    seconds after the first update and lasts ``--window``."""
    t0, t1 = t_learn + args.warmup, t_learn + args.warmup + args.window
    if not run.watch(lambda r: r.rows and r.rows[-1]["t_local"] >= t1, timeout=args.warmup + args.window + 60):
        raise RuntimeError(f"the run ended before the window did:\n{run.log_tail()}")
    a, b = window_bounds(run.rows, t0, t1)
    s0, s1 = sample_near(run.samples, a), sample_near(run.samples, b)
    dt = max(s1["t"] - s0["t"], 1e-9)
    cpu = {
        "learner (driver)": cpu_delta(s0, s1, lambda p: p["category"] == "driver") / dt,
        "actors": cpu_delta(s0, s1, lambda p: "ActorShell" in p["label"]) / dt,
        "replay": cpu_delta(s0, s1, lambda p: "ReplayServer" in p["label"]) / dt,
        "ray daemons": cpu_delta(s0, s1, lambda p: p["category"] == "ray_system") / dt,
    }
    ups = window_rate(run.rows, "learner_steps", t0, t1)
    last = run.rows[-1]
    return dict(
        updates_per_s=ups,
        agent_steps_per_s=window_rate(run.rows, "agent_steps", t0, t1),
        trained_samples_per_s=ups * args.batch_size,
        window_s=b - a,
        cpu_cores=cpu,
        foreign_cores=foreign_cores(s0, s1),
        updates_per_learner_cpu_s=ups / max(cpu["learner (driver)"], 1e-9),
        replay_ratio_measured=last.get("replay_ratio"),
        replay_size_end=last.get("replay_size"),
        learning_started_s=t_learn - run.t_start,
        memory_peak_mb={k: v / MB for k, v in run.sampler.peak.items()},
        memory_by_kind_mb=run.sampler.peak_by_kind,
        loadavg_end=loadavg(),
    )


def spy_system(run: SystemRun, run_dir, seconds: float) -> dict:
    """py-spy of the learner driver, the replay and actor-0, after the window."""
    replay = run.sampler.pids("ReplayServer")
    actor = run.sampler.pids("actor-0:") or run.sampler.pids("ActorShell")
    return spy_processes(
        run,
        {
            "driver": (run.proc.pid, DRIVER_KEEP, DRIVER_CATEGORIES),
            "replay": (replay[0] if replay else None, None, REPLAY_CATEGORIES),
            "actor": (actor[0] if actor else None, ACTOR_KEEP, ACTOR_CATEGORIES),
        },
        seconds,
        run_dir.parent / run_dir.name,
    )


def system_rate(args, run_dir, profile: bool, replay_ratio: float | None = None) -> dict:
    """Updates/s (and agent steps/s, CPU per process class) of the real system after learning starts."""
    ratio = args.replay_ratio if replay_ratio is None else replay_ratio
    run = SystemRun(system_argv(args, ratio, profile), run_dir, worker_niceness=args.worker_niceness).start()
    out: dict = {
        "command": ("" if args.worker_niceness is None else f"RAY_worker_niceness={args.worker_niceness} ")
        + run.command,
        "replay_ratio": ratio,
    }
    try:
        if not run.watch(lambda r: r.first_row(lambda x: x["learner_steps"] > 0) is not None, timeout=240):
            raise RuntimeError(f"the system did not start learning:\n{run.log_tail()}")
        t_learn = run.first_row(lambda x: x["learner_steps"] > 0)["t_local"]
        out.update(window_figures(run, args, t_learn))
        if profile:
            out["py_spy"] = spy_system(run, run_dir, args.spy_seconds)
        # the warm-up fills the replay: fit from there
        t_fill = run.first_row(lambda x: x["replay_size"] > 0)["t_local"]
        out["memory_projection"] = memory_projection(run, "replay_size", ("replay",), t_fill, args.replay_capacity)
    finally:
        out["exit_code"] = run.stop()
    return out


#: The flags handed to learner.main under the same name, and this benchmark's defaults for
#: them: their type, choices and help are learner.main's (``benchmarks.cli.add_learner_flags``).
LEARNER_DEFAULTS = {
    "--env": "ALE/Breakout-v5",
    "--batch-size": 32,
    "--replay-ratio": 8.0,
    "--num-actors": 2,
    "--envs-per-actor": 8,
    "--replay-capacity": 100_000,
    "--replay-shards": 1,
    "--learning-starts": 10_000,
    "--device": "cpu",
    "--seed": 0,
    "--pin-cpus": "off",
}


def add_system_flags(p: argparse.ArgumentParser, batch_size: int = 32, replay_ratio: float = 8.0) -> None:
    """learner.main's flags at this benchmark's defaults, and the benchmark's own."""
    add_learner_flags(p, {**LEARNER_DEFAULTS, "--batch-size": batch_size, "--replay-ratio": replay_ratio})
    p.add_argument(
        "--threads",
        type=POSITIVE_INT,
        default=None,
        help="torch threads of the learner, standalone and in the system "
        "(--learner-threads); default: what learner.main picks for a CPU learner (the cores the local actors and "
        "replay leave, at least 1), torch's default on a GPU",
    )
    p.add_argument(
        "--warmup",
        type=SECONDS_OR_ZERO,
        default=20.0,
        help="seconds discarded after the first update (the rate "
        "limiter's tolerance lets the learner run ahead of the actors for a while after learning starts)",
    )
    p.add_argument("--window", type=SECONDS, default=60.0, help="seconds measured")
    p.add_argument(
        "--standalone-seconds", type=SECONDS, default=20.0, help="each standalone measurement (before and after)"
    )
    p.add_argument(
        "--quiet-wait",
        type=SECONDS_OR_ZERO,
        default=120.0,
        help="before each phase, wait up to this long for other work on the (shared) machine to drop under 0.25 cores",
    )
    p.add_argument(
        "--worker-niceness",
        type=NICENESS,
        default=None,
        help="RAY_worker_niceness for the system's Ray workers "
        "(actors, replay); default: learner.main's (0; Ray's own default is 15, the learner runs at 0)",
    )
    p.add_argument("--profile", action="store_true", help="py-spy the driver, replay and an actor after the window")
    p.add_argument("--spy-seconds", type=SECONDS, default=15.0)
    p.add_argument("--quick", action="store_true", help="smoke check: short windows, learning from 2,000")
    p.add_argument("--out-dir", default=None, help="where run directories go (default: a fresh temp dir)")


def check_system_flags(p: argparse.ArgumentParser, args) -> None:
    """What ``add_system_flags`` gave, checked before any phase starts (``benchmarks.cli``):
    learner.main's flags by learner.main's own Config, with its one-line error. --device
    auto becomes the device learner.main would pick."""
    check_env(p, "--env", args.env)
    check_out_dir(p, "--out-dir", args.out_dir)
    values = {flag: getattr(args, flag[2:].replace("-", "_")) for flag in LEARNER_DEFAULTS}
    if args.quick:  # --quick learns from 2,000: then the error also lists what the benchmark gave
        values["--learning-starts"] = min(args.learning_starts, 2_000)
    check_learner_flags(p, [x for flag, value in values.items() for x in (flag, value)], context=args.quick)
    if args.device == "auto":
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"


def default_threads(args) -> int:
    """The learner's torch threads when --threads is not given: learner.main's own choice."""
    import torch

    if not args.device.startswith("cpu"):
        return torch.get_num_threads()
    try:
        from common.config import build_arg_parser, config_from_args
        from learner.trainer import cpu_learner_threads

        ns = build_arg_parser().parse_args(
            ["--num-actors", str(args.num_actors), "--replay-shards", str(args.replay_shards)]
        )
        return cpu_learner_threads(config_from_args(ns))
    except (ImportError, AttributeError, SystemExit):  # an older learner without that rule: torch's default
        return torch.get_num_threads()


def niceness_text(args) -> str:
    return "learner.main's default" if args.worker_niceness is None else str(args.worker_niceness)


def apply_quick(args) -> None:
    if args.threads is None:
        args.threads = default_threads(args)
    if args.quick:
        args.warmup, args.window, args.standalone_seconds = 3.0, 10.0, 4.0
        args.quiet_wait = min(args.quiet_wait, 10.0)
        args.learning_starts = min(args.learning_starts, 2_000)
        args.spy_seconds = min(args.spy_seconds, 5.0)


def measure(args, out_dir: Path) -> tuple[dict, dict, dict]:
    """The update alone, the system, the update alone again; each phase after a quiet wait."""
    wait_quiet(timeout=args.quiet_wait)
    s1 = standalone_rate(args.batch_size, args.threads, args.standalone_seconds, args.device, args.seed)
    print(
        f"standalone (before): {s1['updates_per_s']:.1f} updates/s ({s1['cpu_per_wall']:.2f} CPU-s per s)", flush=True
    )
    wait_quiet(timeout=args.quiet_wait)
    sysr = system_rate(args, out_dir / "system", args.profile)
    print(
        f"in the system: {sysr['updates_per_s']:.1f} updates/s, {sysr['agent_steps_per_s']:,.0f} agent steps/s over "
        f"{sysr['window_s']:.0f} s; CPU cores: " + ", ".join(f"{k} {v:.2f}" for k, v in sysr["cpu_cores"].items()),
        flush=True,
    )
    wait_quiet(timeout=args.quiet_wait)
    s2 = standalone_rate(args.batch_size, args.threads, args.standalone_seconds, args.device, args.seed + 1)
    print(f"standalone (after): {s2['updates_per_s']:.1f} updates/s", flush=True)
    return s1, sysr, s2


def efficiency_rows(s1: dict, s2: dict, sysr: dict, args) -> tuple[list, float, float]:
    """The table's rows (the update alone, the system), the efficiency and the CPU efficiency."""
    alone = (s1["updates_per_s"] + s2["updates_per_s"]) / 2
    alone_cpu = (s1["updates_per_cpu_s"] + s2["updates_per_cpu_s"]) / 2
    ratio = sysr["updates_per_s"] / alone
    rows = [
        [
            "standalone (mean of before/after)",
            alone,
            alone * args.batch_size,
            (s1["cpu_per_wall"] + s2["cpu_per_wall"]) / 2,
            alone_cpu,
            (s1["foreign_cores"] + s2["foreign_cores"]) / 2,
            1.0,
            "",
        ],
        [
            "in the system",
            sysr["updates_per_s"],
            sysr["trained_samples_per_s"],
            sysr["cpu_cores"]["learner (driver)"],
            sysr["updates_per_learner_cpu_s"],
            sysr["foreign_cores"],
            ratio,
            verdict(ratio, TARGET),
        ],
    ]
    return rows, ratio, sysr["updates_per_learner_cpu_s"] / alone_cpu


def report(args, s1: dict, s2: dict, sysr: dict, machine_facts: dict) -> tuple[float, float]:
    """Prints the efficiency table and what it means; returns (efficiency, CPU efficiency)."""
    rows, ratio, cpu_ratio = efficiency_rows(s1, s2, sysr, args)
    headers = ["what", "updates/s", "samples/s", "learner CPU", "updates/CPU-s", "foreign CPU", "ratio"]
    print()
    print(
        table(
            headers + [f"target >= {TARGET}"],
            rows,
            title=f"Learner efficiency (batch {args.batch_size}, replay ratio {args.replay_ratio:g}, {args.threads} threads, {args.device}); "
            f"standalone before {s1['updates_per_s']:.1f}, after {s2['updates_per_s']:.1f} updates/s",
        )
    )
    print(
        f"per learner CPU-second the system does {cpu_ratio:.2f}x the standalone's updates "
        f"(near 1: the learner loop adds little; the gap in updates/s is then CPU taken by the other processes)"
    )
    print(
        "CPU in cores; 'foreign CPU': everything else on this shared machine over the same interval. "
        "CPU cores used in the window: "
        + ", ".join(f"{k} {v:.2f}" for k, v in sysr["cpu_cores"].items())
        + f" (machine: {machine_facts['cores']} cores; load average now {loadavg()})"
    )
    if args.profile and "py_spy" in sysr:
        for name, title in (
            ("driver", "learner driver's _loop, py-spy"),
            ("replay", "replay server, py-spy (idle included)"),
            ("actor", "actor-0's stepping thread, py-spy"),
        ):
            print()
            print_spy(title, sysr["py_spy"].get(name, {}))
    return ratio, cpu_ratio


def main(argv=None) -> int:
    p = parser(__doc__.splitlines()[0])
    add_system_flags(p)
    args = p.parse_args(argv)
    check_system_flags(p, args)
    apply_quick(args)
    out_dir = Path(args.out_dir) if args.out_dir else tmp_dir("bench-learner-")
    m = machine()
    print(describe_machine(m), flush=True)
    print(
        f"batch {args.batch_size}, replay ratio {args.replay_ratio:g}, {args.threads} learner threads on {args.device}, "
        f"{args.num_actors} actors x {args.envs_per_actor} envs, Ray worker niceness {niceness_text(args)}, pin-cpus {args.pin_cpus}; "
        f"run dirs under {out_dir}",
        flush=True,
    )
    s1, sysr, s2 = measure(args, out_dir)
    ratio, cpu_ratio = report(args, s1, s2, sysr, m)
    final_json(
        {
            "benchmark": "learner",
            "machine": m,
            "batch_size": args.batch_size,
            "replay_ratio": args.replay_ratio,
            "threads": args.threads,
            "pin_cpus": args.pin_cpus,
            "device": args.device,
            "standalone_before": s1,
            "standalone_after": s2,
            "standalone_updates_per_s": (s1["updates_per_s"] + s2["updates_per_s"]) / 2,
            "system": sysr,
            "efficiency": ratio,
            "cpu_efficiency": cpu_ratio,
            "target": TARGET,
            "met": ratio >= TARGET,
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
