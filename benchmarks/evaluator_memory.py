"""Evaluator memory: does the evaluator's own memory level off over many evaluations?

    python -m benchmarks.evaluator_memory --evaluations 24

A 30-minute soak sees only two or three evaluations (one every 1M env frames on Atari), and
each one raises the evaluator's memory a step: too few to tell a warm-up from a leak. This
program runs the training's :class:`~learner.evaluator.Evaluator` as the same kind of Ray
actor the fleet starts, hands it a freshly published weights object each time, and records
its own memory (RSS minus shared pages, see ``benchmarks.soak``) after every evaluation; then
the plain class in this process, the same way. It prints both series and, for each, the
slope over the second half (MB per evaluation) and the growth from the middle to the end.
"""

from __future__ import annotations

import gc
import os

import numpy as np
import psutil

from benchmarks.cli import POSITIVE_INT, at_least, check_env, parser
from benchmarks.machine import describe_machine, loadavg, machine
from benchmarks.report import final_json, table


def own_mb(p: psutil.Process) -> float:
    m = p.memory_info()
    return (m.rss - m.shared) / 2**20


def series(evaluate, pid: int, n: int, fresh_weights) -> list[float]:
    """Own memory of process ``pid`` after each of ``n`` evaluations."""
    p, out = psutil.Process(pid), []
    for i in range(n):
        evaluate(fresh_weights(), i)
        out.append(own_mb(p))
        print(f"  evaluation {i + 1:3d}: own memory {out[-1]:7.1f} MB", flush=True)
    return out


def second_half(values: list[float]) -> dict:
    """Slope (MB per evaluation) over the second half and growth from its start to the end."""
    half = np.array(values[len(values) // 2 :])
    slope = float(np.polyfit(np.arange(half.size), half, 1)[0]) if half.size >= 2 else float("nan")
    return {
        "first": values[0],
        "max": max(values),
        "last": values[-1],
        "slope_mb_per_eval": slope,
        "growth_second_half_mb": float(half[-1] - half[0]),
    }


def as_ray_actor(cfg, n: int, weights) -> list[float]:
    """The evaluator as the fleet starts it (a Ray actor of one CPU): its own memory after each evaluation."""
    import ray

    from learner.evaluator import Evaluator

    os.environ.setdefault("RAY_worker_niceness", "0")
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
    try:
        actor = ray.remote(num_cpus=1, enable_task_events=False)(Evaluator).remote(cfg.to_dict())
        pid = ray.get(actor.__ray_call__.remote(lambda self: os.getpid()))
        print("as a Ray actor (the fleet's kind):")
        return series(lambda w, i: ray.get(actor.evaluate.remote(ray.put(w), i, {}, i)), pid, n, weights)
    finally:
        ray.shutdown()


def in_process(cfg, n: int, weights) -> list[float]:
    """The plain class in this process: this process's own memory after each evaluation."""
    from learner.evaluator import Evaluator

    plain = Evaluator(cfg)
    print("the plain class, in this process:")
    return series(lambda w, i: (plain.evaluate(w, i, {}, i), gc.collect()), os.getpid(), n, weights)


def print_table(result: dict) -> None:
    rows = [
        [
            k,
            f"{v['first']:.1f}",
            f"{v['max']:.1f}",
            f"{v['last']:.1f}",
            f"{v['slope_mb_per_eval']:+.2f}",
            f"{v['growth_second_half_mb']:+.1f}",
        ]
        for k, v in result.items()
        if isinstance(v, dict) and "own_mb" in v
    ]
    print(table(["where", "first MB", "max MB", "last MB", "slope, 2nd half (MB/eval)", "growth, 2nd half (MB)"], rows))


def main(argv=None) -> int:
    ap = parser(__doc__.splitlines()[0])
    ap.add_argument("--env", default="ALE/Breakout-v5")
    ap.add_argument("--evaluations", type=at_least(int, 2), default=24)
    ap.add_argument("--episodes", type=POSITIVE_INT, default=10, help="games per evaluation (--eval-episodes)")
    ap.add_argument("--skip-ray", action="store_true", help="only the plain class in this process")
    args = ap.parse_args(argv)
    check_env(ap, "--env", args.env)

    import torch

    from common.config import Config, EnvConfig, EvalConfig, resolve
    from common.envs import describe_env, is_atari
    from common.networks import q_network_for

    torch.set_num_threads(1)
    print(f"evaluator memory: {args.env}, {args.episodes} games per evaluation; {describe_machine(machine())}")
    cfg = resolve(
        Config(env=EnvConfig(env_id=args.env), eval=EvalConfig(eval_episodes=args.episodes)),
        atari=is_atari(args.env),
        cuda=False,
    )
    net = q_network_for(describe_env(args.env), cfg.learner)

    def weights():  # a fresh object each time, as each publish is
        return {k: v.detach().numpy().copy() for k, v in net.state_dict().items()}

    result = {"env": args.env, "episodes": args.episodes, "load_before": loadavg()}
    if not args.skip_ray:
        values = as_ray_actor(cfg, args.evaluations, weights)
        result["ray_actor"] = {"own_mb": values, **second_half(values)}
    values = in_process(cfg, args.evaluations, weights)
    result["in_process"] = {"own_mb": values, **second_half(values)}
    print_table(result)
    result["load_after"] = loadavg()
    final_json(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
