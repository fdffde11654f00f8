"""What the distributional heads cost on this CPU: learner updates/s and the actors' forward pass.

    python -m benchmarks.heads_cost              # a few minutes
    python -m benchmarks.heads_cost --quick      # smoke check, seconds: every head once, figures meaningless

(a) The learner: ``DQNLearner.update`` at each batch size for each head (expected, c51, qr,
iqn, and iqn with Munchausen), each built by ``learner.dqn.build_learner`` from the default
(apex) preset resolved for Atari on this CPU with only the head changed (so the precision,
optimizer, dueling and double-Q are the same for all; the precision that resolved is
printed), on the Nature CNN with Atari-shaped batches (``uint8[B, 4, 84, 84]``, random but
fixed by ``--seed``, the full action set of 18 by default: the largest head). The heads
take turns in rounds (expected, c51, ..., then the reverse order in the next round), each
for ``--seconds``, so a change in the machine's load hits all alike; a head's slowdown is
expected's updates/s over its own in the same round, and the median over rounds is set
against the issue's targets (C51 and QR within 1.3x of expected, IQN within 2x).

(b) The actors: one ε-greedy forward pass (``ActingNetwork.outputs``, what an actor calls
each step, noise drawn anew for a noisy head) on a batch of ``--act-batch`` stacks with
``--actor-precision auto`` made concrete for this CPU (int8-static only covers the Nature
CNN's expected, non-noisy head: the others fall back, and the table says to what), with
``--actor-threads`` torch threads as an actor has, for each head and each torso (nature,
impala x1, impala x2); per stack, and against the expected head on the Nature CNN in the
same round. The machine is shared: the foreign load of each phase (cores busy outside this
process, ``benchmarks.machine.ForeignLoad``) is printed beside the figures.
"""

from __future__ import annotations

import statistics
import sys
import time

import numpy as np

from benchmarks.cli import POSITIVE_INT, SECONDS, SEED, parser
from benchmarks.machine import ForeignLoad, describe_machine, loadavg, machine
from benchmarks.report import final_json, table, verdict

#: The learner's heads: the LearnerConfig values each sets on the apex preset.
LEARNER_HEADS = {
    "expected": {},
    "c51": {"head": "c51"},
    "qr": {"head": "qr"},
    "iqn": {"head": "iqn"},
    "iqn+munchausen": {"head": "iqn", "munchausen": True},
}
#: The issue's targets: at most this many times slower than the expected head.
TARGETS = {"c51": 1.3, "qr": 1.3, "iqn": 2.0}
#: The acting heads (Munchausen changes only the loss) and Rainbow's noisy C51.
ACT_HEADS = {
    "expected": {},
    "c51": {"head": "c51"},
    "qr": {"head": "qr"},
    "iqn": {"head": "iqn"},
    "c51+noisy": {"head": "c51", "noisy": True},
}
TORSOS = {
    "nature": {"torso": "nature"},
    "impala x1": {"torso": "impala", "torso_width": 1},
    "impala x2": {"torso": "impala", "torso_width": 2},
}
BASELINE = ("nature", "expected")


def atari_spec(num_actions: int):
    from common.env_spec import EnvSpec

    return EnvSpec("ALE/Breakout-v5", (84, 84), "uint8", 4, num_actions, 4, "lz4", True, True)


def resolved(batch_size: int | None, settings: dict):
    """The apex preset resolved for Atari on a CPU, with ``settings`` (and the batch) set."""
    from common.config import Config, LearnerConfig, resolve

    return resolve(Config(learner=LearnerConfig(batch_size=batch_size, **settings)), atari=True, cuda=False)


def interleaved(slots: dict, rounds: int) -> tuple[list[dict], list[float]]:
    """Runs each ``slots[name]()`` (returns a rate, higher is faster) once per round, in the
    given order in even rounds and reversed in odd ones; per round {name: rate}, and the
    foreign load (cores) of each round."""
    per_round, foreign = [], []
    names = list(slots)
    for r in range(rounds):
        probe, c0 = ForeignLoad(), time.process_time()
        rates = {}
        for name in names if r % 2 == 0 else names[::-1]:
            rates[name] = slots[name]()
        per_round.append(rates)
        foreign.append(probe.cores(time.process_time() - c0))
    return per_round, foreign


def relative(per_round: list[dict], base: str) -> dict[str, dict]:
    """{name: {"rate": median rate, "slowdown": median over rounds of base's rate / its rate}}."""
    out = {}
    for name in per_round[0]:
        rates = [r[name] for r in per_round]
        slow = [r[base] / r[name] if r[name] > 0 else float("inf") for r in per_round]
        out[name] = {"rate": statistics.median(rates), "slowdown": statistics.median(slow), "rounds": rates}
    return out


def update_slot(learner, pool: list, seconds: float, min_updates: int):
    """A slot of the learner's round: updates/s over at least ``seconds`` and ``min_updates``."""

    def run() -> float:
        n, t0 = 0, time.perf_counter()
        while n < min_updates or time.perf_counter() - t0 < seconds:
            learner.update(pool[n % len(pool)])
            n += 1
        learner.flush()
        return n / (time.perf_counter() - t0)

    return run


def measure_learner(args, batch_size: int) -> tuple[dict, list[float], dict]:
    """Each head's updates/s at ``batch_size``, interleaved; (results, foreign load, precisions)."""
    import torch

    from benchmarks.learner import random_sample_batches
    from learner.dqn import build_learner

    spec, slots, precisions = atari_spec(args.num_actions), {}, {}
    pool = random_sample_batches(batch_size, args.num_actions, args.seed, count=4)
    for name, settings in LEARNER_HEADS.items():
        torch.manual_seed(args.seed)
        learner = build_learner(resolved(batch_size, settings), spec, "cpu")
        precisions[name] = learner.precision
        for i in range(args.warmup):
            learner.update(pool[i % len(pool)])
        slots[name] = update_slot(learner, pool, args.seconds, args.min_updates)
    per_round, foreign = interleaved(slots, args.rounds)
    return relative(per_round, "expected"), foreign, precisions


def acting_network(torso: dict, head: dict, num_actions: int, seed: int):
    """The actors' acting network for this torso and head, in ``--actor-precision auto``."""
    import torch

    from actors.acting import ActingNetwork, resolve_precision
    from common.networks import q_network_for

    torch.manual_seed(seed)
    net = q_network_for(atari_spec(num_actions), resolved(None, {**torso, **head}).learner)
    return ActingNetwork(net, resolve_precision("auto")[0], background=False)


def forward_slot(acting, stacks: np.ndarray, seconds: float, min_passes: int):
    """A slot of the acting round: stacks per second over at least ``seconds`` and ``min_passes``."""

    def run() -> float:
        n, t0 = 0, time.perf_counter()
        while n < min_passes or time.perf_counter() - t0 < seconds:
            acting.outputs(stacks)
            n += 1
        return n * len(stacks) / (time.perf_counter() - t0)

    return run


def measure_acting(args) -> tuple[dict, list[float], dict]:
    """Each (torso, head)'s forward pass per stack, interleaved; (results, foreign load, precisions)."""
    rng = np.random.default_rng(args.seed)
    stacks = rng.integers(0, 256, (args.act_batch, 4, 84, 84), dtype=np.uint8)
    slots, precisions = {}, {}
    for torso_name, torso in TORSOS.items():
        for head_name, head in ACT_HEADS.items():
            acting = acting_network(torso, head, args.num_actions, args.seed)
            for _ in range(args.warmup):
                acting.outputs(stacks)  # int8-static: the first pass converts (inline here)
            key = (torso_name, head_name)
            precisions[key] = acting.precision + (" (fallback)" if acting.fallback else "")
            slots[key] = forward_slot(acting, stacks, args.seconds / 2, args.min_updates)
    per_round, foreign = interleaved(slots, args.rounds)
    return relative(per_round, BASELINE), foreign, precisions


def learner_table(results: dict[int, dict], precisions: dict, args) -> str:
    rows = []
    for b, res in results.items():
        for name, r in res.items():
            target = TARGETS.get(name)
            met = verdict(r["slowdown"], target, higher_is_better=False) if target else "-"
            rows.append([name, b, precisions[name], r["rate"], f"{r['slowdown']:.2f}x", target, met])
    title = (
        f"(a) learner updates/s on this CPU: Nature CNN, {args.num_actions} actions, {args.threads} threads, "
        f"{args.rounds} interleaved rounds of {args.seconds:g} s a head (slower: expected's rate / the head's)"
    )
    return table(["head", "batch", "precision", "updates/s", "slower", "target", "verdict"], rows, title=title)


def acting_table(results: dict, precisions: dict, args) -> str:
    rows = [
        [torso, head, precisions[(torso, head)], 1e3 / r["rate"], f"{r['slowdown']:.2f}x"]
        for (torso, head), r in results.items()
    ]
    title = (
        f"(b) actors' forward pass per stack: batch {args.act_batch}, {args.actor_threads} thread(s), "
        f"--actor-precision auto (slower: against the expected head on the Nature CNN)"
    )
    return table(["torso", "head", "precision", "ms/stack", "slower"], rows, title=title)


def foreign_text(foreign: list[float]) -> str:
    return f"foreign load over the rounds: mean {statistics.mean(foreign):.2f}, max {max(foreign):.2f} cores"


def parse_args(argv):
    import os

    p = parser(__doc__.splitlines()[0], prog="python -m benchmarks.heads_cost")
    p.add_argument("--batch-sizes", type=POSITIVE_INT, nargs="+", default=[32, 64], help="learner batch sizes")
    p.add_argument("--rounds", type=POSITIVE_INT, default=5, help="interleaved rounds")
    p.add_argument("--seconds", type=SECONDS, default=4.0, help="seconds of updates per head per round")
    p.add_argument("--min-updates", type=POSITIVE_INT, default=3, help="updates (forward passes) per slot at least")
    p.add_argument("--warmup", type=POSITIVE_INT, default=3, help="untimed updates (passes) per network first")
    p.add_argument("--threads", type=POSITIVE_INT, default=len(os.sched_getaffinity(0)), help="learner's threads")
    p.add_argument("--actor-threads", type=POSITIVE_INT, default=1, help="torch threads of the acting pass")
    p.add_argument("--act-batch", type=POSITIVE_INT, default=32, help="stacks per acting forward pass")
    p.add_argument("--num-actions", type=POSITIVE_INT, default=18, help="actions of the network")
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--quick", action="store_true", help="one pass of everything on tiny batches: checks it runs")
    args = p.parse_args(argv)
    if args.quick:
        quick = {"batch_sizes": [8], "act_batch": 2, "rounds": 1, "seconds": 0.0, "min_updates": 1, "warmup": 1}
        quick.update(threads=1, actor_threads=1)  # OpenMP's threads spin on a loaded machine
        vars(args).update(quick)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)  # before torch's import: --help and bad input answer at once
    import torch

    from common.memory import hold_freed_memory

    hold_freed_memory()  # as learner.main's process does
    m = machine()
    print(describe_machine(m), flush=True)
    torch.set_num_threads(args.threads)
    learner, foreign_l, prec_l = {}, [], {}
    for b in args.batch_sizes:
        learner[b], f, prec_l = measure_learner(args, b)
        foreign_l += f
    if args.quick:
        print("--quick: tiny batches, one pass each; the figures below say nothing about the heads' cost", flush=True)
    print(learner_table(learner, prec_l, args) + "\n" + foreign_text(foreign_l) + "\n", flush=True)
    torch.set_num_threads(args.actor_threads)
    acting, foreign_a, prec_a = measure_acting(args)
    print(acting_table(acting, prec_a, args) + "\n" + foreign_text(foreign_a), flush=True)
    final_json(
        {
            "machine": m,
            "load_after": loadavg(),
            "quick": args.quick,
            "learner": {str(b): r for b, r in learner.items()},
            "learner_precision": prec_l,
            "learner_foreign_cores": foreign_l,
            "acting": {f"{t}/{h}": r for (t, h), r in acting.items()},
            "acting_precision": {f"{t}/{h}": p for (t, h), p in prec_a.items()},
            "acting_foreign_cores": foreign_a,
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
