"""The replay's per-slot arrays, from one table: allocation and snapshots read the same list.

Slot ``uid % capacity`` holds record ``uid`` while it is stored; a slot's values mean
something only then. ``S`` in a shape is the stack size.
"""

from __future__ import annotations

import numpy as np

#: name, dtype, trailing shape, fill value of a fresh slot
SLOT_FIELDS = (
    ("uid", np.int64, (), -1),  # the record's uid (its insertion counter)
    ("epoch", np.int64, (), 0),  # the replay's epoch when the item completed (high bits of its id)
    ("stack_uids", np.int64, ("S",), 0),  # its stack, oldest first, own frame last
    ("next_uid", np.int64, (), -1),  # the next record of its segment (-1: none yet)
    ("action", np.int32, (), 0),
    ("reward", np.float32, (), 0),
    ("terminated", np.bool_, (), False),
    ("init_priority", np.float32, (), np.nan),  # sent by the actor; NaN: none sent
    ("return", np.float32, (), 0),
    ("discount", np.float32, (), 0),
    ("boot_uid", np.int64, (), -1),  # the record whose stack is next_obs
    ("sampleable", np.bool_, (), False),  # window complete and every frame of its stack stored
)


def slot_shape(trail: tuple, capacity: int, stack_size: int) -> tuple[int, ...]:
    return (capacity, *(stack_size for _ in trail))


def allocate_slots(capacity: int, stack_size: int) -> dict[str, np.ndarray]:
    """Every slot array of a replay of ``capacity`` records, filled as fresh."""
    return {
        name: np.full(slot_shape(trail, capacity, stack_size), fill, dtype=dtype)
        for name, dtype, trail, fill in SLOT_FIELDS
    }
