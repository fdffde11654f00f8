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
``u >= records_added - capacity``. A frame is kept once (``replay_server.frames``);
stacked observations are rebuilt at sample time from ``stack_uids``, the uids of the S
frames of a record's stack. The mirror feed's answers are ``replay_server.mirror_protocol``.

Items. A record with an action becomes a sampleable item once its n-step window is complete
(return, discount and bootstrap record as in ``common.nstep``) and every frame of its stack
is still stored. The bootstrap record is newer than the item and its stack reaches back no
further than the item's stack, so that one condition covers ``next_obs`` too. A segment cut
short by a new ``first`` record (actor restart) drops its incomplete items.

Ids. An item's id is ``epoch << 40 | uid`` (``replay_server.ids``): the epoch moves on at
each restore, so an id is never issued twice.
"""

from __future__ import annotations

import numpy as np

from common.messages import NO_ACTION, IndexBatch, SampleBatch, StepBatch
from replay_server.accumulator import Accumulated, StreamState, accumulate, admit, check_grammar
from replay_server.buffer_snapshots import BufferSnapshots
from replay_server.frames import FrameStore
from replay_server.ids import ID_EPOCH_SHIFT, MAX_EPOCH, UID_MASK, id_parts, item_ids
from replay_server.mirror_protocol import MAX_DELTA_FRAMES, AnswerEnds, FeedPosition, sample_indices
from replay_server.sampler import PrioritySampler
from replay_server.slots import allocate_slots

__all__ = ["ID_EPOCH_SHIFT", "MAX_DELTA_FRAMES", "MAX_EPOCH", "ReplayBuffer", "id_parts", "item_ids"]


class ReplayBuffer(BufferSnapshots):
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
        self._frames = FrameStore(self.capacity)
        self._streams: dict[int, StreamState] = {}
        self._records_added = 0
        self._items_dropped = 0
        self._records_lost = 0  # records streams sent that never arrived (gaps in seq)
        self._priority_updates_ignored = 0
        self._epoch = 0
        #: where each mirror's last answer ended: a hint its next request may name (mirror_protocol)
        self._answer_ends = AnswerEnds()

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

    @property
    def lowest_stored_uid(self) -> int:
        return max(self._records_added - self.capacity, 0)

    @property
    def frame_spec(self) -> tuple[str, tuple[int, ...], str] | None:
        """(codec, shape, dtype) of the stored frames; None before the first."""
        return self._frames.spec

    @property
    def _blobs(self) -> list[bytes | None]:
        """The compressed frame of each slot (None: empty); for tests and tools."""
        return self._frames.blobs

    def stored_blobs(self, lo: int, hi: int) -> list[bytes]:
        """The compressed frames of the stored uids ``[lo, hi)``, oldest first."""
        return self._frames.between(lo, hi)

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
            "frame_bytes": self._frames.nbytes,
        }

    # ------------------------------------------------------------------ insertion

    def add(self, batch: StepBatch) -> int:
        """Store all records of ``batch``; returns how many were stored.

        Raises MessageError (storing nothing) when the batch breaks the schema, the stream
        grammar given what this stream sent before, or the frame format of earlier batches.
        """
        batch.validate(check_frames=False)
        spec = (batch.codec, tuple(batch.frame_shape), batch.frame_dtype)
        self._frames.check(spec)
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
        if self._records_added + m > UID_MASK:
            raise OverflowError(f"replay uids would pass 2**{ID_EPOCH_SHIFT}")
        # Nothing is mutated above this line.
        self._frames.spec = spec
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
        cap, sl = self.capacity, self._slots
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
        self._frames.write(int(uids[0]), batch.frame_blobs[part])
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

    def draw(self, batch_size: int, beta: float = 0.4) -> tuple[np.ndarray, np.ndarray]:
        """Slots ``int64[B]`` drawn with replacement (proportional to priority, stratified, or
        uniform) and their importance weights ``float64[B]``: the one draw of both feeds.

        Raises ValueError if no item is sampleable.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if beta < 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        n_items = self.num_sampleable
        if n_items == 0:
            raise ValueError("no sampleable items in the replay buffer")
        return self.sampler.draw(self.rng, batch_size, beta, n_items)

    def sample(self, batch_size: int, beta: float = 0.4) -> SampleBatch:
        """``batch_size`` items (:meth:`draw`) with their stacks rebuilt."""
        return self._gather(*self.draw(batch_size, beta))

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
        position: FeedPosition | None = None,
        draw: bool = True,
        max_delta_frames: int = MAX_DELTA_FRAMES,
    ) -> IndexBatch:
        """A sample as frame uids for a mirror at ``position`` (``replay_server.mirror_protocol``)."""
        return sample_indices(self, self._answer_ends, batch_size, beta, position, draw, max_delta_frames)

    def item_fields(self, slots: np.ndarray) -> dict:
        """Item slots ``int64[B]`` as ids, the frame uids of their stacks (``obs_uids``,
        ``next_uids``: ``int64[B, S]``), actions, returns and discounts."""
        sl = self._slots
        return {
            "ids": item_ids(sl["epoch"][slots], sl["uid"][slots]),
            "obs_uids": sl["stack_uids"][slots],
            "next_uids": sl["stack_uids"][sl["boot_uid"][slots] % self.capacity],
            "actions": sl["action"][slots].astype(np.int64),
            "returns": sl["return"][slots],
            "discounts": sl["discount"][slots],
        }

    def _locate(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Slots ``int64[K]`` of item ids, and which ids name a sampleable item of their epoch."""
        ids = np.asarray(ids, dtype=np.int64).ravel()
        epochs, uids = id_parts(ids)
        slots = uids % self.capacity
        ok = (ids >= 0) & (uids >= self.lowest_stored_uid) & (uids < self._records_added)
        ok &= self._slots["sampleable"][slots] & (self._slots["epoch"][slots] == epochs)
        return slots, ok

    def _gather(self, slots: np.ndarray, weights: np.ndarray) -> SampleBatch:
        """Rebuild the stacks of item slots ``int64[B]``; each distinct frame is decompressed once."""
        items = self.item_fields(slots)
        wanted = np.concatenate([items["obs_uids"].ravel(), items["next_uids"].ravel()])
        out = self._frames.frames(wanted).reshape(2, slots.size, self.stack_size, *self._frames.spec[1])
        return SampleBatch(
            ids=items["ids"],
            obs=out[0],
            actions=items["actions"],
            returns=items["returns"],
            discounts=items["discounts"],
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
