"""Against peers, same machine, same game, same settings, same run.

    python -m benchmarks.peers                                   # about 5 min here
    python -m benchmarks.peers --rllib-python /path/to/python    # + RLlib's DQN, measured (about 4 min more)
    python -m benchmarks.peers --quick                           # smoke check, about a minute

raydqn against CleanRL's DQN algorithm as a plain single-process loop
(``benchmarks.cleanrl_dqn``) and RLlib's DQN (``benchmarks._rllib_dqn``; without RLlib, the
recorded figures of ``docs/peers.md``), all at Breakout, batch 32, replay ratio 8, capacity
100K, learning from 10K, learner on the CPU. Two comparisons: at the peers' settings with
raydqn's default (Ape-X) update, and at equal work per update (issue 14): ``--preset nature``
with Adam against the loop (CleanRL's algorithm), ``--preset nature`` as published (RMSProp)
against the loop with the same RMSProp, and raydqn at RLlib's own settings (double, no
dueling, n = 1) against RLlib. The program measures in phases (``measure``: each update
alone, the loop, raydqn, the equal-work runs, free-running, the updates again, RLlib), then
``benchmarks.peers_report`` judges and prints. Each system's settings, how memory is
counted, and the targets: ``docs/benchmark-methods.md`` (peers).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

from benchmarks import learner as L
from benchmarks.cleanrl_dqn import (  # noqa: F401  (the loop's parts, importable from here as before)
    cleanrl_loop,
    cleanrl_qnetwork,
    cleanrl_update_rate,
    cleanrl_update_step,
    loop_optimizer,
    vm_hwm_mb,
)
from benchmarks.cli import SECONDS, SECONDS_OR_ZERO, check_learner_flags, parser
from benchmarks.machine import describe_machine, machine, wait_quiet
from benchmarks.peers_report import TARGETS, Measured, report, result_json  # noqa: F401  (TARGETS: as before)
from benchmarks.procs import MB, foreign_cores, sample_near
from benchmarks.report import final_json
from benchmarks.system_run import ROOT, SystemRun, memory_projection, tmp_dir, window_bounds, window_rate

#: RLlib's figures as recorded (docs/peers.md), reported when RLlib cannot run here.
RLLIB_RECORDED = {
    "agent_steps_per_s": 17.6,
    "updates_per_s": 4.4,
    "trained_samples_per_s": 4.4 * 32,
    "memory_mb": 3.9 * 1000,
    "source": "docs/peers.md (recorded on a 2-core VM, NOT measured in this run)",
}
# The equal-work rows (issue 14): raydqn doing, per update, what its peer does. Batch 32, replay
# ratio 8 (one update of 32 per 4 agent steps), capacity and learning start come from the shared
# flags. The loop syncs its target every 1,000 agent steps, RLlib every 1,000 sampled env steps
# (target_network_update_freq): 250 updates at one update per 4 steps, hence the period.
LOOP_TARGET_UPDATES = 250
# Every raydqn run here, today's rows too, runs without the evaluator: ``benchmarks.learner.
# system_rate`` passes --eval-period 0 (neither the loop nor RLlib evaluates).
#: CleanRL's algorithm exactly: Nature CNN, max target, n = 1, uniform, MSE, Adam lr 1e-4 eps 1e-8, fp32.
NATURE_ADAM = [
    "--preset",
    "nature",
    "--optimizer",
    "adam",
    "--lr",
    1e-4,
    "--adam-eps",
    1e-8,
    "--loss",
    "mse",
    "--precision",
    "fp32",
    "--target-update-period",
    LOOP_TARGET_UPDATES,
]
#: --preset nature as published (centred RMSProp, Huber), fp32; the loop runs the same RMSProp.
NATURE_RMSPROP = ["--preset", "nature", "--precision", "fp32", "--target-update-period", LOOP_TARGET_UPDATES]
#: RLlib's DQN settings (benchmarks._rllib_dqn): double, no dueling, n = 1, uniform, Adam lr 1e-4,
#: Huber; the learner's precision as shipped (auto: bf16 on a CPU with native bf16).
RLLIB_SETTINGS = [
    "--double-q",
    "on",
    "--dueling",
    "off",
    "--n-step",
    1,
    "--prioritized",
    "off",
    "--optimizer",
    "adam",
    "--lr",
    1e-4,
    "--target-update-period",
    LOOP_TARGET_UPDATES,
]
#: each equal-work pair's flags, by the pair's name in the report
EQUAL_WORK_FLAGS = {"adam": NATURE_ADAM, "rmsprop": NATURE_RMSPROP, "rllib_settings": RLLIB_SETTINGS}
#: the same update alone (benchmarks.learner.standalone_rate's LearnerConfig values)
NATURE_ADAM_UPDATE = {
    "double_q": False,
    "dueling": False,
    "loss": "mse",
    "optimizer": "adam",
    "lr": 1e-4,
    "adam_eps": 1e-8,
    "grad_clip": 0.0,
    "target_update_period": LOOP_TARGET_UPDATES,
    "precision": "fp32",
}


@contextlib.contextmanager
def extra_flags(flags: list):
    """``benchmarks.learner.system_rate`` with ``flags`` appended to learner.main's command
    line (argparse: the last occurrence wins), so the equal-work runs are measured by exactly
    the code that measures today's rows."""
    from benchmarks import learner as L

    base = L.SystemRun

    class WithFlags(base):
        def __init__(self, argv, run_dir, **kw):
            super().__init__(list(argv) + [str(f) for f in flags], run_dir, **kw)

    L.SystemRun = WithFlags
    try:
        yield
    finally:
        L.SystemRun = base


def run_cleanrl_child(args, optimizer: str = "adam") -> dict:
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.peers",
        "--cleanrl-child",
        "--cleanrl-seconds",
        str(args.warmup + args.window),
        "--warmup",
        str(args.warmup),
        "--learning-starts",
        str(args.learning_starts),
        "--device",
        args.device,
        "--batch-size",
        str(args.batch_size),
        "--replay-capacity",
        str(args.replay_capacity),
        "--cleanrl-optimizer",
        optimizer,
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"the single-process loop failed:\n{proc.stdout[-2000:]}{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["command"] = " ".join(cmd[1:])
    return out


# --------------------------------------------------------------------------- RLlib


def rllib_python(args) -> str | None:
    if args.rllib_python:
        return None if args.rllib_python == "off" else args.rllib_python
    try:
        import ray.rllib  # noqa: F401
        from ray.rllib.algorithms.dqn import DQNConfig  # noqa: F401

        return sys.executable
    except Exception:
        return None


def run_rllib(args, python: str, run_dir) -> dict:
    seconds = args.rllib_seconds
    argv = ["--seconds", seconds, "--learning-starts", args.learning_starts, "--replay-capacity", 100_000]
    run = SystemRun(argv, run_dir, python=python, module="benchmarks._rllib_dqn").start()
    out: dict = {"command": f"{python} " + run.command.replace("python ", "", 1), "source": "measured in this run"}
    try:
        if not run.watch(lambda r: r.first_row(lambda x: x["learner_steps"] > 0) is not None, timeout=seconds + 60):
            raise RuntimeError(f"RLlib did not start learning in time:\n{run.log_tail()}")
        t_learn = run.first_row(lambda x: x["learner_steps"] > 0)["t_local"]
        run.watch(lambda r: not r.alive(), timeout=seconds + 120)
        rows = run.rows
        t0 = t_learn + args.rllib_warmup
        t1 = rows[-1]["t_local"]
        a, b = window_bounds(rows, t0, t1)
        warm = [r for r in rows if r["t_local"] <= t_learn]
        s0, s1 = sample_near(run.samples, a), sample_near(run.samples, b)
        ups = window_rate(rows, "learner_steps", t0, t1)
        out.update(
            agent_steps_per_s=window_rate(rows, "agent_steps", t0, t1),
            updates_per_s=ups,
            trained_samples_per_s=ups * 32,
            window_s=b - a,
            warmup_agent_steps_per_s=(warm[-1]["agent_steps"] - warm[0]["agent_steps"])
            / max(warm[-1]["t_local"] - warm[0]["t_local"], 1e-9)
            if len(warm) > 1
            else None,
            foreign_cores=foreign_cores(s0, s1) if s0 and s1 else None,
            memory_peak_mb={k: v / MB for k, v in run.sampler.peak.items()},
            memory_by_kind_mb=run.sampler.peak_by_kind,
            replay_steps_end=rows[-1]["agent_steps"],
            # fitted from the first rows on: the warm-up fills 10K steps, enough to fit
            memory_projection=memory_projection(
                run, "agent_steps", ("driver",), rows[0]["t_local"] + 5, 100_000, size_cap=100_000
            ),
        )
    finally:
        out["exit_code"] = run.stop()
    return out


# --------------------------------------------------------------------------- the phases


def say_rate(label: str, r: dict) -> None:
    print(f"{label}: {r['agent_steps_per_s']:.1f} agent steps/s, {r['updates_per_s']:.1f} updates/s", flush=True)


def measure_update_costs(args, m: Measured, seed: int, when: str) -> None:
    """Each update alone on batches in memory: raydqn's, CleanRL's, and the equal-work pair's."""
    m.alone.append(L.standalone_rate(args.batch_size, args.threads, args.standalone_seconds, args.device, seed))
    print(f"standalone raydqn update loop ({when}): {m.alone[-1]['updates_per_s']:.1f} updates/s", flush=True)
    m.clean.append(cleanrl_update_rate(args.batch_size, m.loop_threads, args.standalone_seconds, args.device, seed))
    print(f"standalone CleanRL update loop ({when}): {m.clean[-1]['updates_per_s']:.1f} updates/s", flush=True)
    if not m.equal:
        return
    m.eq_alone.append(
        L.standalone_rate(
            args.batch_size, args.threads, args.standalone_seconds, args.device, seed, fast_paths=NATURE_ADAM_UPDATE
        )
    )
    m.eq_clean.append(cleanrl_update_rate(args.batch_size, args.threads, args.standalone_seconds, args.device, seed))
    print(
        f"equal-work update alone, {args.threads} thread(s): raydqn nature/Adam/fp32 {m.eq_alone[-1]['updates_per_s']:.1f}, "
        f"CleanRL {m.eq_clean[-1]['updates_per_s']:.1f} updates/s",
        flush=True,
    )


def measure_loop_and_raydqn(args, m: Measured) -> None:
    """The single-process loop, then raydqn at the same replay ratio."""
    wait_quiet(timeout=args.quiet_wait)
    m.loop = run_cleanrl_child(args)
    print(
        f"single-process loop: {m.loop['agent_steps_per_s']:.1f} agent steps/s, {m.loop['updates_per_s']:.1f} updates/s, "
        f"peak RSS {m.loop['peak_rss_mb']:,.0f} MB (replay {m.loop['replay_size']:,})",
        flush=True,
    )
    wait_quiet(timeout=args.quiet_wait)
    m.ray8 = L.system_rate(args, m.out_dir / "raydqn-r8", args.profile)
    say_rate(f"raydqn, replay ratio {args.replay_ratio:g}", m.ray8)


def measure_equal_work(args, m: Measured) -> None:
    """raydqn doing its peer's work per update: the Adam pair, the RMSProp pair (its loop
    first), and RLlib's settings (RLlib itself runs last, in :func:`measure_rllib`)."""

    def run(key: str, flags: list, run_dir: str, label: str, loop: dict | None = None) -> None:
        wait_quiet(timeout=args.quiet_wait)
        with extra_flags(flags):
            m.eq[key] = L.system_rate(args, m.out_dir / run_dir, False)
        if loop is not None:
            m.eq[key]["loop"] = loop
        say_rate(label, m.eq[key])

    run("adam", NATURE_ADAM, "raydqn-nature-adam", "raydqn --preset nature, Adam, fp32")
    if not args.skip_rmsprop:
        wait_quiet(timeout=args.quiet_wait)
        loop_rms = run_cleanrl_child(args, "rmsprop")
        say_rate("single-process loop, RMSProp", loop_rms)
        run("rmsprop", NATURE_RMSPROP, "raydqn-nature-rmsprop", "raydqn --preset nature (RMSProp), fp32", loop_rms)
    run("rllib_settings", RLLIB_SETTINGS, "raydqn-rllib-settings", "raydqn at RLlib's settings")


def measure_free_running(args, m: Measured) -> None:
    wait_quiet(timeout=args.quiet_wait)
    m.free = L.system_rate(args, m.out_dir / "raydqn-free", False, replay_ratio=0.0)
    print(
        f"raydqn, free-running: {m.free['agent_steps_per_s']:,.0f} agent steps/s, {m.free['updates_per_s']:.1f} updates/s",
        flush=True,
    )


def measure_rllib(args, m: Measured) -> None:
    """RLlib's DQN where an interpreter has it; otherwise its recorded figures (docs/peers.md)."""
    m.py = rllib_python(args)
    if not m.py:
        m.rllib = dict(RLLIB_RECORDED)
        return
    wait_quiet(timeout=args.quiet_wait)
    m.rllib = run_rllib(args, m.py, m.out_dir / "rllib")
    m.rllib["memory_mb"] = m.rllib["memory_peak_mb"]["ours_rss"]
    say_rate("RLlib DQN", m.rllib)


def measure(args, m: Measured) -> None:
    """Every phase, in order; each waits for the machine to be quiet first."""
    wait_quiet(timeout=args.quiet_wait)
    measure_update_costs(args, m, args.seed, "before")
    measure_loop_and_raydqn(args, m)
    if m.equal:
        measure_equal_work(args, m)
    if not args.skip_free_running:
        measure_free_running(args, m)
    wait_quiet(timeout=args.quiet_wait)
    measure_update_costs(args, m, args.seed + 1, "after")
    measure_rllib(args, m)


# --------------------------------------------------------------------------- main


def build_parser():
    """benchmarks.learner's system flags at the peers' settings, and the peers' own."""
    p = parser(__doc__.splitlines()[0])
    L.add_system_flags(p, batch_size=32, replay_ratio=8.0)
    p.set_defaults(envs_per_actor=1, warmup=10.0, window=40.0, standalone_seconds=10.0)
    p.add_argument(
        "--rllib-python",
        default=None,
        help="an interpreter with ray[rllib] 2.60 (and this project) to run RLlib's DQN with; 'off' to use the "
        "recorded figures of docs/peers.md (default: this one if it has RLlib)",
    )
    p.add_argument(
        "--rllib-seconds", type=SECONDS, default=240.0, help="RLlib's whole run, start-up and warm-up included"
    )
    p.add_argument("--rllib-warmup", type=SECONDS_OR_ZERO, default=10.0, help="seconds of RLlib training discarded")
    p.add_argument("--skip-free-running", action="store_true")
    p.add_argument("--cleanrl-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--cleanrl-seconds", type=SECONDS, default=60.0, help=argparse.SUPPRESS)
    p.add_argument("--cleanrl-optimizer", choices=("adam", "rmsprop"), default="adam", help=argparse.SUPPRESS)
    p.add_argument(
        "--skip-equal-work",
        action="store_true",
        help="skip the equal-work rows (raydqn --preset nature against the loop, raydqn at RLlib's settings)",
    )
    p.add_argument(
        "--skip-rmsprop",
        action="store_true",
        help="skip the equal-work RMSProp pair (--preset nature as "
        "published against the loop with the same centred RMSProp)",
    )
    return p


def parse_args(argv):
    """The flags, each checked before anything starts (one line and exit 2 if one is bad)."""
    p = build_parser()
    args = p.parse_args(argv)
    L.check_system_flags(p, args)
    if not args.skip_equal_work:
        for extra in (NATURE_ADAM, NATURE_RMSPROP, RLLIB_SETTINGS):
            check_learner_flags(p, ["--batch-size", args.batch_size, "--replay-ratio", args.replay_ratio] + extra)
    if args.rllib_python not in (None, "off") and shutil.which(args.rllib_python) is None:
        p.error(f"--rllib-python {args.rllib_python}: no such executable (name an interpreter, or 'off')")
    return args


def cleanrl_child(args) -> int:
    """The single-process loop in a process of its own (its peak RSS is its own): one JSON line."""
    out = cleanrl_loop(
        args.cleanrl_seconds,
        args.learning_starts,
        args.replay_capacity,
        args.batch_size,
        4,
        args.warmup,
        device=args.device,
        optimizer=args.cleanrl_optimizer,
    )
    print(json.dumps(out), flush=True)
    return 0


def print_header(args, out_dir: Path, machine_facts: dict) -> None:
    print(describe_machine(machine_facts), flush=True)
    if args.quick:
        print("QUICK MODE: short windows and learning from 2,000 (not the settings of the targets)", flush=True)
    print(
        f"Breakout, batch {args.batch_size}, replay ratio {args.replay_ratio:g}, capacity {args.replay_capacity:,}, "
        f"learning from {args.learning_starts:,}; raydqn {args.num_actors} actors x {args.envs_per_actor} envs, "
        f"{args.threads} learner threads, Ray worker niceness {L.niceness_text(args)}, pin-cpus {args.pin_cpus}; run dirs under {out_dir}",
        flush=True,
    )


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.cleanrl_child:
        return cleanrl_child(args)
    L.apply_quick(args)
    if args.quick:
        args.rllib_seconds = min(args.rllib_seconds, 90.0)
        args.rllib_warmup = min(args.rllib_warmup, 5.0)
    out_dir = Path(args.out_dir) if args.out_dir else tmp_dir("bench-peers-")
    machine_facts = machine()
    print_header(args, out_dir, machine_facts)
    import torch

    m = Measured(out_dir, loop_threads=torch.get_num_threads(), equal=not args.skip_equal_work, flags=EQUAL_WORK_FLAGS)
    measure(args, m)
    reported = report(args, m, machine_facts)
    final_json(result_json(args, m, machine_facts, reported["ratios"], reported["equal_rows"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
