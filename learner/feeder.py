"""The feeder: batches fetched on a thread of their own, so an update never waits on Ray.

With ``--feed mirror`` each batch costs the driver a Ray round trip (submit the next sample
request with the priorities it carries, fetch a ready answer, unpickle it), the new frames
written into the mirror, and the gather of its stacks. On the learner's own thread that is
time the GPU sits idle between updates. A :class:`Feeder` runs that work on a thread beside
the update and hands over finished batches through a short queue: the learner's thread only
takes the next one (microseconds when the feeder keeps up). Ray's calls and torch's kernels
release the GIL, so the two threads overlap on a machine with a core to spare.

The feeder calls one function, ``fetch``, which returns a batch or None (nothing to train on
yet; it backs off itself). Everything ``fetch`` touches is the feeder's alone, except what
its owner guards with a lock (the priorities held for the next request). Batches leave in
the order ``fetch`` made them: the mirror's exactness (``learner/mirror.py``) needs each
answer gathered before the next one's frames are written, which one thread gives for free;
on a GPU the gather and the update share the device's default stream, so the update's
kernels run after the gather's. With the learner on ``cuda:N`` the thread makes device N its
current device first, so the mirror's copies and events go to the learner's device. A plain
class: tested without Ray.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable

#: Batches gathered ahead of the update; each of 512 Atari stacks is 29 MB on the device.
FEEDER_DEPTH = 2


def use_device(device) -> bool:
    """Make CUDA ``device`` ``cuda:N`` the calling thread's current device; True if it did.
    A CPU device, None and plain ``cuda`` (the current device) are left alone."""
    import torch

    if device is None:
        return False
    device = torch.device(device)
    if device.type != "cuda" or device.index is None:
        return False
    torch.cuda.set_device(device)
    return True


class Feeder:
    def __init__(
        self,
        fetch: Callable[[], object | None],
        depth: int = FEEDER_DEPTH,
        name: str = "raydqn-feeder",
        device=None,
    ):
        self.fetch = fetch
        self.device = device  # the learner's torch.device; a CUDA one becomes the thread's current device
        self.batches: queue.Queue = queue.Queue(maxsize=depth)
        self.stopping = threading.Event()
        self.error: BaseException | None = None
        self.cpu_s = 0.0  # the feeder thread's own CPU time, for the feed benchmark
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        t0 = time.thread_time()
        try:
            use_device(self.device)
            while not self.stopping.is_set():
                got = self.fetch()
                self.cpu_s = time.thread_time() - t0
                if got is not None:
                    self._put(got)
        except BaseException as e:  # handed to the learner's thread, which raises it
            self.error = e
        finally:
            self.cpu_s = time.thread_time() - t0

    def _put(self, got) -> None:
        while not self.stopping.is_set():
            try:
                self.batches.put(got, timeout=0.05)
                return
            except queue.Full:
                continue

    def get(self, timeout: float = 0.05):
        """The next batch, or None if none came within ``timeout`` seconds. Raises what the
        feeder's ``fetch`` raised, once the batches it made before are taken."""
        try:
            return self.batches.get(timeout=0 if self.error is not None else timeout)
        except queue.Empty:
            if self.error is not None:
                raise self.error from None
            return None

    def close(self, timeout: float = 10.0) -> bool:
        """Stop fetching and wait for the thread (its fetch in progress finishes first);
        batches not yet taken are dropped. True if the thread ended within ``timeout``."""
        self.stopping.set()
        while True:
            try:
                self.batches.get_nowait()
            except queue.Empty:
                break
        self.thread.join(timeout)
        return not self.thread.is_alive()
