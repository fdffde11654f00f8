"""The Ray shell around one ReplayBuffer: decode, forward, count; no replay logic here.

``ReplayServer`` is a plain class (tests call it directly); ``make_replay_actor`` makes
the Ray actor class from it at the use site, e.g.::

    server = make_replay_actor(num_cpus=2).remote(capacity=1_000_000, stack_size=4, n_step=3, gamma=0.99)
"""

from __future__ import annotations

import logging
import os
import time

import numpy as np

from common.affinity import pin_worker_from_env
from common.memory import Trimmer
from common.messages import NO_ACTION, IndexBatch, MessageError, SampleBatch, decode_step_batch
from replay_server.buffer import ReplayBuffer
from replay_server.mirror_protocol import FeedPosition
from replay_server.rate_limiter import RateLimiter
from replay_server.snapshot import SnapshotError, read_snapshot, write_snapshot

logger = logging.getLogger(__name__)


class ReplayServer:
    """Holds one ReplayBuffer and its RateLimiter.

    The buffer's arguments, plus the limiter's: ``samples_per_insert`` (None: off),
    ``min_size`` (sampleable items before the first sample) and ``tolerance`` (samples).
    Inserts are never refused: the limiter only tells actors, through
    ``insert_allowance``, when to hold back, so no data that reached the replay is lost.
    """

    def __init__(
        self,
        capacity: int,
        stack_size: int,
        n_step: int,
        gamma: float,
        prioritized: bool = True,
        alpha: float = 0.6,
        priority_eps: float = 1e-6,
        seed: int | None = None,
        samples_per_insert: float | None = None,
        min_size: int = 1,
        tolerance: float = 0.0,
        snapshot_path: str | None = None,
    ):
        pin_worker_from_env()  # --pin-cpus on: off the learner's cores (common.affinity)
        self.buffer = ReplayBuffer(capacity, stack_size, n_step, gamma, prioritized, alpha, priority_eps, seed)
        self.limiter = RateLimiter(samples_per_insert, min_size, tolerance)
        self.rejected = 0
        self.batches_added = 0
        self.restored: dict | None = None
        self.restore_error: str | None = None  # why a snapshot was moved aside; stats() reports it
        # Evicting a full replay frees blobs of every size all the time: give the freed
        # pages back once a minute, or resident memory creeps up in steps (common.memory).
        self.trimmer = Trimmer(period_s=60.0)
        if snapshot_path is not None and os.path.exists(snapshot_path):
            self._restore(snapshot_path)

    def _restore(self, path: str) -> None:
        """Come back from the snapshot at ``path`` (a resumed run, or Ray restarting this
        actor after a crash). A bad snapshot is moved aside, never deleted, and the replay
        starts empty: losing the replay must not stop the run."""
        try:
            self.restored = self.load_snapshot(path)
            logger.warning("replay restored from %s: %d records", path, self.restored["records"])
        except SnapshotError as e:
            aside = f"{path}.bad-{int(time.time())}"
            try:
                os.replace(path, aside)
                where = f"moved to {aside}"
            except OSError as move_error:  # a read-only run dir
                where = f"could not be moved aside: {move_error.strerror or move_error}"
            self.restore_error = f"{e} ({where})"
            logger.warning("replay starts empty: %s", self.restore_error)
            return
        # The restore moved the buffer to a new id epoch; record it before any id goes out,
        # or a second crash would restore the old epoch again and reissue this one's ids.
        try:
            self.save_snapshot(path)
        except OSError as e:
            logger.warning("replay could not record its new id epoch in %s: %s", path, e)

    def add(self, data: bytes) -> bool:
        """Decode and store one encoded StepBatch. A bad batch is counted, logged and dropped:
        one broken actor must not take the replay (and every other actor's data) down."""
        try:
            batch = decode_step_batch(data)
            self.buffer.add(batch)
        except MessageError as e:
            self.rejected += 1
            logger.warning("rejected step batch: %s", e)
            return False
        self.batches_added += 1
        self.limiter.on_insert(int(np.count_nonzero(batch.actions != NO_ACTION)))
        return True

    def insert_allowance(self) -> float:
        """Transitions the actors may still insert before the learner must catch up."""
        return self.limiter.insert_allowance()

    def sample(self, batch_size: int, beta: float = 0.4) -> SampleBatch | None:
        """A batch, or None while the rate limiter (or too few sampleable items) says wait."""
        if not self.limiter.can_sample(batch_size, self.buffer.num_sampleable):
            return None
        self.limiter.on_sample(batch_size)
        return self.buffer.sample(batch_size, beta)

    def sample_indices(
        self,
        batch_size: int,
        beta: float = 0.4,
        position: FeedPosition | None = None,
        priorities: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> IndexBatch:
        """A batch as frame uids, with the frames a mirror at ``position`` lacks
        (``replay_server.mirror_protocol``). Always answers: while the rate limiter says wait
        the answer carries the frame delta alone, so the consumer's mirror never falls behind.
        ``priorities`` (ids, new priorities), if given, are applied first: the learner sends
        them with its next request instead of in a call of their own."""
        if priorities is not None:
            self.buffer.update_priorities(*priorities)
        draw = self.limiter.can_sample(batch_size, self.buffer.num_sampleable)
        answer = self.buffer.sample_indices(batch_size, beta, position, draw=draw)
        if answer.has_batch:
            self.limiter.on_sample(batch_size)
        return answer

    def update_priorities(self, ids: np.ndarray, priorities: np.ndarray) -> int:
        return self.buffer.update_priorities(ids, priorities)

    def stats(self) -> dict:
        self.trimmer.maybe()  # the driver polls stats every few seconds
        return {
            **self.buffer.stats(),
            "rejected": self.rejected,
            "batches_added": self.batches_added,
            "transitions_inserted": self.limiter.inserts,
            "transitions_sampled": self.limiter.samples,
            "restored_records": self.restored["records"] if self.restored else 0,
            "restore_error": self.restore_error,
            "heap_trims": self.trimmer.trims,
        }

    # ------------------------------------------------------------------ snapshots

    def state_dict(self) -> dict:
        """Buffer, rate limiter counters and this shell's counters (live arrays, see
        ``ReplayBuffer.state_dict``)."""
        return {
            "buffer": self.buffer.state_dict(),
            "limiter": self.limiter.state(),
            "server": {"rejected": self.rejected, "batches_added": self.batches_added},
        }

    def load_state_dict(self, state: dict) -> None:
        """Become exactly the server ``state`` came from; SnapshotError changes nothing."""
        try:
            counters = state["server"]
            rejected, batches_added = counters["rejected"], counters["batches_added"]
            if not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in (rejected, batches_added)):
                raise ValueError(f"server counters {counters!r} are not ints >= 0")
            probe = RateLimiter(None, 0, 0.0)
            probe.load_state(state["limiter"])
            buffer_state = state["buffer"]
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise SnapshotError(f"malformed replay server state: {e}") from None
        self.buffer.load_state_dict(buffer_state)  # checks everything before it changes anything
        self.limiter.load_state(state["limiter"])
        self.rejected, self.batches_added = rejected, batches_added

    def save_snapshot(self, path: str) -> dict:
        """Write the whole replay to ``path`` (on this process's machine) atomically.

        Returns ``{path, bytes, items, records, seconds}``: items are the sampleable
        transitions, records the frames stored.
        """
        start = time.perf_counter()
        nbytes = write_snapshot(path, self.state_dict())
        self.trimmer.now()  # the snapshot's compressed sections are freed: give their pages back
        return {
            "path": os.fspath(path),
            "bytes": nbytes,
            "items": self.buffer.num_sampleable,
            "records": len(self.buffer),
            "seconds": time.perf_counter() - start,
        }

    def load_snapshot(self, path: str) -> dict:
        """Replace this replay's state with the snapshot at ``path``.

        SnapshotError (naming the file and the problem), with this replay unchanged, when
        the file is cut short, corrupted, or from a replay with other settings.
        Returns ``{path, bytes, items, records, seconds}`` as :meth:`save_snapshot`.
        """
        start = time.perf_counter()
        state = read_snapshot(path)
        try:
            self.load_state_dict(state)
        except SnapshotError as e:
            raise SnapshotError(f"{path}: {e}") from None
        return {
            "path": os.fspath(path),
            "bytes": os.path.getsize(path),
            "items": self.buffer.num_sampleable,
            "records": len(self.buffer),
            "seconds": time.perf_counter() - start,
        }


def make_replay_actor(**options):
    """The Ray actor class of ReplayServer with ``options`` (num_cpus, name, ...) applied."""
    import ray  # here, so that the plain class imports without Ray

    return ray.remote(ReplayServer).options(**options)
