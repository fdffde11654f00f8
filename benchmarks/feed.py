"""Feed benchmark: what one batch costs on its way to the learner, mirror feed against stacked.

A program, not a test: ``python -m benchmarks.feed`` (``--records 100000`` for a quick run).
The mirror feed (``learner/mirror.py``) exists because a stacked batch of 512 is ≈ 29 MB that
one replay shard must decompress and Ray must carry, while a GPU could train far more batches
than that allows. Two phases, both on a replay of real Breakout records (played by
``benchmarks.replay``'s actor, then reused), with ``--new-frames`` new records inserted per
batch (a learner at 400 batches/s fed 16K frames/s gets 40):

* in-process: the replay's CPU time per batch for ``sample`` (stacked) and ``sample_indices``
  (mirror), and the bytes of each answer as Ray pickles it;
* through Ray (``--ray-records``): the replay as a Ray actor, the driver calling the real
  ``Fleet.next_batch`` (prefetch 4) with the update replaced by a no-op that still gathers
  every stack and sends priorities back. It reports delivered batches/s, the replay's CPU per
  batch (its process time, inserts and priority updates included), the learner thread's own
  CPU per batch (taking the batch and handing its priorities back: with the mirror feed the
  rest runs on the feeder thread, ``learner/feeder.py``), and the feeder thread's CPU per
  batch outside the mirror's gather: the Ray calls (sample with priorities), deserialisation,
  and the mirror's apply and checks.
"""

from __future__ import annotations

import argparse
import os
import pickle
import time

import numpy as np

from benchmarks.cli import POSITIVE_INT, SEED, at_least, parser
from benchmarks.machine import describe_machine, loadavg, machine
from benchmarks.replay import GAMMA, N_STEP, STACK, collect, cycled_messages
from benchmarks.report import final_json, table, verdict
from replay_server.mirror_protocol import PositionKeeper
from replay_server.remote import ReplayServer

TARGET_BYTES, TARGET_REPLAY_MS, TARGET_DRIVER_MS = 100_000, 1.0, 1.0


def fill(server, messages, records: int) -> None:
    add = server.add if isinstance(server, ReplayServer) else (lambda m: server.add.remote(m))
    refs, added = [], 0
    while added < records:
        n, data = next(messages)
        refs.append(add(data))
        added += n
    if not isinstance(server, ReplayServer):
        import ray

        ray.get(refs)


def in_process(args, messages) -> dict:
    """Replay CPU per batch and bytes per answer, stacked and mirror, without Ray."""
    server = ReplayServer(
        capacity=args.records,
        stack_size=STACK,
        n_step=N_STEP,
        gamma=GAMMA,
        seed=args.seed,
        samples_per_insert=None,
        min_size=args.batch_size,
    )
    fill(server, messages, args.records)
    rng = np.random.default_rng(args.seed)
    ids = server.buffer.sampleable_ids()
    server.update_priorities(ids, rng.gamma(1.0, 1.0, ids.size))  # a skewed tree, as in a run
    news = [next(messages) for _ in range(4 * args.batches)]
    mirror = PositionKeeper(server.sample_indices)  # each request carries the position the answers reached
    while not mirror(args.batch_size).has_batch:  # the full sync, not timed
        pass
    out = {}
    for path, call in (("stacked", server.sample), ("mirror", mirror)):
        seconds, nbytes, pending, k = 0.0, [], 0.0, 0
        for _ in range(args.batches):
            pending += args.new_frames
            while pending > 0:  # inserts between answers, untimed
                n, data = news[k % len(news)]
                server.add(data)
                pending -= n
                k += 1
            t0 = time.process_time()
            answer = call(args.batch_size, 0.4)
            seconds += time.process_time() - t0
            nbytes.append(len(pickle.dumps(answer, protocol=5)))
        out[path] = {"replay_cpu_ms": 1e3 * seconds / args.batches, "bytes": float(np.mean(nbytes))}
    return out


def through_ray(args, messages, feed: str) -> dict:
    """The real Fleet.next_batch against one replay actor, with a no-op update."""
    import ray

    fleet, actor, device, gather_s = _ray_fleet(args, messages, feed)
    got = 0
    while got < 2 * fleet.cfg.learner.prefetch + 8:  # the full sync and warm-up
        got += fleet.next_batch(args.batch_size, 0.4) is not None
    try:
        return _measure_through_ray(args, messages, fleet, actor, device, gather_s)
    finally:
        fleet.close_feeder()
        ray.kill(actor)


def _ray_fleet(args, messages, feed: str):
    """A Fleet over one filled replay actor (whose CPU time it can read) and, for the
    mirror, a mirror that times its gathers: (fleet, actor, device, [gather seconds])."""
    import ray
    import torch

    from common.config import Config, LearnerConfig, ReplayConfig, RunConfig, resolve
    from learner.fleet import Fleet
    from learner.mirror import FrameMirror
    from learner.shards import shard_settings
    from learner.trainer import pick_device

    class TimedServer(ReplayServer):
        def cpu_seconds(self) -> float:
            return time.process_time()

    replay = ReplayConfig(
        replay_capacity=args.ray_records, learning_starts=args.batch_size, n_step=N_STEP, replay_ratio=0.0
    )
    learner = LearnerConfig(batch_size=args.batch_size, feed=feed, device=args.device, gamma=GAMMA)
    device = pick_device(args.device)
    cfg = resolve(Config(replay=replay, learner=learner, run=RunConfig(seed=args.seed)), True, device.type == "cuda")
    fleet = Fleet(cfg, None, "/tmp")
    actor = ray.remote(TimedServer).options(num_cpus=1).remote(**shard_settings(cfg, STACK))
    fill(actor, messages, args.ray_records)
    fleet.replays, fleet.shard_sizes = [actor], np.ones(1)
    gather_s = [0.0]

    class TimedMirror(FrameMirror):
        def gather(self, batch):
            t0 = time.thread_time()
            out = super().gather(batch)
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            gather_s[0] += time.thread_time() - t0
            return out

    fleet.mirrors[0] = TimedMirror(args.ray_records, device)
    return fleet, actor, device, gather_s


def _measure_through_ray(args, messages, fleet, actor, device, gather_s) -> dict:
    """``args.batches`` batches through the fleet while new frames arrive at the benchmark's
    rate, priorities sent back after each as the trainer does; the cost on each side."""
    import ray
    import torch

    news = [next(messages) for _ in range(64)]
    priorities = np.random.default_rng(args.seed).gamma(1.0, 1.0, args.batch_size).astype(np.float32)
    cpu0, pending, k, delivered = ray.get(actor.cpu_seconds.remote()), 0.0, 0, 0
    driver_s, gather_s[0] = 0.0, 0.0
    feeder0 = fleet.feeder.cpu_s if fleet.feeder is not None else 0.0
    t_start = time.perf_counter()
    while delivered < args.batches:
        pending += args.new_frames
        while pending > 0:
            n, data = news[k % len(news)]
            actor.add.remote(data)
            pending -= n
            k += 1
        t0 = time.thread_time()
        got = fleet.next_batch(args.batch_size, 0.4)
        if got is not None:
            shard, batch = got
            obs = batch.obs if isinstance(batch.obs, torch.Tensor) else torch.from_numpy(np.asarray(batch.obs))
            if device.type == "cuda" and obs.device.type != "cuda":
                obs.to(device)  # what the learner's _to_device does with a stacked batch
            fleet.update_priorities(shard, batch.ids, priorities)  # as the trainer does after each update
            delivered += 1
        driver_s += time.thread_time() - t0
    wall = time.perf_counter() - t_start
    cpu = ray.get(actor.cpu_seconds.remote()) - cpu0
    gather, feeder = gather_s[0], fleet.feeder
    if feeder is None:  # stacked: everything on the learner's thread
        learner_ms, feeder_ms = 1e3 * (driver_s - gather) / delivered, 0.0
    else:  # the gather ran on the feeder's thread
        learner_ms, feeder_ms = 1e3 * driver_s / delivered, 1e3 * (feeder.cpu_s - feeder0 - gather) / delivered
    return {
        "batches_per_s": delivered / wall,
        "replay_cpu_ms": 1e3 * cpu / delivered,
        "driver_ms": learner_ms,
        "feeder_ms": feeder_ms,
        "gather_ms": 1e3 * gather / delivered,
    }


def parse(argv):
    p = parser(__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--records", type=at_least(int, 1024), default=1_000_000, help="records in the in-process replay")
    p.add_argument(
        "--ray-records",
        type=at_least(int, 1024),
        default=100_000,
        help="records in the Ray phase's replay (its CPU mirror holds them uncompressed: 7 KB each)",
    )
    p.add_argument("--batch-size", type=POSITIVE_INT, default=512)
    p.add_argument("--batches", type=POSITIVE_INT, default=200, help="batches timed per path and phase")
    p.add_argument("--new-frames", type=at_least(float, 0.0), default=40.0, help="records inserted per batch")
    p.add_argument("--real-frames", type=POSITIVE_INT, default=20_000, help="records played from Breakout, then reused")
    p.add_argument("--device", default="auto", help="the mirror's device in the Ray phase (auto: cuda when available)")
    p.add_argument("--skip-ray", action="store_true", help="only the in-process phase")
    p.add_argument("--seed", type=SEED, default=0)
    return p.parse_args(argv)


def report_in_process(args, local: dict) -> None:
    rows = [[path, args.records, f"{v['replay_cpu_ms']:.2f}", f"{v['bytes'] / 1e3:,.1f}"] for path, v in local.items()]
    print(table(["path", "records", "replay CPU ms/batch", "KB/answer"], rows, "in-process, one replay shard"))
    m = local["mirror"]
    print(
        f"mirror: replay CPU {m['replay_cpu_ms']:.2f} ms/batch [target <= {TARGET_REPLAY_MS} ms: "
        f"{verdict(m['replay_cpu_ms'], TARGET_REPLAY_MS, higher_is_better=False)}]; {m['bytes'] / 1e3:.1f} KB/answer "
        f"[target <= {TARGET_BYTES / 1e3:.0f} KB: {verdict(m['bytes'], TARGET_BYTES, higher_is_better=False)}]",
        flush=True,
    )


def start_ray() -> None:
    """A fresh local Ray instance: ``address="local"``, never one left running on this
    machine (plain ``ray.init()`` joins the last one started here, a system run's say)."""
    import ray

    os.environ.setdefault("RAY_worker_niceness", "0")
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")


def report_ray(args, remote: dict) -> None:
    heads = ["feed", "records", "batches/s", "replay CPU ms/batch", "learner thread ms/batch"]
    heads += ["feeder thread ms/batch", "gather ms/batch"]
    keys = ("batches_per_s", "replay_cpu_ms", "driver_ms", "feeder_ms", "gather_ms")
    rows = [
        [feed, args.ray_records] + [f"{v[k]:.{1 if k == 'batches_per_s' else 2}f}" for k in keys]
        for feed, v in remote.items()
    ]
    print(table(heads, rows, "through Ray, Fleet.next_batch, prefetch 4, no-op update"))
    if "mirror" not in remote:
        return
    d, f = remote["mirror"]["driver_ms"], remote["mirror"]["feeder_ms"]
    print(
        f"mirror: the learner thread's own {d:.2f} ms/batch [target <= {TARGET_DRIVER_MS} ms: "
        f"{verdict(d, TARGET_DRIVER_MS, higher_is_better=False)}]; the feeder thread beside it "
        f"{f:.2f} ms/batch outside the gather (it can feed {1e3 / max(f, 1e-9):,.0f} batches/s "
        "with its gather on a GPU)"
    )


def main(argv=None) -> None:
    """Prints a JSON line of what is measured so far after each phase (``"partial": true``)
    and the whole as the last line, so a caller that must stop it early keeps the rest."""
    args = parse(argv)
    print(
        f"feed bench: Breakout, batch {args.batch_size}, {args.new_frames:g} new records per batch; "
        f"{describe_machine(machine())}",
        flush=True,
    )
    batches, real, _ = collect("Breakout", args.real_frames, 8, args.seed)
    messages = cycled_messages(batches, 8)
    result = {"in_process": None, "load_before": loadavg()}
    result["in_process"] = in_process(args, messages)
    report_in_process(args, result["in_process"])
    if not args.skip_ray:
        final_json({**result, "partial": True})
        import ray

        start_ray()
        result["ray"] = {}
        for feed in ("stacked", "mirror"):
            result["ray"][feed] = through_ray(args, messages, feed)
            if feed == "stacked":
                final_json({**result, "partial": True})
        ray.shutdown()
        report_ray(args, result["ray"])
    result["load_after"] = loadavg()
    final_json(result)


if __name__ == "__main__":
    main()
