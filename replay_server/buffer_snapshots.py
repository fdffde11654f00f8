"""The snapshot side of :class:`replay_server.buffer.ReplayBuffer`: its state as a tree and back.

``replay_server.state`` builds and checks the tree, ``replay_server.snapshot`` writes and
reads it. A restore moves the buffer to the next id epoch (``replay_server.ids``).
"""

from __future__ import annotations

from replay_server.ids import MAX_EPOCH
from replay_server.snapshot import SnapshotError
from replay_server.state import CONFIG_FIELDS, decode_state, encode_state


class BufferSnapshots:
    """Mixed into ReplayBuffer; uses its slots, frames, sampler, streams and counters."""

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
            self._frames.spec,
            counters,
            self.rng,
            self._slots,
            self.sampler.leaves(),
            self._frames.blobs,
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
        new = decode_state(state, self._config(), self._frames.spec)
        epoch = new.counters["epoch"] + 1
        if epoch > MAX_EPOCH:
            raise SnapshotError(f"snapshot epoch {epoch - 1} leaves no room for another")
        # Nothing is mutated above this line; nothing below can fail on a checked state.
        self._slots = new.slots
        self._frames.load(new.blobs, new.frame_spec)
        self.sampler.load(new.leaves, new.counters["max_priority"])
        self._streams = new.streams
        self._records_added = new.counters["records_added"]
        self._items_dropped = new.counters["items_dropped"]
        self._records_lost = new.counters["records_lost"]
        self._priority_updates_ignored = new.counters["priority_updates_ignored"]
        self._epoch = epoch
        self.rng = new.rng
        self._answer_ends.clear()  # a new epoch: every mirror starts over
