"""The replay buffer: frames stored once, n-step transitions, prioritized sampling.

Plain Python and numpy, no Ray (``replay_server/remote.py`` is the Ray shell). It composes
three parts, as Dopamine's and Reverb's replays do:

* ``replay_server.accumulator``: which arriving records become items (stacks, n-step
  windows by the one rule of ``common.nstep``, stream grammar, segment restarts on gaps);
* ``replay_server.sampler``: how likely each item is drawn (sum tree, or uniform);
* ``replay_server.state``: the snapshot tree and its checks.

Storage. Every record (one frame plus the transition leaving it, see the stream grammar in
``common.messages``) gets a uid, the insertion counter. It lives in slot ``uid % capacity``
until ``capacity`` newer records have arrived (FIFO), so uid ``u`` is stored iff
``u >= records_added - capacity``. A frame is kept once, as the compressed bytes that
arrived, and is decompressed only when a sample needs it; stacked observations are rebuilt
at sample time from ``stack_uids``, the uids of the S frames of a record's stack.

Items. A record with an action becomes a sampleable item once its n-step window is complete
(return, discount and bootstrap record as in ``common.nstep``) and every frame of its stack
is still stored. The bootstrap record is newer than the item and its stack reaches back no
further than the item's stack, so that one condition covers ``next_obs`` too. A segment cut
short by a new ``first`` record (actor restart) drops its incomplete items.

Ids. An item's id is ``epoch << 40 | uid``, with ``epoch`` the buffer's epoch when its
window completed (when it became an item). A fresh buffer has epoch 0; :meth:`ReplayBuffer.load_state_dict` takes the
snapshot's epoch + 1. A restored replay cannot know how many uids its crashed predecessor
issued after the snapshot, so uids repeat, but ids do not: a priority update for an id of
another epoch finds a slot whose epoch differs and is ignored (counted in
``priority_updates_ignored``), never applied to the new record that reuses the uid.
"""

from __future__ import annotations

import numpy as np

from common.messages import NO_ACTION, FrameDelta, IndexBatch, MessageError, SampleBatch, StepBatch, decompress_frames
from replay_server.accumulator import Accumulated, StreamState, accumulate, admit, check_grammar
from replay_server.sampler import PrioritySampler
from replay_server.slots import allocate_slots
from replay_server.snapshot import SnapshotError
from replay_server.state import CONFIG_FIELDS, decode_state, encode_state

#: Frames decompressed per call at sample time (see ReplayBuffer._gather).
_DECOMPRESS_CHUNK = 128
#: Bits of an id that hold the uid; the bits above hold the epoch.
ID_EPOCH_SHIFT = 40
_UID_MASK = (1 << ID_EPOCH_SHIFT) - 1
MAX_EPOCH = (1 << (63 - ID_EPOCH_SHIFT)) - 1
#: Most frames one answer's FrameDelta carries: a consumer further behind (a new one, or
#: after a restore, up to a whole shard) catches up over several answers without a batch.
MAX_DELTA_FRAMES = 32_768


def item_ids(epochs: np.ndarray, uids: np.ndarray) -> np.ndarray:
    """Ids ``int64[K]`` of items with these epochs and uids."""
    return (np.asarray(epochs, dtype=np.int64) << ID_EPOCH_SHIFT) | np.asarray(uids, dtype=np.int64)


def id_parts(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(epochs, uids)``, both ``int64[K]``, of item ids."""
    ids = np.asarray(ids, dtype=np.int64)
    return ids >> ID_EPOCH_SHIFT, ids & _UID_MASK


class ReplayBuffer:
    """FIFO replay of n-step transitions with stacked frames and proportional priorities.

    Args:
        capacity: records stored at most (frames, each with its transition).
        stack_size: S, frames per observation (4 for Atari, 1 for flat vectors).
        n_step: n of the n-step return.
        gamma: discount per step.
        prioritized: proportional prioritized sampling; False samples uniformly.
        alpha: priority exponent (the tree holds priority ** alpha).
        priority_eps: added to every priority so that no item becomes unreachable.
        seed: seeds ``self.rng``, the generator of all sampling.
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
    ):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        if stack_size < 1:
            raise ValueError(f"stack_size must be >= 1, got {stack_size}")
        if n_step < 1:
            raise ValueError(f"n_step must be >= 1, got {n_step}")
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {gamma}")
        if alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {alpha}")
        if priority_eps < 0:
            raise ValueError(f"priority_eps must be >= 0, got {priority_eps}")
        self.capacity = int(capacity)
        self.stack_size = int(stack_size)
        self.n_step = int(n_step)
        self.gamma = float(gamma)
        self.prioritized = bool(prioritized)
        self.alpha = float(alpha)
        self.priority_eps = float(priority_eps)
        self.rng = np.random.default_rng(seed)
        self.sampler = PrioritySampler(self.capacity, self.prioritized, self.alpha, self.priority_eps)
        self._slots = allocate_slots(self.capacity, self.stack_size)
        self._blobs: list[bytes | None] = [None] * self.capacity
        self._blob_bytes = 0  # compressed frame bytes held: what the replay's memory should follow
        self._frame_spec: tuple[str, tuple[int, ...], str] | None = None  # codec, shape, dtype
        self._streams: dict[int, StreamState] = {}
        self._records_added = 0
        self._items_dropped = 0
        self._records_lost = 0  # records streams sent that never arrived (gaps in seq)
        self._priority_updates_ignored = 0
        self._epoch = 0
        #: consumer -> (epoch, next uid) of the frames sent to it (sample_indices); not in snapshots
        self._consumers: dict[str, tuple[int, int]] = {}

    # ------------------------------------------------------------------ queries

    def __len__(self) -> int:
        """Records currently stored (<= capacity)."""
        return min(self._records_added, self.capacity)

    @property
    def num_sampleable(self) -> int:
        """Items with a complete n-step window whose frames are all still stored."""
        return int(np.count_nonzero(self._slots["sampleable"]))

    @property
    def records_added(self) -> int:
        return self._records_added

    @property
    def epoch(self) -> int:
        """The epoch of the ids this buffer issues now (0, +1 at every restore)."""
        return self._epoch

    def _lowest_stored_uid(self) -> int:
        return max(self._records_added - self.capacity, 0)

    def sampleable_ids(self) -> np.ndarray:
        """Ids ``int64[N]`` of all sampleable items, ascending (by uid, too)."""
        mask = self._slots["sampleable"]
        return np.sort(item_ids(self._slots["epoch"][mask], self._slots["uid"][mask]))

    def sampling_weights(self, ids: np.ndarray) -> np.ndarray:
        """Unnormalised sampling weights ``float64[K]``: ``(priority + eps) ** alpha``, 1 each
        when uniform, 0 for ids that are not sampleable. P(i) is weight / sum of all."""
        slots, ok = self._locate(ids)
        return np.where(ok, self.sampler.leaves(slots), 0.0)

    def stats(self) -> dict:
        return {
            "records_added": self._records_added,
            "items_sampleable": self.num_sampleable,
            "evicted": max(self._records_added - self.capacity, 0),
            "size": len(self),
            "capacity": self.capacity,
            "streams": len(self._streams),
            "items_dropped": self._items_dropped,
            "records_lost": self._records_lost,
            "priority_updates_ignored": self._priority_updates_ignored,
            "frame_bytes": self._blob_bytes,
        }

    # ------------------------------------------------------------------ insertion

    def add(self, batch: StepBatch) -> int:
        """Store all records of ``batch``; returns how many were stored.

        Raises MessageError (storing nothing) when the batch breaks the schema, the stream
        grammar given what this stream sent before, or the frame format of earlier batches.
        """
        batch.validate(check_frames=False)
        spec = (batch.codec, tuple(batch.frame_shape), batch.frame_dtype)
        if self._frame_spec is not None and spec != self._frame_spec:
            raise MessageError(f"frames are {spec} (codec, shape, dtype) but this buffer stores {self._frame_spec}")
        state = self._streams.get(batch.stream_id)
        next_seq = batch.seq + len(batch)
        batch, lost = admit(state, batch)
        if batch is None:  # nothing left but a final frame whose episode is gone
            self._records_lost += lost
            if state is not None:
                state.next_seq = next_seq
            return 0
        final = batch.actions == NO_ACTION
        ended = batch.terminated | batch.truncated
        check_grammar(batch.stream_id, state, batch.first, final, ended)
        m = len(batch)
        if self._records_added + m > _UID_MASK:
            raise OverflowError(f"replay uids would pass 2**{ID_EPOCH_SHIFT}")
        # Nothing is mutated above this line.
        self._frame_spec = spec
        self._records_lost += lost
        for lo in range(0, m, self.capacity):  # a batch longer than the buffer goes in pieces
            self._insert(batch, slice(lo, min(lo + self.capacity, m)), final, ended)
        self._streams[batch.stream_id].next_seq = next_seq
        return m

    def _insert(self, batch: StepBatch, part: slice, final: np.ndarray, ended: np.ndarray) -> None:
        """Insert records ``part`` (at most ``capacity``) of a checked batch, then complete windows."""
        cap, a = self.capacity, self._records_added
        m = part.stop - part.start
        uids = np.arange(a, a + m, dtype=np.int64)
        new_lo = a + m - cap  # lowest uid still stored after this insert (may be < 0)
        # Tree writes of this insert, applied at the end in one update (last write wins):
        # zeros for items that stop being sampleable, then the new items' priorities.
        tree_slots, tree_leaves = [np.empty(0, np.int64)], [np.empty(0)]
        if new_lo > 0:
            lost = self._evict(np.arange(max(a - cap, 0), new_lo, dtype=np.int64), new_lo)
            tree_slots.append(lost)
            tree_leaves.append(np.zeros(lost.size))
        state = self._streams.get(batch.stream_id)
        first = batch.first[part]
        acc = accumulate(
            state,
            uids,
            batch.rewards[part],
            batch.terminated[part],
            ended[part],
            first,
            final[part],
            self.stack_size,
            self.n_step,
            self.gamma,
            max(new_lo, 0),
        )
        self._items_dropped += acc.dropped
        self._write_records(uids, acc, batch, part)
        if not first[0] and state.last_uid >= new_lo:  # link the segment across batches
            self._slots["next_uid"][state.last_uid % cap] = uids[0]
        ok = self._complete(acc, new_lo)
        if ok.size:
            tree_slots.append(ok)
            tree_leaves.append(self.sampler.initial_leaves(self._slots["init_priority"][ok]))
        if len(tree_slots) > 1:
            self.sampler.set_leaves(np.concatenate(tree_slots), np.concatenate(tree_leaves))
        self._streams[batch.stream_id] = acc.state

    def _write_records(self, uids: np.ndarray, acc: Accumulated, batch: StepBatch, part: slice) -> None:
        """Write new records into their slots (reused slots: their tree leaves are zeroed by the caller)."""
        cap, sl, m = self.capacity, self._slots, uids.size
        slots = uids % cap
        sl["uid"][slots] = uids
        sl["epoch"][slots] = self._epoch
        sl["stack_uids"][slots] = acc.stacks
        sl["next_uid"][slots] = acc.next_uid
        sl["action"][slots] = batch.actions[part]
        sl["reward"][slots] = batch.rewards[part]
        sl["terminated"][slots] = batch.terminated[part]
        sl["init_priority"][slots] = np.nan if batch.priorities is None else batch.priorities[part]
        sl["return"][slots] = 0
        sl["discount"][slots] = 0
        sl["boot_uid"][slots] = -1
        sl["sampleable"][slots] = False
        blobs = batch.frame_blobs[part]
        s0 = int(uids[0]) % cap
        if s0 + m <= cap:
            self._blob_bytes += _nbytes(blobs) - _nbytes(self._blobs[s0 : s0 + m])
            self._blobs[s0 : s0 + m] = blobs
        else:
            split = cap - s0
            self._blob_bytes += _nbytes(blobs) - _nbytes(self._blobs[s0:]) - _nbytes(self._blobs[: m - split])
            self._blobs[s0:] = blobs[:split]
            self._blobs[: m - split] = blobs[split:]
        self._records_added = int(uids[-1]) + 1

    def _complete(self, acc: Accumulated, new_lo: int) -> np.ndarray:
        """Store the completed windows; returns the slots ``int64[K]`` that became sampleable."""
        if not acc.items.size:
            return np.empty(0, np.int64)
        sl = self._slots
        done = acc.items % self.capacity
        sl["return"][done] = acc.returns
        sl["discount"][done] = acc.discounts
        sl["boot_uid"][done] = acc.boot_uids
        sl["epoch"][done] = self._epoch
        ok = done[sl["stack_uids"][done, 0] >= new_lo]
        sl["sampleable"][ok] = True
        return ok

    def _evict(self, evicted: np.ndarray, new_lo: int) -> np.ndarray:
        """Make uids ``evicted`` (about to be overwritten) and every item whose stack holds one unsampleable.

        Stacks reach back at most S-1 records within a segment, so the casualties are the
        next S-1 records of each evicted one's segment: follow ``next_uid`` S-1 hops
        (a loop over hops, vectorized over records). Call before the slots are reused.
        Returns the slots ``int64[K]`` that were sampleable; the caller zeroes their tree leaves.
        """
        cap, sampleable, next_uid = self.capacity, self._slots["sampleable"], self._slots["next_uid"]
        slots = evicted % cap
        hit = slots[sampleable[slots]]
        succ = next_uid[slots]
        succ = succ[succ >= new_lo]  # -1 (none) or evicted itself: those need no hop from here
        for _ in range(self.stack_size - 1):
            if succ.size == 0:
                break
            succ_slots = succ % cap
            hit = np.concatenate([hit, succ_slots[sampleable[succ_slots]]])
            succ = next_uid[succ_slots]
            succ = succ[succ >= 0]
        sampleable[hit] = False
        return hit

    # ------------------------------------------------------------------ sampling

    def sample(self, batch_size: int, beta: float = 0.4) -> SampleBatch:
        """``batch_size`` items drawn with replacement: proportional to priority (stratified) or uniform.

        Raises ValueError if no item is sampleable.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if beta < 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        n_items = self.num_sampleable
        if n_items == 0:
            raise ValueError("no sampleable items in the replay buffer")
        slots, weights = self.sampler.draw(self.rng, batch_size, beta, n_items)
        return self._gather(slots, weights)

    def gather(self, ids: np.ndarray) -> SampleBatch:
        """The items ``int64[B]`` (all sampleable, else ValueError) with weights 1; for tests and tools."""
        slots, ok = self._locate(ids)
        if not np.all(ok):
            raise ValueError("gather: some ids are not sampleable")
        return self._gather(slots, np.ones(slots.size))

    def sample_indices(
        self,
        batch_size: int,
        beta: float = 0.4,
        consumer: str = "learner",
        draw: bool = True,
        max_delta_frames: int = MAX_DELTA_FRAMES,
    ) -> IndexBatch:
        """A sample as frame uids, for a consumer that mirrors this buffer's frame ring.

        The answer's delta carries every frame stored since the previous answer to
        ``consumer`` (all stored frames, with ``reset``, for a consumer this buffer has not
        answered in its current epoch). A consumer that applies each answer's delta, in the
        order it asked, before gathering that answer's uids, holds every frame they name
        and none newer in their slots (see ``learner/mirror.py``). Items are drawn exactly
        as :meth:`sample` draws them, unless ``draw`` is False (the rate limiter said wait)
        or the delta has not caught up (more than ``max_delta_frames`` behind): then the
        answer carries the delta alone. Raises ValueError if a draw finds no item.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        delta = self.frame_delta(self._consumers.get(consumer), max_delta_frames)
        self._consumers[consumer] = (self._epoch, delta.end_uid)
        if not draw or delta.end_uid < self._records_added:
            return IndexBatch(delta=delta)
        if beta < 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        n_items = self.num_sampleable
        if n_items == 0:
            raise ValueError("no sampleable items in the replay buffer")
        slots, weights = self.sampler.draw(self.rng, batch_size, beta, n_items)
        sl = self._slots
        return IndexBatch(
            delta=delta,
            ids=item_ids(sl["epoch"][slots], sl["uid"][slots]),
            obs_uids=sl["stack_uids"][slots],
            next_uids=sl["stack_uids"][sl["boot_uid"][slots] % self.capacity],
            actions=sl["action"][slots].astype(np.int64),
            returns=sl["return"][slots],
            discounts=sl["discount"][slots],
            weights=np.asarray(weights, dtype=np.float32),
        )

    def forget_consumer(self, consumer: str) -> None:
        """The next answer to ``consumer`` resends every stored frame, with ``reset``."""
        self._consumers.pop(consumer, None)

    def frame_delta(self, cursor: tuple[int, int] | None, max_frames: int = MAX_DELTA_FRAMES) -> FrameDelta:
        """The stored frames from ``cursor`` = (epoch, next uid) on, at most ``max_frames``
        of them, oldest first; every stored frame (``reset``) when ``cursor`` is None or of
        another epoch. Reads only: the caller keeps the cursor."""
        reset = cursor is None or cursor[0] != self._epoch or cursor[1] > self._records_added
        lo = self._lowest_stored_uid() if reset else max(cursor[1], self._lowest_stored_uid())
        hi = min(self._records_added, lo + max(int(max_frames), 1))
        cap, n, s0 = self.capacity, hi - lo, lo % self.capacity
        blobs = self._blobs[s0 : s0 + n] if s0 + n <= cap else self._blobs[s0:] + self._blobs[: s0 + n - cap]
        offsets = np.zeros(len(blobs) + 1, dtype=np.int64)
        np.cumsum(np.fromiter(map(len, blobs), dtype=np.int64, count=len(blobs)), out=offsets[1:])
        codec, shape, dtype = self._frame_spec or ("raw", (), "uint8")
        return FrameDelta(
            epoch=self._epoch,
            since_uid=-1 if reset else cursor[1],
            first_uid=lo,
            end_uid=hi,
            reset=reset,
            codec=codec,
            frame_shape=tuple(shape),
            frame_dtype=dtype,
            positions=(np.arange(lo, hi, dtype=np.int64) % cap).astype(np.int32),
            offsets=offsets,
            blobs=np.frombuffer(b"".join(blobs), dtype=np.uint8),
        )

    def _locate(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Slots ``int64[K]`` of item ids, and which ids name a sampleable item of their epoch."""
        ids = np.asarray(ids, dtype=np.int64).ravel()
        epochs, uids = id_parts(ids)
        slots = uids % self.capacity
        ok = (ids >= 0) & (uids >= self._lowest_stored_uid()) & (uids < self._records_added)
        ok &= self._slots["sampleable"][slots] & (self._slots["epoch"][slots] == epochs)
        return slots, ok

    def _gather(self, slots: np.ndarray, weights: np.ndarray) -> SampleBatch:
        """Rebuild the stacks of item slots ``int64[B]``; each distinct frame is decompressed once."""
        cap, s, sl = self.capacity, self.stack_size, self._slots
        codec, shape, dtype = self._frame_spec
        b = slots.size
        obs_uids = sl["stack_uids"][slots]  # int64[B, S]
        next_uids = sl["stack_uids"][sl["boot_uid"][slots] % cap]  # int64[B, S]
        wanted = np.concatenate([obs_uids.ravel(), next_uids.ravel()])
        uniq, first, inverse = np.unique(wanted, return_index=True, return_inverse=True)
        out = np.empty((2 * b * s, *shape), dtype=dtype)  # obs stacks, then next_obs stacks
        uniq_blobs = [self._blobs[u] for u in (uniq % cap).tolist()]
        # Decompress in chunks: holding thousands of fresh frames at once costs a page fault
        # per frame, while chunk after chunk reuses the same (cache-warm) heap memory.
        for lo in range(0, len(uniq_blobs), _DECOMPRESS_CHUNK):
            hi = lo + _DECOMPRESS_CHUNK
            out[first[lo:hi]] = decompress_frames(uniq_blobs[lo:hi], codec, shape, dtype)
        repeat = np.flatnonzero(first[inverse] != np.arange(wanted.size))
        out[repeat] = out[first[inverse[repeat]]]
        out = out.reshape(2, b, s, *shape)
        return SampleBatch(
            ids=item_ids(sl["epoch"][slots], sl["uid"][slots]),
            obs=out[0],
            actions=sl["action"][slots].astype(np.int64),
            returns=sl["return"][slots],
            discounts=sl["discount"][slots],
            next_obs=out[1],
            weights=np.asarray(weights, dtype=np.float32),
        )

    # ------------------------------------------------------------------ priorities

    def update_priorities(self, ids: np.ndarray, priorities: np.ndarray) -> int:
        """Set the priorities of items ``int64[K]`` to ``float[K]``; returns how many were applied.

        The tree gets ``(p + priority_eps) ** alpha``. Ids no longer stored, not sampleable
        or of another epoch (issued before a restore), and non-finite or negative
        priorities, are skipped and counted in ``priority_updates_ignored``. With uniform
        sampling nothing changes, but the count still says how many ids were valid.
        """
        prio = np.asarray(priorities, dtype=np.float64).ravel()
        slots, ok = self._locate(ids)
        if slots.shape != prio.shape:
            raise ValueError(f"ids {slots.shape} and priorities {prio.shape} differ in shape")
        ok &= np.isfinite(prio) & (prio >= 0)
        count = int(np.count_nonzero(ok))
        self._priority_updates_ignored += slots.size - count
        self.sampler.update(slots[ok], prio[ok])
        return count

    # ------------------------------------------------------------------ snapshots

    def _config(self) -> dict:
        return {name: getattr(self, name) for name in CONFIG_FIELDS}

    def state_dict(self) -> dict:
        """The whole state as a tree for ``replay_server.snapshot.write_snapshot``.

        Arrays are the live ones, not copies (a 1M replay holds ~90 MB of them, and the
        frame blobs are shared, never copied): write the state out before the next add,
        sample or priority update.
        """
        counters = {
            "records_added": self._records_added,
            "items_dropped": self._items_dropped,
            "records_lost": self._records_lost,
            "max_priority": self.sampler.max_priority,
            "epoch": self._epoch,
            "priority_updates_ignored": self._priority_updates_ignored,
        }
        return encode_state(
            self._config(),
            self._frame_spec,
            counters,
            self.rng,
            self._slots,
            self.sampler.leaves(),
            self._blobs,
            self._streams,
        )

    def load_state_dict(self, state: dict) -> None:
        """Become the buffer ``state`` (from :meth:`state_dict`) was taken from, one epoch on.

        Everything is restored exactly except the epoch, which becomes the snapshot's + 1:
        ids issued from now on differ from any the snapshot's buffer, or another buffer
        restored from the same state earlier, could have issued after the snapshot, so long
        as each restore's epoch is recorded before it issues ids (``ReplayServer`` writes a
        snapshot right after restoring). Raises SnapshotError, changing nothing, when
        ``state`` is malformed or comes from a buffer with other settings (capacity, stack
        size, n, gamma, alpha, priority eps, prioritized) or, once this buffer holds frames,
        another frame format.
        """
        new = decode_state(state, self._config(), self._frame_spec)
        epoch = new.counters["epoch"] + 1
        if epoch > MAX_EPOCH:
            raise SnapshotError(f"snapshot epoch {epoch - 1} leaves no room for another")
        # Nothing is mutated above this line; nothing below can fail on a checked state.
        self._slots = new.slots
        self._blobs = new.blobs
        self._blob_bytes = _nbytes(new.blobs)
        self.sampler.load(new.leaves, new.counters["max_priority"])
        self._frame_spec = new.frame_spec
        self._streams = new.streams
        self._records_added = new.counters["records_added"]
        self._items_dropped = new.counters["items_dropped"]
        self._records_lost = new.counters["records_lost"]
        self._priority_updates_ignored = new.counters["priority_updates_ignored"]
        self._epoch = epoch
        self.rng = new.rng
        self._consumers = {}  # every consumer's mirror must start over


def _nbytes(blobs) -> int:
    """Bytes of a list of blobs (None: an empty slot)."""
    return sum(len(b) for b in blobs if b is not None)
