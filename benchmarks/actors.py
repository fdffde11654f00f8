"""Actor efficiency: agent steps/s of the actor fleet against the bare emulator, same run.

    python -m benchmarks.actors                  # N = 1, 2 on this machine (about 3-4 min)
    python -m benchmarks.actors --quick          # smoke check, under a minute
    python -m benchmarks.actors --max-actors 14  # on a 16-core machine: N = 1, 2, 4, 8, 14
    python -m benchmarks.actors --sweep --actor-counts 1   # + the core per precision and E (about 3 min more)

efficiency(N) = fleet agent steps/s / (emulator agent steps/s per core x min(N, cores)):
the bare emulator stepped in this process before and after the fleets, the fleets the
real system (``learner.main`` with a learner that never trains), so the ratio says what
the actors' network, compression and Ray cost. The acting network runs in
``--actor-precision`` (``actors/acting.py``); the core's rows give the forward pass's
share of the loop (timed around each call) and what converting a publish costs (the
actor's ``set_weights``, timed; measured in this process by ``benchmarks.actor_core``).
What each row measures and how: ``docs/benchmark-methods.md`` (actors).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from benchmarks.actor_core import (  # noqa: F401  (importable from here as before)
    actor_config,
    actor_core_rate,
    emulator_rate,
    publish_cost,
    publish_text,
)
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
from benchmarks.machine import describe_machine, loadavg, machine, wait_quiet
from benchmarks.procs import cpu_delta, foreign_cores, sample_near
from benchmarks.profiling import ACTOR_CATEGORIES, ACTOR_KEEP, REPLAY_CATEGORIES, print_spy, spy_processes
from benchmarks.report import final_json, table, verdict
from benchmarks.system_run import SystemRun, tmp_dir, window_bounds, window_rate

#: Issue 13's targets: efficiency with one actor on one core, and with more actors (one per core).
TARGET_ONE, TARGET_MANY = 0.75, 0.65


def target_for(num_actors: int) -> float:
    return TARGET_ONE if num_actors == 1 else TARGET_MANY


# --------------------------------------------------------------------------- the fleet


def fleet_argv(args, n: int, profile: bool) -> list:
    """learner.main's command line for a fleet of ``n`` actors and a learner that never trains."""
    return [
        "--env",
        args.env,
        "--num-actors",
        n,
        "--envs-per-actor",
        args.envs_per_actor,
        "--replay-ratio",
        0,
        "--actor-precision",
        args.actor_precision,
        "--replay-capacity",
        args.replay_capacity,
        "--learning-starts",
        args.replay_capacity,
        "--log-interval",
        1,
        "--seed",
        args.seed,
        "--device",
        "cpu",
        "--time-limit",
        args.warmup + args.window + 120 + (args.spy_seconds if profile else 0),
    ]


def fleet_cpu(s0: dict, s1: dict) -> dict:
    """Cores used between two process samples, by process class."""
    dt = max(s1["t"] - s0["t"], 1e-9)

    def other(p) -> bool:
        return p["category"] == "worker" and "ActorShell" not in p["label"] and "ReplayServer" not in p["label"]

    return {
        "actors": cpu_delta(s0, s1, lambda p: "ActorShell" in p["label"]) / dt,
        "replay": cpu_delta(s0, s1, lambda p: "ReplayServer" in p["label"]) / dt,
        "driver": cpu_delta(s0, s1, lambda p: p["category"] == "driver") / dt,
        "ray_system": cpu_delta(s0, s1, lambda p: p["category"] == "ray_system") / dt,
        "other_workers": cpu_delta(s0, s1, other) / dt,
    }


def fleet_rate(args, n: int, run_dir, profile: bool) -> dict:
    run = SystemRun(fleet_argv(args, n, profile), run_dir, worker_niceness=args.worker_niceness).start()
    out: dict = {"num_actors": n, "command": run.command}
    try:
        if not run.watch(lambda r: r.first_row(lambda x: x["agent_steps"] > 0) is not None, timeout=180):
            raise RuntimeError(f"the system did not start stepping:\n{run.log_tail()}")
        t_first = run.first_row(lambda x: x["agent_steps"] > 0)["t_local"]
        t0, t1 = t_first + args.warmup, t_first + args.warmup + args.window
        if not run.watch(lambda r: r.rows and r.rows[-1]["t_local"] >= t1, timeout=args.warmup + args.window + 60):
            raise RuntimeError(f"the run ended before the window did:\n{run.log_tail()}")
        a, b = window_bounds(run.rows, t0, t1)
        s0, s1 = sample_near(run.samples, a), sample_near(run.samples, b)
        out.update(
            agent_steps_per_s=window_rate(run.rows, "agent_steps", t0, t1),
            window_s=b - a,
            cpu_cores=fleet_cpu(s0, s1),
            foreign_cores=foreign_cores(s0, s1),
            replay_size_end=run.rows[-1]["replay_size"],
            loadavg_end=loadavg(),
        )
        if profile:
            out["py_spy"] = spy_actor(run, args.spy_seconds, run_dir)
    finally:
        rc = run.stop()
    out["exit_code"] = rc
    return out


def spy_actor(run: SystemRun, seconds: float, run_dir) -> dict:
    """py-spy of actor-0's stepping thread and of the replay, after the measurement window."""
    pids = run.sampler.pids("actor-0:") or run.sampler.pids("ActorShell")
    replay = run.sampler.pids("ReplayServer")
    return spy_processes(
        run,
        {
            "actor": (pids[0] if pids else None, ACTOR_KEEP, ACTOR_CATEGORIES),
            "replay": (replay[0] if replay else None, None, REPLAY_CATEGORIES),
        },
        seconds,
        run_dir.parent / run_dir.name,
    )


def run_sweep(args) -> list[dict]:
    """The actor core per precision and E, each point against the emulator at the same E."""
    out = []
    for num_envs in [int(x) for x in args.sweep_envs.split(",")]:
        wait_quiet(timeout=args.quiet_wait)
        base = emulator_rate(args.env, num_envs, args.sweep_seconds, args.seed)
        for precision in args.sweep_precisions.split(","):
            r = actor_core_rate(args.env, num_envs, args.sweep_seconds, args.seed, precision=precision)
            r.update(
                emulator_steps_per_s=base["agent_steps_per_s"],
                efficiency=r["agent_steps_per_s"] / base["agent_steps_per_s"],
                cpu_efficiency=r["agent_steps_per_cpu_s"] / base["agent_steps_per_cpu_s"],
                foreign_cores=(r["foreign_cores"] + base["foreign_cores"]) / 2,
            )
            out.append(r)
            print(
                f"sweep E={num_envs} {r['precision']}: efficiency {r['efficiency']:.2f} (CPU {r['cpu_efficiency']:.2f}), "
                f"forward {r['forward_share']:.0%} of the loop, publish {publish_text(r['publish'])}, "
                f"core {r['core_rss_mb']:.0f} MB, foreign {r['foreign_cores']:.2f} cores",
                flush=True,
            )
    return out


# --------------------------------------------------------------------------- main


def actor_counts(args) -> list[int]:
    if args.actor_counts:
        return [int(x) for x in args.actor_counts.split(",")]
    counts, n = [], 1
    while n < args.max_actors:
        counts.append(n)
        n *= 2
    return counts + [args.max_actors]


def _counts(text: str) -> str:
    """--actor-counts: a comma-separated list of actor counts >= 1, e.g. 1,2,4."""
    try:
        ok = all(int(n) >= 1 for n in text.split(","))
    except ValueError:
        ok = False
    if not ok:
        raise argparse.ArgumentTypeError(f"expected actor counts >= 1 separated by commas (1,2,4), got {text!r}")
    return text


def build_parser() -> argparse.ArgumentParser:
    p = parser(__doc__.splitlines()[0])
    add_learner_flags(
        p,
        {"--env": "ALE/Breakout-v5", "--envs-per-actor": None, "--actor-precision": "auto"},
        notes={
            "--envs-per-actor": "E, also of each baseline process (default: learner.main's)",
            "--actor-precision": "the actors' acting network",
        },
    )
    p.add_argument(
        "--sweep",
        action="store_true",
        help="also the actor core for each precision and E of "
        "--sweep-precisions x --sweep-envs, each against the emulator at that E",
    )
    p.add_argument("--sweep-precisions", default="fp32,bf16,int8,bf16-int8,int8-static")
    p.add_argument("--sweep-envs", type=_counts, default="8,16,32,64")
    p.add_argument(
        "--sweep-seconds", type=SECONDS, default=8.0, help="each point of the sweep (and its emulator baseline)"
    )
    p.add_argument(
        "--max-actors", type=POSITIVE_INT, default=None, help="largest N (default: cores); N runs 1, 2, 4, ... up to it"
    )
    p.add_argument("--actor-counts", type=_counts, default=None, help="explicit list of N, e.g. 1,2,3")
    p.add_argument(
        "--baseline-seconds", type=SECONDS, default=20.0, help="each emulator baseline (run before and after the fleet)"
    )
    p.add_argument("--core-seconds", type=SECONDS, default=20.0, help="the in-process actor core measurement")
    p.add_argument(
        "--warmup", type=SECONDS_OR_ZERO, default=10.0, help="seconds discarded after the fleet's first steps"
    )
    p.add_argument("--window", type=SECONDS, default=40.0, help="seconds measured per fleet size")
    add_learner_flags(
        p,
        {"--replay-capacity": 1_000_000, "--seed": 0},
        notes={"--replay-capacity": "also --learning-starts, so the learner never trains"},
    )
    _add_run_flags(p)
    return p


def _add_run_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--worker-niceness",
        type=NICENESS,
        default=None,
        help="RAY_worker_niceness for Ray's workers (default: learner.main's, 0; Ray's own default is 15)",
    )
    p.add_argument(
        "--quiet-wait",
        type=SECONDS_OR_ZERO,
        default=120.0,
        help="before each phase, wait up to this long for other work on the (shared) machine to drop under 0.25 cores",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="where the actor core's loop spends its time, by module; py-spy of a live actor (N=1)",
    )
    p.add_argument("--spy-seconds", type=SECONDS, default=15.0)
    p.add_argument("--quick", action="store_true", help="smoke check: short windows, N=1 only")
    p.add_argument("--out-dir", default=None, help="where run directories go (default: a fresh temp dir)")


def parse_args(argv, cores: int):
    """The flags, checked (learner.main's by its own Config) before anything starts; then
    --quick's short windows and the default largest N."""
    p = build_parser()
    args = p.parse_args(argv)
    check_env(p, "--env", args.env)
    check_out_dir(p, "--out-dir", args.out_dir)
    if args.envs_per_actor is None:  # what learner.main would pick for this env
        from common.config import Config, EnvConfig, resolve
        from common.envs import is_atari

        cfg = resolve(Config(env=EnvConfig(env_id=args.env)), atari=is_atari(args.env), cuda=False)
        args.envs_per_actor = cfg.env.envs_per_actor
    learner_argv = ["--env", args.env, "--num-actors", args.max_actors or 1, "--envs-per-actor", args.envs_per_actor]
    learner_argv += ["--replay-capacity", args.replay_capacity, "--learning-starts", args.replay_capacity]
    learner_argv += ["--seed", args.seed, "--device", "cpu", "--actor-precision", args.actor_precision]
    check_learner_flags(p, learner_argv)
    if args.quick:
        args.baseline_seconds, args.core_seconds, args.warmup, args.window = 4.0, 5.0, 3.0, 8.0
        args.actor_counts = args.actor_counts or "1"
        args.spy_seconds = min(args.spy_seconds, 5.0)
        args.quiet_wait = min(args.quiet_wait, 10.0)
    if args.max_actors is None:
        args.max_actors = max(1, min(cores, 2) if cores <= 2 else cores - 2)
    return args


def measure_baseline(args, seed: int, when: str) -> dict:
    wait_quiet(timeout=args.quiet_wait)
    base = emulator_rate(args.env, args.envs_per_actor, args.baseline_seconds, seed)
    if when == "before":
        print(
            f"emulator baseline (before): {base['agent_steps_per_s']:,.0f} agent steps/s "
            f"({base['cpu_per_wall']:.2f} CPU-s per s)",
            flush=True,
        )
    else:
        print(f"emulator baseline (after): {base['agent_steps_per_s']:,.0f} agent steps/s", flush=True)
    return base


def measure_core(args) -> dict:
    """The actor core without Ray (and, with --profile, a second pass under the stack sampler)."""
    wait_quiet(timeout=args.quiet_wait)
    core = actor_core_rate(args.env, args.envs_per_actor, args.core_seconds, args.seed, precision=args.actor_precision)
    if args.profile:  # a separate pass: the sampler takes the GIL, so it never feeds the figures
        core["profile"] = actor_core_rate(
            args.env, args.envs_per_actor, args.core_seconds, args.seed, profile=True, precision=args.actor_precision
        )["profile"]
    print(
        f"actor core, no Ray: {core['agent_steps_per_s']:,.0f} agent steps/s, "
        f"{core['message_bytes_per_step']:.0f} message bytes per agent step; acting network {core['precision']} "
        f"(--actor-precision {args.actor_precision}): forward pass {core['forward_share']:.0%} of the loop, "
        f"{core['forward_ms_per_stack']:.3f} ms per stack; a publish costs {publish_text(core['publish'])}",
        flush=True,
    )
    return core


def measure_fleets(args, counts: list[int], out_dir: Path) -> list[dict]:
    fleets = []
    for n in counts:
        wait_quiet(timeout=args.quiet_wait)
        f = fleet_rate(args, n, out_dir / f"fleet-{n}", profile=args.profile and n == counts[0])
        fleets.append(f)
        print(
            f"fleet N={n}: {f['agent_steps_per_s']:,.0f} agent steps/s over {f['window_s']:.0f} s; CPU cores used: "
            + ", ".join(f"{k} {v:.2f}" for k, v in f["cpu_cores"].items()),
            flush=True,
        )
    return fleets


def judge_fleets(fleets: list[dict], per_core: float, per_cpu_s: float, cores: int) -> list:
    """Each fleet's efficiency (and the marginal one of its extra cores), added to it; its row."""
    rows, prev = [], None
    for f in fleets:
        n = f["num_actors"]
        used = min(n, cores)
        eff = f["agent_steps_per_s"] / (per_core * used)
        marginal = None
        if prev is not None:
            extra = used - min(prev["num_actors"], cores)
            marginal = (f["agent_steps_per_s"] - prev["agent_steps_per_s"]) / (per_core * extra) if extra > 0 else None
        per_actor_cpu = f["agent_steps_per_s"] / max(f["cpu_cores"]["actors"], 1e-9)
        f.update(
            cores_used=used,
            efficiency=eff,
            marginal_efficiency=marginal,
            agent_steps_per_actor_cpu_s=per_actor_cpu,
            cpu_efficiency=per_actor_cpu / per_cpu_s,
        )
        c = f["cpu_cores"]
        rows.append(
            [f"fleet N={n} (cores used {used})", f["agent_steps_per_s"], f["agent_steps_per_s"] / used, eff, marginal]
            + [c["actors"], c["replay"] + c["driver"] + c["ray_system"] + c["other_workers"], f["foreign_cores"]]
            + [per_actor_cpu, f["cpu_efficiency"], f"{target_for(n)}: {verdict(eff, target_for(n))}"]
        )
        prev = f
    return rows


EFFICIENCY_HEADERS = [
    "what",
    "agent steps/s",
    "per core",
    "efficiency",
    "marginal",
    "actor CPU",
    "system CPU",
    "foreign CPU",
    "steps/actor-CPU-s",
    "CPU eff.",
    "target >=",
]


def print_efficiency(args, base1: dict, base2: dict, core: dict, fleet_rows: list) -> None:
    """The table: the emulator alone, the actor core without Ray, each fleet."""
    per_core = (base1["agent_steps_per_s"] + base2["agent_steps_per_s"]) / 2
    per_cpu_s = (base1["agent_steps_per_cpu_s"] + base2["agent_steps_per_cpu_s"]) / 2
    foreign = (base1["foreign_cores"] + base2["foreign_cores"]) / 2
    rows = [
        ["emulator only, 1 process", per_core, per_core, 1.0, None, None, None, foreign, per_cpu_s, 1.0, ""],
        [f"actor core ({core['precision']}), no Ray, 1 process", core["agent_steps_per_s"], core["agent_steps_per_s"]]
        + [core["agent_steps_per_s"] / per_core, None, None, None, core["foreign_cores"]]
        + [core["agent_steps_per_cpu_s"], core["agent_steps_per_cpu_s"] / per_cpu_s, ""],
    ]
    print()
    print(
        table(
            EFFICIENCY_HEADERS,
            rows + fleet_rows,
            title=f"Actor efficiency ({args.env}, E={args.envs_per_actor}); baseline = mean of "
            f"{base1['agent_steps_per_s']:,.0f} (before) and {base2['agent_steps_per_s']:,.0f} (after) steps/s",
        )
    )
    print(
        "efficiency = agent steps/s / (emulator steps/s per core x cores used); CPU eff. = agent steps per actor "
        "CPU-second / emulator steps per CPU-second (insensitive to the machine's other load); "
        "'actor CPU', 'system CPU' (replay + driver + Ray daemons) and 'foreign CPU' (everything else on this "
        "shared machine, measured over the same interval) in cores."
    )


SWEEP_HEADERS = [
    "precision",
    "E",
    "agent steps/s",
    "emulator steps/s (same E)",
    "efficiency",
    "CPU eff.",
    "forward share",
    "forward ms/stack",
    "publish ms",
    "core MB",
    "foreign CPU",
]
SWEEP_KEYS = (
    "precision",
    "envs_per_actor",
    "agent_steps_per_s",
    "emulator_steps_per_s",
    "efficiency",
    "cpu_efficiency",
    "forward_share",
    "forward_ms_per_stack",
)


def print_sweep(sweep: list[dict]) -> None:
    rows = [
        [r[k] for k in SWEEP_KEYS] + [r["publish"]["median_ms"], r["core_rss_mb"], r["foreign_cores"]] for r in sweep
    ]
    print()
    title = "Actor core (no Ray) per precision and envs per actor E, each against the bare emulator stepping E envs just before it"
    print(table(SWEEP_HEADERS, rows, title=title))
    print(
        "core MB: this process's resident memory grown by building the core and stepping it (the E emulators, "
        "the network, the records held); a Ray actor adds its worker's own memory."
    )


def print_profile(core: dict, fleets: list[dict]) -> None:
    print()
    print(
        table(
            ["part of the actor core loop (stack samples, by module)", "share of samples"],
            [[k, v] for k, v in core["profile"].items()],
        )
    )
    spy = fleets[0].get("py_spy", {})
    print()
    print_spy(f"live actor-0 (N={fleets[0]['num_actors']}), py-spy, its stepping thread", spy.get("actor", {}))
    print()
    print_spy("live replay server, py-spy, all threads (idle included)", spy.get("replay", {}))


def main(argv=None) -> int:
    cores = os.cpu_count() or 1
    args = parse_args(argv, cores)
    out_dir = Path(args.out_dir) if args.out_dir else tmp_dir("bench-actors-")
    m = machine()
    print(describe_machine(m), flush=True)
    counts = actor_counts(args)
    print(
        f"env {args.env}, {args.envs_per_actor} envs per actor, fleets N = {counts}, run dirs under {out_dir}",
        flush=True,
    )
    base1 = measure_baseline(args, args.seed, "before")
    core = measure_core(args)
    sweep = run_sweep(args) if args.sweep else []
    fleets = measure_fleets(args, counts, out_dir)
    base2 = measure_baseline(args, args.seed + 1, "after")
    per_core = (base1["agent_steps_per_s"] + base2["agent_steps_per_s"]) / 2
    per_cpu_s = (base1["agent_steps_per_cpu_s"] + base2["agent_steps_per_cpu_s"]) / 2
    print_efficiency(args, base1, base2, core, judge_fleets(fleets, per_core, per_cpu_s, cores))
    if sweep:
        print_sweep(sweep)
    if args.profile:
        print_profile(core, fleets)
    print(f"load average at the end: {loadavg()} (the machine is shared; compare ratios, not absolute figures)")
    final_json(
        {
            "benchmark": "actors",
            "machine": m,
            "env": args.env,
            "envs_per_actor": args.envs_per_actor,
            "baseline_before": base1,
            "baseline_after": base2,
            "baseline_per_core": per_core,
            "baseline_per_cpu_s": per_cpu_s,
            "actor_core": core,
            "fleets": fleets,
            "target": {"one_actor": TARGET_ONE, "more_actors": TARGET_MANY},
            "actor_precision": args.actor_precision,
            "sweep": sweep,
            "met": {f"N={f['num_actors']}": f["efficiency"] >= target_for(f["num_actors"]) for f in fleets},
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
