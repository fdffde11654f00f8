"""Item ids: ``epoch << 40 | uid``, so that an id is never issued twice.

An item's ``epoch`` is the buffer's epoch when its window completed (when it became an
item). A fresh buffer has epoch 0; ``ReplayBuffer.load_state_dict`` takes the snapshot's
epoch + 1. A restored replay cannot know how many uids its crashed predecessor issued after
the snapshot, so uids repeat, but ids do not: a priority update for an id of another epoch
finds a slot whose epoch differs and is ignored (counted in ``priority_updates_ignored``),
never applied to the new record that reuses the uid.
"""

from __future__ import annotations

import numpy as np

#: Bits of an id that hold the uid; the bits above hold the epoch.
ID_EPOCH_SHIFT = 40
UID_MASK = (1 << ID_EPOCH_SHIFT) - 1
MAX_EPOCH = (1 << (63 - ID_EPOCH_SHIFT)) - 1


def item_ids(epochs: np.ndarray, uids: np.ndarray) -> np.ndarray:
    """Ids ``int64[K]`` of items with these epochs and uids."""
    return (np.asarray(epochs, dtype=np.int64) << ID_EPOCH_SHIFT) | np.asarray(uids, dtype=np.int64)


def id_parts(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(epochs, uids)``, both ``int64[K]``, of item ids."""
    ids = np.asarray(ids, dtype=np.int64)
    return ids >> ID_EPOCH_SHIFT, ids & UID_MASK
