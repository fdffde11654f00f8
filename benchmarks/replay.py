"""Replay benchmark: memory, insert, sample, priority-update and snapshot figures at 1M.

A program, not a test: ``python -m benchmarks.replay`` (``--transitions 100000`` for a
quick run). Fills a replay with the actors' own encoded StepBatches of the real game,
reused cyclically, then times each operation against its target; each game runs in its
own process. The phases, and what "records" count: ``docs/benchmark-methods.md`` (replay).
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import functools
import gc
import io
import os
import pstats
import subprocess
import sys
import tempfile
import time

import numpy as np

from benchmarks.cli import POSITIVE_INT, SEED, at_least, check_env, parser
from common.messages import decode_step_batch, encode_step_batch
from replay_server.remote import ReplayServer

RAW_FRAME_BYTES = 84 * 84
N_STEP, GAMMA, STACK = 3, 0.99, 4


def rss_bytes() -> tuple[int, int]:
    """(VmRSS, VmHWM) of this process in bytes."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value, _unit = line.split()
                out[key] = int(value) * 1024
    return out["VmRSS:"], out["VmHWM:"]


def collect(game: str, real_frames: int, num_envs: int, seed: int):
    """StepBatches of ``real_frames`` records from the real game, in the order the actor made them."""
    import torch

    from actors.actor import ActorCore
    from common.envs import make_vector_env

    class StandIn(torch.nn.Module):
        """Q = 0 for every action: with eps = 1 every action is random anyway."""

        def __init__(self, num_actions):
            super().__init__()
            self.num_actions = num_actions

        def forward(self, x):
            return torch.zeros(x.shape[0], self.num_actions)

    env = make_vector_env(f"ALE/{game}-v5", num_envs, seed)
    core = ActorCore(
        env,
        StandIn(env.num_actions),
        lambda _steps: np.ones(num_envs),
        stream_ids=list(range(num_envs)),
        steps_per_batch=64,
        frames_per_step=4,
        clip_rewards=True,
        seed=seed,
    )
    batches, records = [], 0
    start = time.perf_counter()
    while records < real_frames:
        for b in core.step():
            batches.append(b)
            records += len(b)
    for b in core.flush():
        batches.append(b)
        records += len(b)
    seconds = time.perf_counter() - start
    env.close()
    return batches, records, seconds


def cycled_messages(templates, num_streams: int):
    """``(records, encoded message)`` forever: cycle c sends every template under stream id
    ``c * num_streams + id``, encoded as the actor shell encodes it."""
    cycle = 0
    while True:
        offset = cycle * num_streams
        for b in templates:
            yield len(b), encode_step_batch(dataclasses.replace(b, stream_id=b.stream_id + offset))
        cycle += 1


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def profiled(label: str, fn, enabled: bool, top: int = 14):
    if not enabled:
        return fn()
    prof = cProfile.Profile()
    result = prof.runcall(fn)
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(top)
    print(f"--- profile: {label} (by own time)")
    print("\n".join(line for line in out.getvalue().splitlines() if line.strip())[:6000])
    return result


def play(args, game: str, say):
    """The real game's StepBatches, and an endless stream of their encoded messages."""
    batches, real, secs = collect(game, args.real_frames, args.num_envs, args.seed)
    blob_bytes = sum(len(x) for b in batches for x in b.frame_blobs)
    say(
        f"real frames: {real} records from {args.num_envs} envs in {secs:.1f} s "
        f"({real / secs:.0f} records/s); lz4 {blob_bytes / real:.0f} B/frame, {RAW_FRAME_BYTES * real / blob_bytes:.1f}x"
    )
    return batches, cycled_messages(batches, args.num_envs)


def fill(args, game: str, say, messages) -> ReplayServer:
    """Memory and insert rate through ReplayServer.add, filling the replay to ``--transitions``."""
    cap = args.transitions
    gc.collect()
    rss0, _ = rss_bytes()
    server = ReplayServer(
        capacity=cap,
        stack_size=STACK,
        n_step=N_STEP,
        gamma=GAMMA,
        seed=args.seed,
        samples_per_insert=None,
        min_size=args.batch_size,
    )
    buf = server.buffer
    add_seconds = 0.0

    def fill_loop():
        nonlocal add_seconds
        while buf.records_added < cap:
            _, data = next(messages)
            t0 = time.perf_counter()
            ok = server.add(data)
            add_seconds += time.perf_counter() - t0
            assert ok

    profiled("fill (ReplayServer.add)", fill_loop, args.profile)
    gc.collect()
    rss1, hwm = rss_bytes()
    stored = len(buf)
    stored_blob = sum(len(x) for x in buf._blobs if x is not None)
    per_frame = (rss1 - rss0) / stored
    say(
        f"memory: {stored} records, {buf.num_sampleable} sampleable: RSS +{(rss1 - rss0) / 2**30:.3f} GiB "
        f"({per_frame:.0f} B/record, {RAW_FRAME_BYTES / per_frame:.1f}x less than {RAW_FRAME_BYTES} B raw); "
        f"frame bytes alone {stored_blob / stored:.0f} B/frame ({RAW_FRAME_BYTES * stored / stored_blob:.1f}x); "
        f"peak RSS of the process {hwm / 2**30:.2f} GiB"
        + (
            f" [target <= 1.0 GB at 1M: {verdict(rss1 - rss0 <= 1e9)}]"
            if game == "Breakout" and cap == 1_000_000
            else ""
        )
    )
    say(
        f"insert while filling (ReplayServer.add = decode + validate + add): {stored / add_seconds:,.0f} records/s "
        f"[target >= 100K/s: {verdict(stored / add_seconds >= 1e5)}]"
    )
    return server


def _rate(n: int, fn, *args) -> float:
    """``n`` over the seconds ``fn(*args)`` takes."""
    t0 = time.perf_counter()
    fn(*args)
    return n / (time.perf_counter() - t0)


def _each(fn, items) -> None:
    """``fn(item)`` for each item, the results dropped at once (a timed loop keeps nothing)."""
    for item in items:
        fn(item)


def _take(messages, records: int, decode: bool = False) -> tuple[list, int]:
    """Messages (decoded with ``decode``) until they hold ``records`` records: (them, records)."""
    out, n = [], 0
    while n < records:
        k, data = next(messages)
        out.append(decode_step_batch(data) if decode else data)
        n += k
    return out, n


def steady(args, say, server: ReplayServer, messages) -> None:
    """Insert rates with the replay full (every insert evicts): the server, the buffer alone, decoding."""
    buf = server.buffer
    msgs, n = _take(messages, max(args.transitions // 10, 20_000))
    server_rate = _rate(n, _each, server.add, msgs)
    decode_rate = _rate(n, _each, decode_step_batch, msgs)
    decode_nocheck_rate = _rate(n, _each, functools.partial(decode_step_batch, check_frames=False), msgs)
    del msgs
    decoded, n = _take(messages, max(args.transitions // 10, 20_000), decode=True)

    def add_loop():
        for batch in decoded:
            buf.add(batch)

    buffer_rate = _rate(n, profiled, "steady ReplayBuffer.add", add_loop, args.profile)
    decoded = None
    say(
        f"insert at steady state: ReplayServer.add {server_rate:,.0f} records/s; ReplayBuffer.add alone "
        f"{buffer_rate:,.0f}/s; decode_step_batch alone {decode_rate:,.0f}/s "
        f"({decode_nocheck_rate:,.0f}/s without the lz4 frame check) [target >= 100K/s: {verdict(server_rate >= 1e5)}]"
    )


def priorities(args, say, buf, rng) -> None:
    """Priority updates in calls of a batch and of 16 batches, after every item got a random
    priority (so that sampling afterwards is skewed)."""
    ids = buf.sampleable_ids()
    for lo in range(0, ids.size, 65_536):
        chunk = ids[lo : lo + 65_536]
        buf.update_priorities(chunk, rng.gamma(1.0, 1.0, chunk.size))
    b = args.batch_size
    upd_batches = [(rng.choice(ids, b), rng.gamma(1.0, 1.0, b)) for _ in range(400)]

    def update_loop():
        for i, p in upd_batches:
            buf.update_priorities(i, p)

    upd_rate = _rate(400 * b, profiled, "update_priorities", update_loop, args.profile)
    big = [(rng.choice(ids, 16 * b), rng.gamma(1.0, 1.0, 16 * b)) for _ in range(25)]
    upd_big_rate = _rate(25 * 16 * b, _each, lambda ip: buf.update_priorities(*ip), big)
    say(
        f"priority update: {upd_rate:,.0f} ids/s in calls of {b}; "
        f"{upd_big_rate:,.0f} ids/s in calls of {16 * b} [target >= 1M/s: {verdict(upd_rate >= 1e6)}]"
    )


def sampling(args, say, server: ReplayServer, batches, rng) -> None:
    """Prioritized sampling, beside a plain numpy gather of the same bytes from uncompressed frames."""
    b, n_batches = args.batch_size, args.sample_batches
    server.sample(b)  # warm-up

    def sample_loop():
        for _ in range(n_batches):  # each batch dropped at once, as the Ray shell hands it off
            server.sample(b, beta=0.4)

    sample_rate = _rate(n_batches * b, profiled, "sample", sample_loop, args.profile)
    frames = np.concatenate([bt.frames() for bt in batches])
    gather_frames = min(args.transitions, args.gather_frames)
    pool = np.resize(frames, (gather_frames, 84, 84))  # tiled real frames, each row its own memory
    del frames
    idx = [rng.integers(0, gather_frames, (b, 2, STACK)) for _ in range(n_batches)]
    pool[idx[0]]  # warm-up
    gather_rate = _rate(n_batches * b, _each, pool.__getitem__, idx)
    del pool
    say(
        f"sample (prioritized, batch {b}, stacks of {STACK} rebuilt, n={N_STEP}): {sample_rate:,.0f} transitions/s; "
        f"numpy gather uint8[{b},2,{STACK},84,84] from {gather_frames} uncompressed frames: {gather_rate:,.0f}/s "
        f"(sample runs at {sample_rate / gather_rate:.2f}x the gather) [target >= 30K/s: {verdict(sample_rate >= 3e4)}]"
    )


def _state(stats: dict) -> dict:
    return {k: v for k, v in stats.items() if k != "heap_trims"}


def snapshot(args, game: str, say, holder: list) -> None:
    """Snapshot write and read; ``holder`` holds the only reference to the server, which is
    freed after the write so that the replay read back does not sit beside it."""
    directory = args.snapshot_dir or tempfile.gettempdir()
    path = os.path.join(directory, f"replay-bench-{game}-{os.getpid()}.snap")
    try:
        server = holder.pop()
        saved = server.save_snapshot(path)
        stats, ids = server.stats(), server.buffer.sampleable_ids()
        server = None  # freed before the next game is measured
        gc.collect()
        other = ReplayServer(
            capacity=args.transitions,
            stack_size=STACK,
            n_step=N_STEP,
            gamma=GAMMA,
            seed=0,
            samples_per_insert=None,
            min_size=args.batch_size,
        )
        loaded = other.load_snapshot(path)
        # heap_trims: this process's memory housekeeping (saving a snapshot trims), not replay state
        assert _state(other.stats()) == _state(stats) and np.array_equal(other.buffer.sampleable_ids(), ids)
        say(
            f"snapshot: {saved['bytes'] / 2**20:.0f} MiB for {saved['records']} records, write {saved['seconds']:.2f} s "
            f"({saved['bytes'] / saved['seconds'] / 2**20:.0f} MiB/s), read {loaded['seconds']:.2f} s, into {directory}"
        )
    finally:
        if os.path.exists(path):
            os.remove(path)


def run_game(args, game: str) -> None:
    """Every phase for one game, in order (the same replay throughout, then its snapshot)."""

    def say(msg):
        print(f"[{game}] {msg}", flush=True)

    batches, messages = play(args, game, say)
    server = fill(args, game, say, messages)
    steady(args, say, server, messages)
    rng = np.random.default_rng(args.seed)
    priorities(args, say, server.buffer, rng)
    sampling(args, say, server, batches, rng)
    holder = [server]
    del server
    snapshot(args, game, say, holder)


def main(argv=None) -> None:
    p = parser(__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--games", nargs="+", default=["Breakout", "MsPacman"], help="ALE games (MsPacman: hard to compress)"
    )
    p.add_argument(
        "--transitions", type=at_least(int, 16), default=1_000_000, help="replay capacity and records inserted"
    )
    p.add_argument("--batch-size", type=POSITIVE_INT, default=512, help="sample batch and priority update size")
    p.add_argument(
        "--real-frames", type=POSITIVE_INT, default=25_000, help="records played from the real game, then reused"
    )
    p.add_argument("--num-envs", type=POSITIVE_INT, default=8, help="envs (streams) of the actor that plays")
    p.add_argument("--sample-batches", type=POSITIVE_INT, default=40, help="batches timed for the sample rate")
    p.add_argument(
        "--gather-frames", type=POSITIVE_INT, default=200_000, help="uncompressed frames for the numpy gather baseline"
    )
    p.add_argument("--snapshot-dir", default=None, help="where the snapshot is written (default: the temp dir)")
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--profile", action="store_true", help="cProfile the fill, add, update and sample phases")
    args = p.parse_args(argv)
    for game in args.games:
        check_env(p, "--games", f"ALE/{game}-v5")
    if args.batch_size > args.transitions:
        p.error(f"--batch-size={args.batch_size}: larger than --transitions={args.transitions}")
    if args.snapshot_dir is not None and not os.path.isdir(args.snapshot_dir):
        p.error(f"--snapshot-dir {args.snapshot_dir}: not an existing directory")
    if len(args.games) > 1:
        for game in args.games:  # one process per game: memory figures stay separate
            cmd = [sys.executable, "-m", "benchmarks.replay", *(argv if argv is not None else sys.argv[1:])]
            i = cmd.index("--games") if "--games" in cmd else None
            if i is not None:
                j = i + 1
                while j < len(cmd) and not cmd[j].startswith("--"):
                    j += 1
                del cmd[i:j]
            subprocess.run([*cmd, "--games", game], check=True)
        return
    print(
        f"replay bench: {args.games[0]}, {args.transitions:,} records, batch {args.batch_size}, "
        f"numpy {np.__version__}, pid {os.getpid()}",
        flush=True,
    )
    run_game(args, args.games[0])


if __name__ == "__main__":
    main()
