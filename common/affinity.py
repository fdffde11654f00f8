"""A CPU learner's own cores: the learner's thread on some, every Ray worker on the rest.

On a small machine the learner, the actors, the replay and Ray's daemons share the cores,
and the scheduler moves them over each other: each wake-up of an actor or the replay on
the learner's core preempts an update and cools its caches. With ``--pin-cpus on`` (a
local run, a CPU learner, more cores than learner threads) the driver's training thread
and its torch threads keep the first ``learner_threads`` cores and the actors, replay
shards and evaluator the others (docs/benchmarks.md, learner efficiency).

Workers learn their cores from :data:`ENV` in their environment: the driver sets it before
it starts its local Ray instance, whose workers inherit it (Ray restarting an actor
included); on a cluster (``--address``) nothing is pinned. Linux only (``sched_setaffinity``).
"""

from __future__ import annotations

import os
import threading
from typing import Sequence

ENV = "RAYDQN_WORKER_CPUS"
DRIVER_ENV = "RAYDQN_DRIVER_PID"  # the process that set ENV: never pinned as a worker


def plan_workers(worker_cpus: Sequence[int]) -> None:
    """In the driver, before it starts Ray: the workers it starts take ``worker_cpus``."""
    os.environ[ENV] = ",".join(str(c) for c in sorted(worker_cpus))
    os.environ[DRIVER_ENV] = str(os.getpid())


def can_pin() -> bool:
    return hasattr(os, "sched_setaffinity") and hasattr(os, "sched_getaffinity")


def available_cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0)) if can_pin() else list(range(os.cpu_count() or 1))


def split_cpus(available: Sequence[int], learner_threads: int) -> tuple[list[int], list[int]] | None:
    """(the learner's cores, the workers' cores), or None when there is no core left for
    the workers once the learner has one per thread."""
    cpus = sorted(available)
    if learner_threads < 1 or len(cpus) <= learner_threads:
        return None
    return cpus[:learner_threads], cpus[learner_threads:]


def format_cpus(cpus: Sequence[int]) -> str:
    """``[0]`` -> ``0``, ``[1, 2, 3, 7]`` -> ``1-3,7``."""
    runs: list[list[int]] = []
    for c in sorted(cpus):
        if runs and c == runs[-1][-1] + 1:
            runs[-1].append(c)
        else:
            runs.append([c])
    return ",".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs)


def pin_thread(cpus: Sequence[int]) -> None:
    """This thread (and the threads it starts later, torch's included) on ``cpus``."""
    os.sched_setaffinity(threading.get_native_id(), set(cpus))


def pin_process(cpus: Sequence[int]) -> int:
    """Every thread of this process on ``cpus``; returns how many were moved."""
    moved = 0
    for tid in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(tid), set(cpus))
            moved += 1
        except (ProcessLookupError, PermissionError):  # a thread that just ended
            pass
    return moved


def pin_worker_from_env() -> list[int] | None:
    """In a Ray worker's constructor: move the whole process to the cores :data:`ENV`
    names, if it names any this process may use. The cores, or None (nothing pinned)."""
    text = os.environ.get(ENV)
    if not text or not can_pin() or os.environ.get(DRIVER_ENV) == str(os.getpid()):
        return None
    try:
        cpus = sorted({int(c) for c in text.split(",")} & set(available_cpus()))
    except ValueError:
        return None
    if not cpus:
        return None
    pin_process(cpus)
    return cpus
