"""How ``benchmarks.peers`` judges and prints what its phases measured.

The peers table (the single-process loop, raydqn at the peers' replay ratio and running
free, RLlib measured or recorded, each update alone), how memory was counted, the ratios
against the targets, the equal-work table (issue 14), and the final JSON line. The phases
fill a :class:`Measured`; nothing here measures anything, so the report can be driven by
fake figures (``tests/benchmarks/test_phases.py``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from benchmarks.machine import loadavg
from benchmarks.profiling import print_spy
from benchmarks.report import table, verdict

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


# --------------------------------------------------------------------------- what the phases measured


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
    flags: dict = dataclasses.field(default_factory=dict)  # pair -> the flags raydqn ran the pair with

    @property
    def alone_rate(self) -> float:
        return (self.alone[0]["updates_per_s"] + self.alone[1]["updates_per_s"]) / 2

    @property
    def clean_rate(self) -> float:
        return (self.clean[0]["updates_per_s"] + self.clean[1]["updates_per_s"]) / 2


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
        "flags": {"nature_" + k if k != "rllib_settings" else k: v for k, v in m.flags.items()},
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
            "raydqn " + " ".join(map(str, m.flags["adam"])),
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
                "raydqn " + " ".join(map(str, m.flags["rmsprop"])),
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
            "raydqn " + " ".join(map(str, m.flags["rllib_settings"])) + " (precision auto)",
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
