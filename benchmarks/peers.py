"""Against peers, same machine, same game, same settings, same run.

    python -m benchmarks.peers                                   # about 5 min here
    python -m benchmarks.peers --rllib-python /path/to/python    # + RLlib's DQN, measured (about 4 min more)
    python -m benchmarks.peers --quick                           # smoke check, about a minute

raydqn against CleanRL's DQN algorithm as a plain single-process loop (``benchmarks.cleanrl_dqn``)
and RLlib's DQN (``benchmarks._rllib_dqn``; without RLlib, the recorded figures of
``docs/peers.md``), all at
Breakout, batch 32, replay ratio 8, capacity 100K, learning from 10K, learner on the CPU.
Two comparisons: at the peers' settings with raydqn's default (Ape-X) update, and at equal
work per update (issue 14): ``--preset nature`` with Adam against the loop (CleanRL's
algorithm), ``--preset nature`` as published (RMSProp) against the loop with the same
RMSProp, and raydqn at RLlib's own settings (double, no dueling, n = 1) against RLlib.
The program runs in phases (``measure``: each update alone, the loop, raydqn, the equal-work
runs, free-running, the updates again, RLlib) and then reports (``report``). Each system's
settings, how memory is counted, and the targets: ``docs/benchmark-methods.md`` (peers).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
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
from benchmarks.machine import describe_machine, loadavg, machine, wait_quiet
from benchmarks.procs import MB, foreign_cores, sample_near
from benchmarks.profiling import print_spy
from benchmarks.report import final_json, table, verdict
from benchmarks.system_run import ROOT, SystemRun, memory_projection, tmp_dir, window_bounds, window_rate

RLLIB_RECORDED = {
    "agent_steps_per_s": 17.6,
    "updates_per_s": 4.4,
    "trained_samples_per_s": 4.4 * 32,
    "memory_mb": 3.9 * 1000,
    "source": "docs/peers.md (recorded on a 2-core VM, NOT measured in this run)",
}
TARGETS = {
    "samples_vs_rllib": 3.5,
    "samples_vs_loop": 0.95,
    "memory_vs_rllib": 0.25,
    "memory_full_replay_vs_rllib": 0.25,
    "memory_projected_100k_vs_rllib": 0.25,
    "free_steps_vs_rllib": 20.0,
    "free_learner_vs_standalone": 0.9,
    "equal_work_adam_vs_loop": 0.95,
    "equal_work_rmsprop_vs_loop": 0.95,
    "rllib_settings_vs_rllib": 3.5,
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


# --------------------------------------------------------------------------- what the phases measure


@dataclasses.dataclass
class Measured:
    """What the phases measured, filled in the order they run."""

    out_dir: Path
    loop_threads: int  # the single-process loop has the machine to itself: torch's default
    equal: bool  # the equal-work rows are measured
    alone: list = dataclasses.field(default_factory=list)  # raydqn's update alone, before and after
    clean: list = dataclasses.field(default_factory=list)  # CleanRL's update alone, before and after
    eq_alone: list = dataclasses.field(default_factory=list)  # the equal-work update alone, both at
    eq_clean: list = dataclasses.field(default_factory=list)  # raydqn's learner threads (before, after)
    loop: dict | None = None
    ray8: dict | None = None
    eq: dict = dataclasses.field(default_factory=dict)  # name -> raydqn's equal-work run
    free: dict | None = None
    rllib: dict | None = None
    py: str | None = None  # the interpreter RLlib ran in; None: its figures are the recorded ones

    @property
    def alone_rate(self) -> float:
        return (self.alone[0]["updates_per_s"] + self.alone[1]["updates_per_s"]) / 2

    @property
    def clean_rate(self) -> float:
        return (self.clean[0]["updates_per_s"] + self.clean[1]["updates_per_s"]) / 2


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


# --------------------------------------------------------------------------- the report

HEADERS = [
    "system",
    "agent steps/s",
    "updates/s",
    "samples/s",
    "RSS MB (ours)",
    "PSS MB (ours)",
    "Ray daemons RSS MB",
    "replay size",
    "foreign CPU",
]


def _system_row(name: str, r: dict, replay_key: str = "replay_size_end") -> list:
    mem = r["memory_peak_mb"]
    return [
        name,
        r["agent_steps_per_s"],
        r["updates_per_s"],
        r["trained_samples_per_s"],
        mem["ours_rss"],
        mem["ours_pss"],
        mem["ray_system_rss"],
        r.get(replay_key),
        r.get("foreign_cores"),
    ]


def _alone_row(name: str, rate: float, runs: list, batch_size: int) -> list:
    foreign = (runs[0]["foreign_cores"] + runs[1]["foreign_cores"]) / 2
    return [name, None, rate, rate * batch_size, None, None, None, None, foreign]


def system_rows(args, m: Measured) -> list:
    """The peers table: the loop, raydqn (ratio, free-running), RLlib, each update alone."""
    loop, envs = m.loop, f"{args.num_actors}x{args.envs_per_actor} envs"
    rows = [
        [
            "single-process loop (CleanRL's algorithm)",
            loop["agent_steps_per_s"],
            loop["updates_per_s"],
            loop["trained_samples_per_s"],
            loop["peak_rss_mb"],
            None,
            None,
            loop["replay_size"],
            loop["foreign_cores"],
        ],
        _system_row(f"raydqn, ratio {args.replay_ratio:g}, {envs}", m.ray8),
    ]
    if m.free:
        rows.append(_system_row(f"raydqn, free-running, {envs}", m.free))
    if m.py:
        rows.append(_system_row("RLlib 2.60 DQN (measured)", m.rllib, "replay_steps_end"))
    else:
        rl = m.rllib
        recorded = [rl["agent_steps_per_s"], rl["updates_per_s"], rl["trained_samples_per_s"], rl["memory_mb"]]
        rows.append(["RLlib 2.60 DQN (RECORDED, docs/peers.md)", *recorded, None, None, None, None])
    rows.append(
        _alone_row("raydqn update alone (double, dueling; mean before/after)", m.alone_rate, m.alone, args.batch_size)
    )
    rows.append(_alone_row("CleanRL update alone (plain CNN, 1 target pass)", m.clean_rate, m.clean, args.batch_size))
    return rows


def print_memory_notes(m: Measured) -> None:
    """How memory was counted, each run's memory by process kind, and the fitted projections."""
    print(
        "memory: peak over the run; 'ours' = driver + Ray worker processes (raydqn: learner, replay, actors; RLlib: "
        "driver with learner and replay, env runner); Ray's daemons apart. The loop: its peak RSS (VmHWM). "
        "'foreign CPU': cores used by other work on this shared machine during the window."
    )
    rllib = m.rllib if m.py else None
    for name, r in (("raydqn ratio run", m.ray8), ("raydqn free run", m.free), ("RLlib", rllib)):
        if r and "memory_by_kind_mb" in r:
            print(
                f"  {name}, RSS by process kind at the run's peak: "
                + ", ".join(
                    f"{k} {v['rss_mb']:,.0f} MB ({v['count']} proc, PSS {v['pss_mb']:,.0f})"
                    for k, v in r["memory_by_kind_mb"].items()
                )
            )
    for name, r in (("raydqn ratio run", m.ray8), ("RLlib", rllib)):
        pj = (r or {}).get("memory_projection", {})
        if "projected_ours_rss_mb" in pj:
            print(
                f"  {name}: RSS grows {pj['mb_per_1k_items']:.1f} MB per 1K transitions stored (fitted over "
                f"{pj['fitted_from_items']:,.0f}..{pj['fitted_to_items']:,.0f}); projected at a full {pj['capacity']:,} replay: "
                f"{pj['projected_ours_rss_mb']:,.0f} MB (an estimate)"
            )
        elif r and pj:
            print(f"  {name}: no projection ({pj.get('error')})")
    if not m.py:
        print(
            "RLlib: NOT measured in this run (ray.rllib is not importable here); its row holds the recorded figures "
            "of docs/peers.md (17.6 agent steps/s, 4.4 updates/s, 3.9 GB). Run with --rllib-python PATH to measure it."
        )


def _target(name: str, ratio: float, key: str) -> list:
    """A row of the targets table; memory targets are ceilings, the others floors."""
    memory = key.startswith("memory")
    return [name, ratio, f"{'<=' if memory else '>='} {TARGETS[key]:g}", verdict(ratio, TARGETS[key], not memory)]


def target_rows(m: Measured, ratios: dict) -> list:
    """The ratios against the targets (added to ``ratios``) and their table's rows."""
    ray8, rllib, free = m.ray8, m.rllib, m.free
    ratios["samples_vs_rllib"] = ray8["trained_samples_per_s"] / rllib["trained_samples_per_s"]
    ratios["samples_vs_loop"] = ray8["trained_samples_per_s"] / m.loop["trained_samples_per_s"]
    ratios["memory_vs_rllib"] = ray8["memory_peak_mb"]["ours_rss"] / rllib["memory_mb"]
    tgt = [
        _target("trained samples/s vs RLlib", ratios["samples_vs_rllib"], "samples_vs_rllib"),
        _target("trained samples/s vs single-process loop", ratios["samples_vs_loop"], "samples_vs_loop"),
        _target(
            f"memory (RSS, ratio run, replay {ray8.get('replay_size_end') or 0:,.0f}) vs RLlib",
            ratios["memory_vs_rllib"],
            "memory_vs_rllib",
        ),
    ]
    if free:
        ratios["memory_full_replay_vs_rllib"] = free["memory_peak_mb"]["ours_rss"] / rllib["memory_mb"]
        ratios["free_steps_vs_rllib"] = free["agent_steps_per_s"] / rllib["agent_steps_per_s"]
        ratios["free_learner_vs_standalone"] = free["updates_per_s"] / m.alone_rate
    proj_r = ray8.get("memory_projection", {}).get("projected_ours_rss_mb")
    proj_l = rllib.get("memory_projection", {}).get("projected_ours_rss_mb") if m.py else None
    if proj_r and proj_l:
        ratios["memory_projected_100k_vs_rllib"] = proj_r / proj_l
        name = "memory (RSS) projected to a full 100K replay, both (estimate)"
        tgt.append(_target(name, ratios["memory_projected_100k_vs_rllib"], "memory_projected_100k_vs_rllib"))
    if free:
        name = f"memory (RSS, free run, replay {free.get('replay_size_end') or 0:,.0f}) vs RLlib"
        tgt.append(_target(name, ratios["memory_full_replay_vs_rllib"], "memory_full_replay_vs_rllib"))
        tgt.append(_target("free-running agent steps/s vs RLlib", ratios["free_steps_vs_rllib"], "free_steps_vs_rllib"))
        tgt.append(
            _target(
                "free-running learner vs standalone", ratios["free_learner_vs_standalone"], "free_learner_vs_standalone"
            )
        )
    return tgt


def print_update_cost(m: Measured, ratios: dict) -> None:
    """Each system against its own update alone."""
    alone, clean_alone = m.alone_rate, m.clean_rate
    print()
    print(
        f"update cost: raydqn's update (double DQN: 3 forward passes, dueling head, Huber, clipping) runs "
        f"{alone:.1f}/s alone, CleanRL's (2 forward passes, plain head, MSE) {clean_alone:.1f}/s: "
        f"{clean_alone / alone:.2f}x more work per update for raydqn. Each system against its own update alone: "
        f"raydqn {m.ray8['updates_per_s'] / alone:.2f}, single-process loop {m.loop['updates_per_s'] / clean_alone:.2f}."
    )
    ratios["raydqn_vs_own_update"] = m.ray8["updates_per_s"] / alone
    ratios["loop_vs_own_update"] = m.loop["updates_per_s"] / clean_alone


def report(args, m: Measured, machine_facts: dict) -> dict:
    """Prints the tables; returns the ratios and the equal-work rows (None when not measured)."""
    print()
    title = (
        f"Peers on Breakout (batch {args.batch_size}, capacity {args.replay_capacity:,}, "
        f"learning from {args.learning_starts:,})"
    )
    print(table(HEADERS, system_rows(args, m), title=title))
    print_memory_notes(m)
    ratios: dict = {}
    tgt = target_rows(m, ratios)
    print_update_cost(m, ratios)
    print()
    rllib_is = "measured in this run" if m.py else "= the recorded figures of docs/peers.md"
    print(table(["target", "ratio", "target", "verdict"], tgt, title=f"Targets (RLlib {rllib_is})"))
    equal_rows = equal_work_report(args, m, ratios, machine_facts) if m.equal else None
    if args.profile and "py_spy" in m.ray8:
        for name, title in (
            ("driver", "raydqn learner driver's _loop, py-spy"),
            ("replay", "raydqn replay, py-spy (idle included)"),
            ("actor", "raydqn actor-0's stepping thread, py-spy"),
        ):
            print()
            print_spy(title, m.ray8["py_spy"].get(name, {}))
    print(f"load average at the end: {loadavg()}")
    return {"ratios": ratios, "equal_rows": equal_rows}


def result_json(args, m: Measured, machine_facts: dict, ratios: dict, equal_rows) -> dict:
    """The final JSON line: every figure measured, the ratios, the targets and which were met."""
    equal_work = {
        "raydqn": m.eq,
        "flags": {"nature_adam": NATURE_ADAM, "nature_rmsprop": NATURE_RMSPROP, "rllib_settings": RLLIB_SETTINGS},
        "update_alone_raydqn": m.eq_alone,
        "update_alone_cleanrl": m.eq_clean,
        "rows": equal_rows,
    }
    settings = (
        "batch_size",
        "replay_ratio",
        "replay_capacity",
        "learning_starts",
        "num_actors",
        "envs_per_actor",
        "threads",
    )
    return {
        "benchmark": "peers",
        "machine": machine_facts,
        "settings": {k: getattr(args, k) for k in settings},
        "single_process_loop": m.loop,
        "raydqn": m.ray8,
        "raydqn_free_running": m.free,
        "rllib": m.rllib,
        "standalone_before": m.alone[0],
        "standalone_after": m.alone[1],
        "standalone_updates_per_s": m.alone_rate,
        "cleanrl_update_before": m.clean[0],
        "cleanrl_update_after": m.clean[1],
        "cleanrl_update_per_s": m.clean_rate,
        "equal_work": equal_work if m.equal else None,
        "ratios": ratios,
        "targets": TARGETS,
        "met": {
            k: (v <= TARGETS[k] if k.startswith("memory") else v >= TARGETS[k])
            for k, v in ratios.items()
            if k in TARGETS
        },
    }


# --------------------------------------------------------------------------- equal work


def _cpu_text(r: dict) -> str:
    """raydqn: learner (driver) / actors / replay cores in the window; the loop: its one process."""
    c = r.get("cpu_cores")
    if isinstance(c, dict):
        return f"{c['learner (driver)']:.2f}/{c['actors']:.2f}/{c['replay']:.2f}"
    return f"{c:.2f}" if c is not None else "-"


def equal_work_pairs(m: Measured) -> list[tuple]:
    """(key, settings, peer's figures, peer's name, raydqn's name, ratio key) of each pair measured."""
    pairs = [
        (
            "adam",
            "Adam, fp32 (CleanRL's algorithm)",
            m.loop,
            "single-process loop, Adam",
            "raydqn " + " ".join(map(str, NATURE_ADAM)),
            "equal_work_adam_vs_loop",
        )
    ]
    if "rmsprop" in m.eq:
        pairs.append(
            (
                "rmsprop",
                "centred RMSProp, fp32 (--preset nature)",
                m.eq["rmsprop"]["loop"],
                "single-process loop, same RMSProp",
                "raydqn " + " ".join(map(str, NATURE_RMSPROP)),
                "equal_work_rmsprop_vs_loop",
            )
        )
    rllib_name = "RLlib 2.60 DQN " + ("(measured)" if m.py else "(RECORDED, docs/peers.md, not measured)")
    pairs.append(
        (
            "rllib_settings",
            "RLlib's: double, no dueling, n=1, Adam",
            m.rllib,
            rllib_name,
            "raydqn " + " ".join(map(str, RLLIB_SETTINGS)) + " (precision auto)",
            "rllib_settings_vs_rllib",
        )
    )
    return pairs


def equal_pair_rows(m: Measured, ratios: dict) -> tuple[list, list]:
    """Two rows a pair (the peer, then raydqn with the ratio) and a target row a pair."""
    rows, tgt = [], []
    for key, settings, peer, peer_name, ours_name, ratio_key in equal_work_pairs(m):
        ours, target = m.eq[key], TARGETS[ratio_key]
        ratio = ratios[ratio_key] = ours["trained_samples_per_s"] / peer["trained_samples_per_s"]
        figures = ("agent_steps_per_s", "updates_per_s", "trained_samples_per_s")
        rows.append(
            [settings, peer_name, *(peer[k] for k in figures), _cpu_text(peer), peer.get("foreign_cores"), None, ""]
        )
        rows.append(
            ["", ours_name, *(ours[k] for k in figures), _cpu_text(ours), ours["foreign_cores"], ratio]
            + [f">= {target:g} {verdict(ratio, target)}"]
        )
        tgt.append(
            [
                f"equal work, {settings}: raydqn / peer trained samples/s",
                ratio,
                f">= {target:g}",
                verdict(ratio, target),
            ]
        )
    return rows, tgt


def _mean(runs: list, key: str) -> float:
    return sum(r[key] for r in runs) / len(runs)


def update_alone_rows(args, m: Measured, ratios: dict) -> list:
    """The Adam pair's update alone, CleanRL's then raydqn's, with their ratio (the update's cost)."""
    a, c = _mean(m.eq_alone, "updates_per_s"), _mean(m.eq_clean, "updates_per_s")
    ratios["equal_work_update_alone_vs_cleanrl"] = a / c
    ratios["equal_work_adam_vs_own_update"] = m.eq["adam"]["updates_per_s"] / a
    cpu_c, cpu_a = _mean(m.eq_clean, "cpu_per_wall"), _mean(m.eq_alone, "cpu_per_wall")
    return [
        [
            f"the Adam pair's update alone, {args.threads} thread(s)",
            "CleanRL's update",
            None,
            c,
            c * args.batch_size,
            f"{cpu_c:.2f}",
            _mean(m.eq_clean, "foreign_cores"),
            None,
            "",
        ],
        [
            "",
            "raydqn's DQNLearner.update, same settings",
            None,
            a,
            a * args.batch_size,
            f"{cpu_a:.2f}",
            _mean(m.eq_alone, "foreign_cores"),
            a / c,
            "(update cost)",
        ],
    ]


EQUAL_HEADERS = [
    "settings",
    "system",
    "agent steps/s",
    "updates/s",
    "trained samples/s",
    "CPU cores",
    "foreign CPU",
    "ratio",
    "target",
]


def equal_work_report(args, m: Measured, ratios: dict, machine_facts: dict) -> list:
    """Prints the equal-work table (issue 14) and its targets; adds the ratios to ``ratios``."""
    rows, tgt = equal_pair_rows(m, ratios)
    rows += update_alone_rows(args, m, ratios)
    a, c = _mean(m.eq_alone, "updates_per_s"), _mean(m.eq_clean, "updates_per_s")
    per_update = args.batch_size / max(args.replay_ratio, 1e-9)
    print()
    title = (
        f"Equal work per update (Breakout, batch {args.batch_size}, replay ratio {args.replay_ratio:g} = one update per "
        f"{per_update:g} agent steps, capacity {args.replay_capacity:,}, learning from {args.learning_starts:,}; "
        f"raydqn {args.num_actors} actors x {args.envs_per_actor} env, {args.threads} learner thread(s))"
    )
    print(table(EQUAL_HEADERS, rows, title=title))
    print(
        "CPU cores: raydqn learner (driver)/actors/replay over the window; the loop its one process; the updates alone "
        "their own. 'foreign CPU': cores other work on this shared machine used meanwhile. ratio: raydqn's trained "
        f"samples/s over the peer's in the row above. Machine: {machine_facts['cores']} cores, {machine_facts['cpu']}; "
        f"load average now {loadavg()}."
    )
    print(
        f"raydqn nature/Adam in the system does {ratios['equal_work_adam_vs_own_update']:.2f}x its update alone "
        f"({a:.1f}/s at {args.threads} thread(s)); the loop does {m.loop['updates_per_s'] / c:.2f}x CleanRL's update alone "
        f"at {args.threads} thread(s) (the loop itself runs torch's default {m.loop.get('torch_threads')} threads)."
    )
    print()
    print(table(["target", "ratio", "target", "verdict"], tgt, title="Equal-work targets (issue 14)"))
    return rows


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

    m = Measured(out_dir, loop_threads=torch.get_num_threads(), equal=not args.skip_equal_work)
    measure(args, m)
    reported = report(args, m, machine_facts)
    final_json(result_json(args, m, machine_facts, reported["ratios"], reported["equal_rows"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
