"""The actor core without Ray, measured in this process: what ``benchmarks.actors`` compares its fleets with.

The bare emulator stepped with random actions (the baseline every efficiency is a share
of), and ``actors.remote.build_actor_core`` stepped and encoded as an actor shell does: its
agent steps/s, the acting network's share of the loop (timed around each forward pass),
what a weight publish costs the loop (``set_weights``, timed; int8-static's conversion on
its thread), and the memory the core holds. With ``profile`` a stack sampler charges the
loop's time to modules (``benchmarks.profiling.CORE_CATEGORIES``).
"""

from __future__ import annotations

import contextlib
import time

import numpy as np

from benchmarks.machine import ForeignLoad
from benchmarks.profiling import CORE_CATEGORIES, ThreadSampler, stack_shares


def emulator_rate(env_id: str, num_envs: int, seconds: float, seed: int) -> dict:
    """Agent steps/s of one process stepping the env with random actions (no network)."""
    from common.envs import make_vector_env

    env = make_vector_env(env_id, num_envs, seed)
    env.reset()
    rng = np.random.default_rng(seed)
    for _ in range(20):
        env.step(rng.integers(0, env.num_actions, num_envs))
    steps = 0
    foreign = ForeignLoad()
    t0, c0 = time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < seconds:
        for _ in range(10):
            env.step(rng.integers(0, env.num_actions, num_envs))
        steps += 10 * num_envs
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    env.close()
    return {
        "agent_steps_per_s": steps / wall,
        "agent_steps_per_cpu_s": steps / cpu,
        "cpu_per_wall": cpu / wall,
        "foreign_cores": foreign.cores(cpu),
    }


def actor_config(env_id: str, num_envs: int, num_actors: int, seed: int, precision: str = "auto"):
    from common.config import ActorConfig, Config, EnvConfig, RunConfig, resolve

    cfg = Config(
        env=EnvConfig(env_id=env_id, envs_per_actor=num_envs),
        actors=ActorConfig(num_actors=num_actors, actor_precision=precision),
        run=RunConfig(seed=seed),
    )
    return resolve(cfg, atari=env_id.startswith("ALE/"), cuda=False)


class _TimedForward:
    """Wraps an ActingNetwork's ``q_values`` and adds up the wall time spent in it."""

    def __init__(self, q_values):
        self.q_values, self.seconds = q_values, 0.0

    def __call__(self, stacks):
        t = time.perf_counter()
        try:
            return self.q_values(stacks)
        finally:
            self.seconds += time.perf_counter() - t


def publish_cost(core, repeats: int = 20) -> dict:
    """Milliseconds ``core.set_weights`` takes for a publish (read-only numpy arrays, as
    they arrive from the object store): the load into the fp32 master plus the conversion.
    int8-static converts on a thread instead: its stall is the load plus what the forward
    pass that begins the conversion takes beyond a plain one; ``conversion_ms`` is the
    thread's work, timed on it."""
    weights = {k: v.detach().numpy().copy() for k, v in core.network.state_dict().items()}
    for v in weights.values():
        v.flags.writeable = False
    static = core.acting.static
    stacks = core.stacker.stacks
    plain = float(np.median([_timed(core.acting.q_values, stacks) for _ in range(repeats)])) if static else 0.0
    times, conversions = [], []
    for v in range(repeats):
        t = _timed(core.set_weights, weights, core.policy_version + 1)
        if static is not None:
            static.calls = static.every  # due now, not after CONVERT_EVERY passes
            t += max(0.0, _timed(core.acting.q_values, stacks) - plain)
            static.wait()
            conversions.append(static.conversion_ms[-1])
        times.append(t)
    ms = np.array(times) * 1e3
    out = {"median_ms": float(np.median(ms)), "max_ms": float(ms.max())}
    if conversions:
        out["conversion_median_ms"], out["conversion_max_ms"] = float(np.median(conversions)), float(max(conversions))
    return out


def _timed(fn, *args) -> float:
    t = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t


def publish_text(p: dict) -> str:
    text = f"{p['median_ms']:.1f} ms (max {p['max_ms']:.1f})"
    if "conversion_median_ms" in p:
        text += f" in the loop + {p['conversion_median_ms']:.1f} ms converting on a thread (max {p['conversion_max_ms']:.1f})"
    return text


def actor_core_rate(
    env_id: str, num_envs: int, seconds: float, seed: int, profile: bool = False, precision: str = "auto"
) -> dict:
    """Agent steps/s of ``build_actor_core`` + message encoding in this process (no Ray),
    the forward pass's share of the loop, a publish's cost and the core's memory."""
    import torch

    from actors.remote import build_actor_core
    from benchmarks.machine import psutil
    from common.messages import encode_step_batch

    cfg = actor_config(env_id, num_envs, 1, seed, precision)
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.actors.actor_threads)
    rss0 = psutil.Process().memory_info().rss
    try:
        core = build_actor_core(cfg, 0)
        for _ in range(20):
            for b in core.step():
                encode_step_batch(b)
        publish = publish_cost(core)
        timed = core.acting.q_values = _TimedForward(core.acting.q_values)
        sampler = ThreadSampler() if profile else contextlib.nullcontext()
        steps0, nbytes = core.agent_steps, 0
        foreign = ForeignLoad()
        t0, c0 = time.perf_counter(), time.process_time()
        with sampler:
            while time.perf_counter() - t0 < seconds:
                for b in core.step():
                    nbytes += len(encode_step_batch(b))
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        steps = core.agent_steps - steps0
        out = {
            "agent_steps_per_s": steps / wall,
            "agent_steps_per_cpu_s": steps / cpu,
            "cpu_per_wall": cpu / wall,
            "message_bytes_per_step": nbytes / max(steps, 1),
            "foreign_cores": foreign.cores(cpu),
            "profiled": profile,
            "precision": core.acting.precision,
            "envs_per_actor": num_envs,
            "forward_share": timed.seconds / wall,
            "forward_ms_per_stack": 1e3 * timed.seconds / max(steps, 1),
            "publish": publish,
            "core_rss_mb": (psutil.Process().memory_info().rss - rss0) / 2**20,
        }
        if profile:
            out["profile"] = stack_shares(sampler.stacks, None, CORE_CATEGORIES)[0]
        core.env.close()
        return out
    finally:
        torch.set_num_threads(threads)
