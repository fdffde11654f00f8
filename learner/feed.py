"""The feed on the learner's side: the next batch from the replay shards, and priorities back.

:class:`Feed` keeps ``--prefetch`` sample requests in flight (to shards drawn in proportion
to what they hold), so the learner rarely waits on a round trip. With ``--feed stacked`` a
shard answers with whole stacks. With ``--feed mirror`` it answers with frame indices and
the frames the learner's mirror of it lacks (``learner/mirror.py``): each request carries
the mirror's own position, so a lost answer, a lost reset or a restarted shard is repaired
by the next request; the stacks are gathered on the learner's device, all of it on the
feeder's thread (``learner/feeder.py``) while the learner's thread updates. Priorities
ride on the shard's next sample request (held here until then).

A stall, no batch for :data:`FEED_STALL_S` seconds while the trainer asks (it asks only
once the replay holds ``--learning-starts`` items) for a reason other than the rate limiter,
is reported (:attr:`Feed.stalled_s`, with :attr:`Feed.waiting_on`) and logged once, rather
than taken for the rate limiter holding the learner back.

The Ray calls are ``handle.method.remote`` and ``ray.get``; tests hand in plain handles.
"""

from __future__ import annotations

import collections
import logging
import threading
import time

import numpy as np
import ray

from common.config import Config
from learner.shards import shard_capacity
from replay_server.mirror_protocol import MAX_DELTA_FRAMES

log = logging.getLogger("raydqn")
MAX_HELD_PRIORITIES = 8  # priority batches held for a shard's next sample request (mirror feed)
#: Seconds without a batch (for a reason other than the rate limiter) that count as a stall.
FEED_STALL_S = 10.0
#: A pause between two requests for a batch longer than this is the trainer not asking.
_ASK_GAP_S = 2.0


def _joined(held: list) -> tuple[np.ndarray, np.ndarray]:
    """Held (ids, priorities) pairs as one pair."""
    return np.concatenate([i for i, _ in held]), np.concatenate([p for _, p in held])


class StallWatch:
    """How long the feed has given no batch while asked for one, and why (the reason of the
    last empty fetch: ``limiter``, ``mirror`` or ``shard``; '' after a batch)."""

    def __init__(self, after_s: float = FEED_STALL_S, clock=time.monotonic):
        self.after_s, self.clock = after_s, clock
        self.since = self.last_ask = None
        self.reason = ""
        self.stalls = 0  # stalls that began
        self._counted = False

    def asked(self) -> None:
        now = self.clock()
        if self.last_ask is None or now - self.last_ask > _ASK_GAP_S:
            self.since = now
        self.last_ask = now

    def delivered(self) -> None:
        self.since, self.reason, self._counted = self.clock(), "", False

    def waited(self, reason: str) -> None:
        self.reason = reason

    @property
    def stalled_s(self) -> float:
        if self.since is None or self.reason in ("", "limiter"):
            return 0.0
        waited = self.clock() - self.since
        return waited if waited >= self.after_s else 0.0

    def newly_stalled(self) -> bool:
        """True once per stall, when it begins."""
        if self._counted or not self.stalled_s:
            return False
        self._counted = True
        self.stalls += 1
        return True


class Feed:
    def __init__(self, cfg: Config, rng: np.random.Generator, device=None):
        self.cfg = cfg
        self.rng = rng
        self.device = device  # the mirrors' device (None: the config's learner device)
        self.replays: list = []  # the shards' handles
        self.shard_sizes = np.zeros(cfg.replay.replay_shards)  # sampleable items per shard, from the polls
        self.pending: collections.deque = collections.deque()  # (shard, sample ref)
        self.mirrors: dict = {}  # shard -> learner.mirror.FrameMirror, with --feed mirror
        self.held_priorities: dict[int, list] = {}  # shard -> [(ids, priorities)] for its next request
        self.held_lock = threading.Lock()  # the learner's thread holds priorities, the feeder's sends them
        self.feeder = None  # learner.feeder.Feeder, with --feed mirror
        self.beta = 0.4  # the importance-sampling exponent the feeder's requests carry
        self.watch = StallWatch()
        self._resyncing: set[int] = set()  # shards whose mirror dropped an answer (logged once)

    @property
    def mirrored(self) -> bool:
        return self.cfg.learner.feed == "mirror"

    @property
    def stalled_s(self) -> float:
        return self.watch.stalled_s

    @property
    def waiting_on(self) -> str:
        return self.watch.reason

    # ---- batches ---------------------------------------------------------------------------
    def next_batch(self, batch_size: int, beta: float):
        """``(shard, SampleBatch)``, or None when there is nothing to train on yet (the rate
        limiter holds the learner, a shard is restarting, a mirror catches up)."""
        self.watch.asked()
        if not self.mirrored:
            got = self.fetch(batch_size, beta)
        else:
            self.beta = beta  # the feeder's next requests carry it (β anneals over the whole run)
            if self.feeder is None:
                self.feeder = self._start_feeder(batch_size)
            got = self.feeder.get()
        if got is not None:
            self.watch.delivered()
        elif self.watch.newly_stalled():
            log.warning(
                "no batch for %.0f s (waiting on the %s) while the replay holds items",
                self.watch.stalled_s,
                self.watch.reason,
            )
        return got

    def _start_feeder(self, batch_size: int):
        from learner.feeder import Feeder

        return Feeder(lambda: self.fetch(batch_size, self.beta), device=self._device())

    def fetch(self, batch_size: int, beta: float):
        """One batch, as :meth:`next_batch` describes, on the calling thread."""
        while len(self.pending) < self.cfg.learner.prefetch:
            shard = self.pick_shard()
            self.pending.append((shard, self._request(shard, batch_size, beta)))
        shard, ref = self.pending.popleft()
        try:
            answer = ray.get(ref)
        except ray.exceptions.RayActorError:  # the shard is restarting, or the answer was lost
            if self.mirrored:  # it may come back with other frames under the same uids
                self.mirror(shard).forget()
            self.watch.waited("shard")
            time.sleep(0.2)
            return None
        batch = self._mirrored(shard, answer) if self.mirrored else answer
        if batch is None:
            if not self.mirrored:
                self.watch.waited("limiter")
            time.sleep(0.002)
            return None
        return shard, batch

    def _request(self, shard: int, batch_size: int, beta: float):
        replay = self.replays[shard]
        if not self.mirrored:
            return replay.sample.remote(batch_size, beta)
        return replay.sample_indices.remote(
            batch_size, beta, self.mirror(shard).position(), self.take_priorities(shard)
        )

    def mirror(self, shard: int):
        """Shard ``shard``'s mirror (made on first use)."""
        if shard not in self.mirrors:
            from learner.mirror import FrameMirror

            self.mirrors[shard] = FrameMirror(shard_capacity(self.cfg), self._device())
        return self.mirrors[shard]

    def _device(self):
        if self.device is None:
            from common.config.hardware import pick_device

            self.device = pick_device(self.cfg.learner.device)
        return self.device

    def _mirrored(self, shard: int, answer):
        """Apply the answer's frames to the shard's mirror, then gather its batch there (None:
        the answer had none, or was dropped). Answers are handled in the order they were
        asked for, each gathered before the next one's frames go in: ``learner/mirror.py``
        says why that is exact."""
        mirror = self.mirror(shard)
        if not mirror.apply(answer.delta):
            if shard not in self._resyncing:
                self._resyncing.add(shard)
                log.warning("replay-%d: an answer to the mirror was lost; asking again from its position", shard)
            self.watch.waited("mirror")
            return None
        self._resyncing.discard(shard)
        if not answer.has_batch:
            catching_up = answer.delta.reset or len(answer.delta) >= MAX_DELTA_FRAMES
            self.watch.waited("mirror" if catching_up else "limiter")
            return None
        return mirror.gather(answer)

    def pick_shard(self) -> int:
        """A shard drawn in proportion to its sampleable items (uniform before any stats)."""
        total = self.shard_sizes.sum()
        if len(self.shard_sizes) == 1 or total <= 0:
            return int(self.rng.integers(len(self.shard_sizes)))
        return int(self.rng.choice(len(self.shard_sizes), p=self.shard_sizes / total))

    # ---- priorities ------------------------------------------------------------------------
    def update_priorities(self, shard: int, ids: np.ndarray, priorities: np.ndarray) -> None:
        """With the mirror feed, priorities ride on the shard's next sample request (one
        Ray call per update instead of two: each costs the driver ≈ 0.6 ms on 2 cores), or
        go on their own once MAX_HELD_PRIORITIES batches of them wait for a rarely drawn shard."""
        if self.mirrored:
            with self.held_lock:  # the feeder's next request to this shard may take them meanwhile
                held = self.held_priorities.setdefault(shard, [])
                held.append((ids, priorities))
                if len(held) < MAX_HELD_PRIORITIES:
                    return
                del self.held_priorities[shard]
            ids, priorities = _joined(held)
        self.replays[shard].update_priorities.remote(ids, priorities)

    def take_priorities(self, shard: int) -> tuple[np.ndarray, np.ndarray] | None:
        with self.held_lock:
            held = self.held_priorities.pop(shard, None)
        return _joined(held) if held else None

    def send_held_priorities(self) -> None:
        """Send every held priority now (before a snapshot: they belong in it)."""
        with self.held_lock:
            shards = list(self.held_priorities)
        for shard in shards:
            held = self.take_priorities(shard)
            if held is not None:
                self.replays[shard].update_priorities.remote(*held)

    def close_feeder(self) -> None:
        if self.feeder is not None and not self.feeder.close():
            log.warning("the feeder thread did not stop within 10 s (a sample request still waits)")
        self.feeder = None
