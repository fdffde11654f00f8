"""The replay buffer: frames stored once, n-step transitions, prioritized sampling.

Plain Python and numpy, no Ray (``replay_server/remote.py`` is the Ray shell).

Storage. Every record (one frame plus the transition leaving it, see the stream grammar in
``common.messages``) gets a global uid, the insertion counter. It lives in slot
``uid % capacity`` until ``capacity`` newer records have arrived (FIFO), so uid ``u`` is
stored iff ``u >= records_added - capacity``. A frame is kept once, as the compressed bytes
that arrived, and is decompressed only when a sample needs it; stacked observations are
rebuilt at sample time from ``stack_uids``, the uids of the S frames of a record's stack.

Items. A record with an action at time t becomes a sampleable item once its n-step window
is complete: with k = min(n, steps until the episode ended),

    return   R = sum_{j<k} gamma^j r_{t+j}
    discount   = gamma^k * (1 - terminated_{t+k-1})
    bootstrap  = the record at t+k (for an ended episode, its final-frame record).

A truncated episode keeps the discount gamma^k: the learner bootstraps from the final
frame, truncation is never treated as terminal. The window completes when record t+n of
the same segment arrives or when the episode's final-frame record arrives; a segment cut
short by a new ``first`` record (actor restart) drops its incomplete items.

An item is sampleable iff its window is complete and every frame of its stack is still
stored. The bootstrap record is newer than the item and its stack reaches back no further
than the item's stack, so that one condition covers ``next_obs`` too.

Priorities. The sum tree holds ``priority ** alpha`` for sampleable items and 0 for all
other slots. A new item starts at ``batch.priorities[t] + priority_eps`` when the actor sent
priorities, else at the running max priority (starting at 1). Sampling is stratified;
importance weights are ``w_i = (N * P(i)) ** -beta / max_j w_j`` with N the number of
sampleable items.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from common.messages import CODECS, FRAME_DTYPES, NO_ACTION, MessageError, SampleBatch, StepBatch, decompress_frames
from replay_server.snapshot import BlobList, SnapshotError
from replay_server.sum_tree import SumTree

#: Frames decompressed per call at sample time (see ReplayBuffer._gather).
_DECOMPRESS_CHUNK = 128
#: Per-slot arrays of a ReplayBuffer: attribute, dtype, trailing shape ("S": stack size).
_SLOT_ARRAYS = {
    "_uid": (np.int64, ()),
    "_stack_uids": (np.int64, ("S",)),
    "_next_uid": (np.int64, ()),
    "_action": (np.int32, ()),
    "_reward": (np.float32, ()),
    "_terminated": (np.bool_, ()),
    "_init_priority": (np.float32, ()),
    "_return": (np.float32, ()),
    "_discount": (np.float32, ()),
    "_boot_uid": (np.int64, ()),
    "_sampleable": (np.bool_, ()),
}
#: Settings a snapshot must share with the buffer it is loaded into.
_CONFIG_FIELDS = ("capacity", "stack_size", "n_step", "gamma", "prioritized", "alpha", "priority_eps")


@dataclasses.dataclass
class _StreamState:
    """What the buffer remembers of one actor stream between batches."""

    last_uid: int
    last_final: bool  # the last record was a final-frame record (next must be first=True)
    last_ended: bool  # the last record terminated or truncated (next must be its final frame)
    last_stack: np.ndarray  # int64[S], stack_uids of the last record
    # int64[<= n]: uids of the open segment's tail whose n-step window is incomplete, in
    # time order. Evicted uids may linger at its front until the stream's next batch.
    pending: np.ndarray
    next_seq: int = 0  # the seq the stream's next batch should carry; anything else is a gap


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

        cap, s = self.capacity, self.stack_size
        # Per slot. A slot's data is meaningful only while its uid is stored.
        self._uid = np.full(cap, -1, dtype=np.int64)
        self._stack_uids = np.zeros((cap, s), dtype=np.int64)  # oldest first, own frame last
        self._next_uid = np.full(cap, -1, dtype=np.int64)  # next record of the segment
        self._action = np.zeros(cap, dtype=np.int32)
        self._reward = np.zeros(cap, dtype=np.float32)
        self._terminated = np.zeros(cap, dtype=np.bool_)
        self._init_priority = np.full(cap, np.nan, dtype=np.float32)  # NaN: none sent
        self._return = np.zeros(cap, dtype=np.float32)
        self._discount = np.zeros(cap, dtype=np.float32)
        self._boot_uid = np.full(cap, -1, dtype=np.int64)
        self._sampleable = np.zeros(cap, dtype=np.bool_)
        self._blobs: list[bytes | None] = [None] * cap
        self._tree = SumTree(cap)

        self._frame_spec: tuple[str, tuple[int, ...], str] | None = None  # codec, shape, dtype
        self._streams: dict[int, _StreamState] = {}
        self._records_added = 0
        self._items_dropped = 0
        self._records_lost = 0  # records streams sent that never arrived (gaps in seq)
        self._max_priority = 1.0
        self._gamma_pow = self.gamma ** np.arange(self.n_step + 1, dtype=np.float64)

    # ------------------------------------------------------------------ queries

    def __len__(self) -> int:
        """Records currently stored (<= capacity)."""
        return min(self._records_added, self.capacity)

    @property
    def num_sampleable(self) -> int:
        """Items with a complete n-step window whose frames are all still stored."""
        return int(np.count_nonzero(self._sampleable))

    @property
    def records_added(self) -> int:
        return self._records_added

    def _lowest_stored_uid(self) -> int:
        return max(self._records_added - self.capacity, 0)

    def sampleable_ids(self) -> np.ndarray:
        """Uids ``int64[N]`` of all sampleable items, ascending."""
        return np.sort(self._uid[self._sampleable])

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
        lost = 0
        if (state.next_seq if state is not None else 0) != batch.seq and not (state is None and batch.first[0]):
            # A gap: records of this stream never arrived (this replay came back from a
            # snapshot, or messages were lost) or the actor started over. What follows
            # cannot continue the stored segment, so it starts a new one here; a leading
            # final-frame record belongs to an episode whose end is gone and is dropped.
            lost = max(batch.seq - (state.next_seq if state is not None else 0), 0)
            batch, dropped = _restart_segment(batch)
            lost += dropped
            if batch is None:
                self._records_lost += lost
                if state is not None:
                    state.next_seq = next_seq
                return 0
        final = batch.actions == NO_ACTION
        ended = batch.terminated | batch.truncated
        self._check_grammar(batch.stream_id, state, batch.first, final, ended)
        # Nothing is mutated above this line.
        self._frame_spec = spec
        self._records_lost += lost
        m = len(batch)
        for lo in range(0, m, self.capacity):  # a batch longer than the buffer goes in pieces
            hi = min(lo + self.capacity, m)
            self._add_records(
                batch.stream_id,
                batch.frame_blobs[lo:hi],
                batch.actions[lo:hi],
                batch.rewards[lo:hi],
                batch.terminated[lo:hi],
                batch.first[lo:hi],
                final[lo:hi],
                ended[lo:hi],
                None if batch.priorities is None else batch.priorities[lo:hi],
            )
        self._streams[batch.stream_id].next_seq = next_seq
        return m

    @staticmethod
    def _check_grammar(stream_id, state, first, final, ended) -> None:
        """The grammar checks that need the stream's history, or that validate() leaves out.

        ``StepBatch.validate`` already enforces, inside the batch: an end is followed by a
        final-frame record, and a final-frame record by a first record. A ``first`` record
        is always accepted (an actor that restarts may cut a segment anywhere).
        """
        if np.any(final & first):
            raise MessageError(f"stream {stream_id}: a final-frame record (action -1) has first=True")
        bad = np.flatnonzero(final[1:] & ~ended[:-1])
        if bad.size:
            raise MessageError(f"stream {stream_id}: final-frame record at index {bad[0] + 1} does not follow an episode end")
        if first[0]:
            return
        if state is None:
            raise MessageError(f"stream {stream_id}: never seen before, but its first record has first=False")
        if state.last_final:
            raise MessageError(f"stream {stream_id}: record after a final-frame record has first=False")
        if state.last_ended and not final[0]:
            raise MessageError(f"stream {stream_id}: the episode end in the previous batch is not followed by its final-frame record")
        if final[0] and not state.last_ended:
            raise MessageError(f"stream {stream_id}: final-frame record at index 0 does not follow an episode end")

    def _add_records(self, stream_id, blobs, actions, rewards, terminated, first, final, ended, priorities) -> None:
        """Insert M <= capacity records of one stream (already validated), then complete windows."""
        cap, s, n = self.capacity, self.stack_size, self.n_step
        m = len(blobs)
        a = self._records_added
        uids = np.arange(a, a + m, dtype=np.int64)
        slots = uids % cap
        new_lo = a + m - cap  # lowest uid still stored after this insert (may be < 0)

        # Tree writes of this insert, applied at the end in one update (last write wins):
        # zeros for items that stop being sampleable, then the new items' priorities.
        tree_slots = [np.empty(0, dtype=np.int64)]
        tree_values = [np.empty(0, dtype=np.float64)]
        if new_lo > 0:
            lost = self._evict(np.arange(max(a - cap, 0), new_lo, dtype=np.int64), new_lo)
            tree_slots.append(lost)
            tree_values.append(np.zeros(lost.size))

        state = self._streams.get(stream_id)
        continuing = not first[0]  # grammar checks guarantee `state` exists then
        if continuing:
            pending = state.pending
            prev_stack = state.last_stack
        else:
            if state is not None:
                # Actor restart: the open segment's incomplete windows will never complete.
                self._items_dropped += int(np.count_nonzero(state.pending >= max(new_lo, 0)))
            pending = np.empty(0, dtype=np.int64)
            prev_stack = np.zeros(s, dtype=np.int64)  # never read: every stack starts at index 0 or later
        # Rewards/flags of pending records are read before their slots could be reused;
        # evicted pending records only hold positions (no window of a stored item needs them).
        pend_slots = pending % cap
        ctx_rewards = np.concatenate([self._reward[pend_slots], rewards]).astype(np.float64)
        ctx_terminated = np.concatenate([self._terminated[pend_slots], terminated])

        # ---- stacks: uids of the S frames ending at each record, clamped to its segment start
        idx = np.arange(m)
        seg_start = np.maximum.accumulate(np.where(first, idx, -1))  # -1: segment continues from before
        ext = np.concatenate([prev_stack, uids])  # ext[s + i] is record i; ext[:s] the previous stack
        floor = np.where(seg_start >= 0, seg_start + s, 0)
        pos = (idx + s)[:, None] - np.arange(s - 1, -1, -1)[None, :]
        stacks = ext[np.maximum(pos, floor[:, None])]

        # ---- write the records
        self._uid[slots] = uids
        self._stack_uids[slots] = stacks
        self._action[slots] = actions
        self._reward[slots] = rewards
        self._terminated[slots] = terminated
        self._init_priority[slots] = np.nan if priorities is None else priorities
        self._return[slots] = 0
        self._discount[slots] = 0
        self._boot_uid[slots] = -1
        self._sampleable[slots] = False  # reused slots: their tree leaves are among `lost`, zeroed below
        nxt = np.full(m, -1, dtype=np.int64)
        nxt[:-1] = np.where(first[1:], -1, uids[1:])
        self._next_uid[slots] = nxt
        if continuing and state.last_uid >= new_lo:
            self._next_uid[state.last_uid % cap] = uids[0]
        s0 = a % cap
        if s0 + m <= cap:
            self._blobs[s0 : s0 + m] = blobs
        else:
            split = cap - s0
            self._blobs[s0:] = blobs[:split]
            self._blobs[: m - split] = blobs[split:]
        self._records_added = a + m

        # ---- n-step windows over the context: pending records of the open segment, then this batch
        p = len(pending)
        ctx_uid = np.concatenate([pending, uids])
        ctx_first = np.concatenate([np.zeros(p, dtype=np.bool_), first])
        ctx_final = np.concatenate([np.zeros(p, dtype=np.bool_), final])
        length = p + m
        items = np.flatnonzero(~ctx_final & (ctx_uid >= new_lo))
        starts = np.flatnonzero(ctx_first)
        seg_end = np.append(starts, length)[np.searchsorted(starts, items, side="right")]
        full = items + n < seg_end  # record t+n of the segment is here
        ends_here = ctx_final[seg_end - 1]  # the segment's final-frame record is here
        complete = full | ends_here
        closed = seg_end < length  # a later first record cut the segment short
        self._items_dropped += int(np.count_nonzero(~complete & closed))
        new_pending = ctx_uid[items[~complete & ~closed]]

        done = items[complete]
        if done.size:
            boot = np.where(full[complete], done + n, seg_end[complete] - 1)
            k = boot - done
            j = np.arange(n)
            window = np.concatenate([ctx_rewards, np.zeros(n)])[done[:, None] + j]
            ret = np.sum(np.where(j < k[:, None], window * self._gamma_pow[:n], 0.0), axis=1)
            disc = self._gamma_pow[k] * ~ctx_terminated[boot - 1]
            done_slots = ctx_uid[done] % cap
            self._return[done_slots] = ret
            self._discount[done_slots] = disc
            self._boot_uid[done_slots] = ctx_uid[boot]
            ok = done_slots[self._stack_uids[done_slots, 0] >= new_lo]
            if ok.size:
                self._sampleable[ok] = True
                if self.prioritized:
                    prio = self._init_priority[ok].astype(np.float64) + self.priority_eps
                    sent = ~np.isnan(prio)
                    if sent.any():
                        self._max_priority = max(self._max_priority, float(prio[sent].max()))
                    prio[~sent] = self._max_priority
                    tree_values.append(prio**self.alpha)
                else:
                    tree_values.append(np.ones(ok.size))
                tree_slots.append(ok)
        if len(tree_slots) > 1:
            self._tree.update(np.concatenate(tree_slots), np.concatenate(tree_values))

        last = m - 1
        self._streams[stream_id] = _StreamState(
            last_uid=int(uids[last]),
            last_final=bool(final[last]),
            last_ended=bool(ended[last]),
            last_stack=stacks[last].copy(),
            pending=new_pending,
        )

    def _evict(self, evicted: np.ndarray, new_lo: int) -> np.ndarray:
        """Make uids ``evicted`` (about to be overwritten) and every item whose stack holds one unsampleable.

        Stacks reach back at most S-1 records within a segment, so the casualties are the
        next S-1 records of each evicted one's segment: follow ``next_uid`` S-1 hops
        (a loop over hops, vectorized over records). Call before the slots are reused.
        Returns the slots ``int64[K]`` that were sampleable; the caller zeroes their tree leaves.
        """
        cap = self.capacity
        slots = evicted % cap
        hit = slots[self._sampleable[slots]]
        succ = self._next_uid[slots]
        succ = succ[succ >= new_lo]  # -1 (none) or evicted itself: those need no hop from here
        for _ in range(self.stack_size - 1):
            if succ.size == 0:
                break
            succ_slots = succ % cap
            hit = np.concatenate([hit, succ_slots[self._sampleable[succ_slots]]])
            succ = self._next_uid[succ_slots]
            succ = succ[succ >= 0]
        self._sampleable[hit] = False
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
        total = self._tree.total()
        # Stratified: one uniform draw in each of batch_size equal slices of [0, total).
        targets = (np.arange(batch_size) + self.rng.random(batch_size)) * (total / batch_size)
        slots = self._tree.find(targets)
        if self.prioritized:
            prob = self._tree.get(slots) / total
            weights = (n_items * prob) ** -beta
            weights /= weights.max()
        else:
            weights = np.ones(batch_size)
        return self._gather(slots, weights)

    def gather(self, ids: np.ndarray) -> SampleBatch:
        """The items ``int64[B]`` (all sampleable, else ValueError) with weights 1; for tests and tools."""
        ids = np.asarray(ids, dtype=np.int64).ravel()
        slots = ids % self.capacity
        if not np.all((ids >= self._lowest_stored_uid()) & (ids < self._records_added) & self._sampleable[slots]):
            raise ValueError("gather: some ids are not sampleable")
        return self._gather(slots, np.ones(ids.size))

    def _gather(self, slots: np.ndarray, weights: np.ndarray) -> SampleBatch:
        """Rebuild the stacks of item slots ``int64[B]``; each distinct frame is decompressed once."""
        cap, s = self.capacity, self.stack_size
        codec, shape, dtype = self._frame_spec
        b = slots.size
        obs_uids = self._stack_uids[slots]  # int64[B, S]
        next_uids = self._stack_uids[self._boot_uid[slots] % cap]  # int64[B, S]
        wanted = np.concatenate([obs_uids.ravel(), next_uids.ravel()])
        uniq, first, inverse = np.unique(wanted, return_index=True, return_inverse=True)
        out = np.empty((2 * b * s, *shape), dtype=dtype)  # obs stacks, then next_obs stacks
        blobs = self._blobs
        uniq_blobs = [blobs[u] for u in (uniq % cap).tolist()]
        # Decompress in chunks: holding thousands of fresh frames at once costs a page fault
        # per frame, while chunk after chunk reuses the same (cache-warm) heap memory.
        for lo in range(0, len(uniq_blobs), _DECOMPRESS_CHUNK):
            hi = lo + _DECOMPRESS_CHUNK
            out[first[lo:hi]] = decompress_frames(uniq_blobs[lo:hi], codec, shape, dtype)
        repeat = np.flatnonzero(first[inverse] != np.arange(wanted.size))
        out[repeat] = out[first[inverse[repeat]]]
        out = out.reshape(2, b, s, *shape)
        return SampleBatch(
            ids=self._uid[slots],
            obs=out[0],
            actions=self._action[slots].astype(np.int64),
            returns=self._return[slots],
            discounts=self._discount[slots],
            next_obs=out[1],
            weights=np.asarray(weights, dtype=np.float32),
        )

    # ------------------------------------------------------------------ priorities

    def update_priorities(self, ids: np.ndarray, priorities: np.ndarray) -> int:
        """Set the priorities of items ``int64[K]`` to ``float[K]``; returns how many were applied.

        The tree gets ``(p + priority_eps) ** alpha``. Ids no longer stored or not
        sampleable, and non-finite or negative priorities, are skipped. With uniform
        sampling nothing changes, but the count still says how many ids were valid.
        """
        ids = np.asarray(ids, dtype=np.int64).ravel()
        prio = np.asarray(priorities, dtype=np.float64).ravel()
        if ids.shape != prio.shape:
            raise ValueError(f"ids {ids.shape} and priorities {prio.shape} differ in shape")
        slots = ids % self.capacity
        ok = (ids >= self._lowest_stored_uid()) & (ids < self._records_added) & self._sampleable[slots]
        ok &= np.isfinite(prio) & (prio >= 0)
        count = int(np.count_nonzero(ok))
        if count and self.prioritized:
            p = prio[ok] + self.priority_eps
            self._max_priority = max(self._max_priority, float(p.max()))
            self._tree.update(slots[ok], p**self.alpha)
        return count

    # ------------------------------------------------------------------ snapshots

    def state_dict(self) -> dict:
        """The whole state as a tree for ``replay_server.snapshot.write_snapshot``.

        Arrays are the live ones, not copies (a 1M replay holds ~80 MB of them, and the
        frame blobs are shared, never copied): write the state out before the next add,
        sample or priority update.
        """
        streams = list(self._streams.items())
        k = len(streams)
        pending = [st.pending for _, st in streams]
        return {
            "config": {name: getattr(self, name) for name in _CONFIG_FIELDS},
            "frame_spec": None if self._frame_spec is None else
            {"codec": self._frame_spec[0], "shape": list(self._frame_spec[1]), "dtype": self._frame_spec[2]},
            "counters": {"records_added": self._records_added, "items_dropped": self._items_dropped,
                         "records_lost": self._records_lost,
                         "max_priority": self._max_priority},
            "rng": _encode_rng_state(self.rng.bit_generator.state),
            "slots": {name.lstrip("_"): getattr(self, name) for name in _SLOT_ARRAYS},
            "tree_leaves": self._tree.get(np.arange(self.capacity)),
            "blobs": BlobList(self._blobs),
            "streams": {
                "stream_id": np.fromiter((sid for sid, _ in streams), np.int64, k),
                "last_uid": np.fromiter((st.last_uid for _, st in streams), np.int64, k),
                "last_final": np.fromiter((st.last_final for _, st in streams), np.bool_, k),
                "last_ended": np.fromiter((st.last_ended for _, st in streams), np.bool_, k),
                "last_stack": np.stack([st.last_stack for _, st in streams]) if k else np.zeros((0, self.stack_size), np.int64),
                "pending_len": np.fromiter((p.size for p in pending), np.int64, k),
                "next_seq": np.fromiter((st.next_seq for _, st in streams), np.int64, k),
                "pending": np.concatenate(pending) if k else np.zeros(0, np.int64),
            },
        }

    def load_state_dict(self, state: dict) -> None:
        """Become exactly the buffer ``state`` (from :meth:`state_dict`) was taken from.

        Raises SnapshotError, changing nothing, when ``state`` is malformed or comes from a
        buffer with other settings (capacity, stack size, n, gamma, alpha, priority eps,
        prioritized) or, once this buffer holds frames, another frame format.
        """
        try:
            new = self._check_state(state)
        except SnapshotError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
            raise SnapshotError(f"malformed replay state: {type(e).__name__}: {e}") from None
        # Nothing is mutated above this line; nothing below can fail on a checked state.
        for name, arr in new["slots"].items():
            setattr(self, name, arr)
        self._blobs = new["blobs"]
        tree = SumTree(self.capacity)
        tree.update(np.arange(self.capacity), new["tree_leaves"])
        self._tree = tree
        self._frame_spec = new["frame_spec"]
        self._streams = new["streams"]
        self._records_added, self._items_dropped, self._records_lost, self._max_priority = new["counters"]
        self.rng = new["rng"]

    def _check_state(self, state: dict) -> dict:
        """The checked, converted parts of ``state``; raises on anything out of place."""
        cap, s = self.capacity, self.stack_size
        config = state["config"]
        for name in _CONFIG_FIELDS:
            theirs, ours = config[name], getattr(self, name)
            if theirs != ours or type(theirs) is not type(ours):
                raise SnapshotError(f"snapshot was taken with {name}={theirs!r} but this replay has {name}={ours!r}")
        spec = state["frame_spec"]
        if spec is not None:
            codec, shape, dtype = spec["codec"], spec["shape"], spec["dtype"]
            if codec not in CODECS or dtype not in FRAME_DTYPES or not isinstance(shape, list) \
                    or not shape or not all(isinstance(d, int) and d > 0 for d in shape):
                raise SnapshotError(f"snapshot frame format {spec!r} is not valid")
            spec = (codec, tuple(shape), dtype)
        if self._frame_spec is not None and spec is not None and spec != self._frame_spec:
            raise SnapshotError(f"snapshot holds frames {spec} (codec, shape, dtype) but this replay stores {self._frame_spec}")

        counters = state["counters"]
        records_added, items_dropped = counters["records_added"], counters["items_dropped"]
        records_lost = counters["records_lost"]
        max_priority = counters["max_priority"]
        if not (_is_count(records_added) and _is_count(items_dropped) and _is_count(records_lost)
                and isinstance(max_priority, float) and np.isfinite(max_priority) and max_priority > 0):
            raise SnapshotError(f"snapshot counters {counters!r} are not valid")

        slots = {}
        for name, (dtype, trail) in _SLOT_ARRAYS.items():
            arr = _checked_array(state["slots"], name.lstrip("_"), dtype, (cap, *(s for _ in trail)))
            slots[name] = arr
        leaves = _checked_array(state, "tree_leaves", np.float64, (cap,))
        if not (np.all(np.isfinite(leaves)) and np.all(leaves >= 0)):
            raise SnapshotError("snapshot priorities are not all finite and >= 0")
        blobs = state["blobs"]
        if not isinstance(blobs, list) or len(blobs) != cap or not all(b is None or isinstance(b, bytes) for b in blobs):
            raise SnapshotError(f"snapshot frame blobs are not {cap} bytes-or-None")
        if spec is None and records_added > 0:
            raise SnapshotError("snapshot holds records but no frame format")

        st = state["streams"]
        sids = _checked_array(st, "stream_id", np.int64, None)
        k = sids.size
        last_uid = _checked_array(st, "last_uid", np.int64, (k,))
        last_final = _checked_array(st, "last_final", np.bool_, (k,))
        last_ended = _checked_array(st, "last_ended", np.bool_, (k,))
        last_stack = _checked_array(st, "last_stack", np.int64, (k, s))
        pending_len = _checked_array(st, "pending_len", np.int64, (k,))
        next_seq = _checked_array(st, "next_seq", np.int64, (k,))
        pending = _checked_array(st, "pending", np.int64, None)
        if pending.ndim != 1 or np.any(pending_len < 0) or np.any(pending_len > self.n_step) \
                or int(pending_len.sum()) != pending.size or np.unique(sids).size != k:
            raise SnapshotError("snapshot stream states are inconsistent")
        if np.any(next_seq < 0):
            raise SnapshotError("snapshot stream states have a negative next_seq")
        if np.any(last_uid >= records_added) or np.any(pending >= records_added) or np.any(pending < 0):
            raise SnapshotError("snapshot stream states refer to records never added")
        streams = {}
        bounds = np.concatenate([[0], np.cumsum(pending_len)])
        for i in range(k):
            streams[int(sids[i])] = _StreamState(
                last_uid=int(last_uid[i]), last_final=bool(last_final[i]), last_ended=bool(last_ended[i]),
                last_stack=last_stack[i].copy(), pending=pending[bounds[i] : bounds[i + 1]].copy(),
                next_seq=int(next_seq[i]))
        return {"slots": slots, "tree_leaves": leaves, "blobs": blobs, "frame_spec": spec, "streams": streams,
                "counters": (records_added, items_dropped, records_lost, max_priority), "rng": _decode_rng(state["rng"])}


def _restart_segment(batch: StepBatch) -> tuple[StepBatch | None, int]:
    """``batch`` made to start a new segment (a leading final-frame record dropped, then
    ``first[0] = True``; None if nothing is left) and the number of records dropped."""
    dropped = 0
    if batch.actions[0] == NO_ACTION:
        dropped = 1
        if len(batch) == 1:
            return None, dropped
        fields = {f: getattr(batch, f)[1:] for f in ("actions", "rewards", "terminated", "truncated", "first", "policy_version")}
        fields["priorities"] = None if batch.priorities is None else batch.priorities[1:]
        batch = dataclasses.replace(batch, frame_blobs=batch.frame_blobs[1:], seq=batch.seq + 1, **fields)
    if not batch.first[0]:
        first = batch.first.copy()
        first[0] = True
        batch = dataclasses.replace(batch, first=first)
    return batch, dropped


def _is_count(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def _checked_array(parent: dict, name: str, dtype, shape) -> np.ndarray:
    arr = parent[name]
    if not isinstance(arr, np.ndarray) or arr.dtype != np.dtype(dtype) or (shape is not None and arr.shape != shape):
        got = f"{arr.dtype}{list(arr.shape)}" if isinstance(arr, np.ndarray) else type(arr).__name__
        want = f"{np.dtype(dtype)}{list(shape) if shape is not None else '[...]'}"
        raise SnapshotError(f"snapshot array {name}: expected {want}, got {got}")
    if not arr.flags.writeable:
        arr = arr.copy()
    return arr


#: Bit generators a snapshot may name (numpy's own; default_rng uses PCG64).
_BIT_GENERATORS = ("PCG64", "PCG64DXSM", "SFC64", "Philox", "MT19937")


def _encode_rng_state(node):
    """A bit generator's state with its 128-bit ints as hex strings (msgpack stops at 64 bits)."""
    if isinstance(node, dict):
        return {k: _encode_rng_state(v) for k, v in node.items()}
    if isinstance(node, int) and not isinstance(node, bool):
        return {"int": hex(node)}
    return node


def _decode_rng_state(node):
    if isinstance(node, dict):
        if set(node) == {"int"}:
            return int(node["int"], 16)
        return {k: _decode_rng_state(v) for k, v in node.items()}
    return node


def _decode_rng(encoded) -> np.random.Generator:
    state = _decode_rng_state(encoded)
    name = state["bit_generator"]
    if name not in _BIT_GENERATORS:
        raise SnapshotError(f"snapshot rng {name!r} is not one of {_BIT_GENERATORS}")
    bit_generator = getattr(np.random, name)()
    bit_generator.state = state
    return np.random.Generator(bit_generator)
