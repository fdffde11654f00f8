"""A benchmark as a one-shot instrument: one deadline, each phase given what is left, and
its JSON record rewritten after every step, so a run that is cut short keeps what it measured.

Made for a machine lent for one command of a few minutes (``benchmarks.gpu_suite``): a
program that overruns its call, or writes its result only at the end, returns nothing.
:class:`Budget` splits what is left of one overall deadline among the phases still to run,
by share, so that their worst cases add up to less than the deadline whatever each one
takes. :class:`Record` is the JSON file, rewritten atomically (a temporary file beside it,
then ``os.replace``) whenever a figure arrives: a reader, or a kill, never sees half a
file. :func:`run_phases` runs the phases in order, each ending ``done``, ``skipped`` (too
little time left for it), ``failed`` (its error kept, the next phase still runs) or
``interrupted`` (SIGTERM or SIGINT, or past its limit), with its figures and seconds; a
SIGTERM or SIGINT is written down before anything is cleaned up, and a main thread stuck
past the deadline is written down by a watchdog thread, which then ends the program.
"""

from __future__ import annotations

import json
import math
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

#: Seconds a phase may run past its limit before it is interrupted (its own checks come first).
OVERRUN_GRACE_S = 10.0
#: Seconds past the deadline after which a stuck main thread is abandoned by the watchdog.
WATCHDOG_GRACE_S = 15.0


class Interrupted(BaseException):
    """SIGTERM or SIGINT arrived (a BaseException: a phase's ``except Exception`` lets it by)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class Overrun(BaseException):
    """A phase ran past its limit and the grace after it."""


class PhaseFailed(Exception):
    """Raised by a phase, its figures already filled in, to end as ``failed`` with this reason."""


@dataclass
class Phase:
    """``run(limit_s, figures, save)`` fills ``figures`` (a dict in the record) as it
    measures and calls ``save()`` whenever something new is worth keeping; it must stay
    within ``limit_s``. ``min_s``: the least time worth starting it with; ``share``: its
    part of what is left of the deadline, against the phases after it."""

    name: str
    run: Callable[[float, dict, Callable[[], None]], None]
    min_s: float
    share: float


class Budget:
    """One overall deadline: phase ``k`` gets ``share_k / sum(shares of k and later)`` of
    what is left, less ``margin_s`` kept for the last write. Whatever each phase takes
    within its limit, the phases together end by ``deadline_s - margin_s``."""

    def __init__(self, deadline_s: float, margin_s: float, clock: Callable[[], float] = time.monotonic):
        self.deadline_s, self.margin_s, self.clock = float(deadline_s), float(margin_s), clock
        self.t0 = clock()

    def elapsed(self) -> float:
        return self.clock() - self.t0

    def left(self) -> float:
        return self.deadline_s - self.elapsed()

    def limit(self, share: float, later_shares: float) -> float:
        return max(0.0, (self.left() - self.margin_s) * share / (share + later_shares))


def clean(x):
    """``x`` with NaN and infinities as None (JSON has neither) and tuples as lists."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [clean(v) for v in x]
    if x is None or isinstance(x, (str, int, bool)):
        return x
    try:
        return clean(float(x))  # numpy scalars
    except (TypeError, ValueError):
        return str(x)


class Record:
    """The JSON file: ``head`` (what ran, where), ``status`` (running, complete,
    interrupted (SIGTERM), ...), ``elapsed_s`` and ``phases`` ({name: {status, ...}}).
    ``derive(data)``, if given, adds ``derived`` figures on each save."""

    def __init__(self, path: str | Path, head: dict, phases: list[str], derive: Callable[[dict], dict] | None = None):
        self.path, self.derive, self.t0 = Path(path), derive, time.monotonic()
        self.data = {
            **head,
            "status": "running",
            "elapsed_s": 0.0,
            "phases": {n: {"status": "pending"} for n in phases},
        }
        self.current: str | None = None
        self.children: list = []  # Popen-like objects whose process groups a last resort kills
        self._writes = 0
        self._lock = threading.RLock()

    def phase(self, name: str) -> dict:
        return self.data["phases"][name]

    def save(self) -> None:
        with self._lock:
            self.data["elapsed_s"] = round(time.monotonic() - self.t0, 1)
            if self.derive is not None:
                try:
                    self.data["derived"] = self.derive(self.data)
                except Exception as e:  # a derived figure must never cost the record
                    self.data["derived"] = {"error": f"{type(e).__name__}: {e}"[:200]}
            self._writes += 1
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{threading.get_ident()}.{self._writes}.tmp")
            try:
                tmp.write_text(json.dumps(clean(self.data), indent=2, allow_nan=False))
                os.replace(tmp, self.path)
            finally:
                tmp.unlink(missing_ok=True)

    def interrupt(self, why: str) -> None:
        """Write down that the run was cut short (the phase running, and the whole)."""
        if self.current is not None and self.phase(self.current)["status"] == "running":
            self.phase(self.current).update(status="interrupted", reason=why)
        self.data["status"] = f"interrupted ({why})"
        self.save()


def _run_one(record: Record, phase: Phase, limit: float) -> None:
    entry = record.phase(phase.name)
    figures: dict = {}
    entry.update(status="running", limit_s=round(limit, 1), figures=figures)
    record.current = phase.name
    record.save()
    t0 = time.monotonic()

    def overrun(signum, frame):
        raise Overrun(f"ran past its limit of {limit:.0f} s")

    previous = signal.signal(signal.SIGALRM, overrun)
    signal.setitimer(signal.ITIMER_REAL, limit + OVERRUN_GRACE_S)
    try:
        phase.run(limit, figures, record.save)
        entry["status"] = "done"
    except PhaseFailed as e:
        entry.update(status="failed", reason=str(e)[:500])
    except Overrun as e:
        entry.update(status="interrupted", reason=str(e))
    except Exception as e:
        entry.update(status="failed", reason=f"{type(e).__name__}: {e}"[:500])
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        entry["seconds"] = round(time.monotonic() - t0, 1)
        record.current = None


def run_phases(record: Record, budget: Budget, phases: list[Phase]) -> int:
    """Run ``phases`` in order within ``budget``; the exit code: 0, or 128 + the signal's
    number when SIGTERM or SIGINT cut the run short (the record says so either way)."""

    def on_signal(signum, frame):
        record.interrupt(signal.Signals(signum).name)  # first the record, then the clean-ups
        raise Interrupted(signum)

    handlers = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    watchdog = threading.Timer(budget.left() + WATCHDOG_GRACE_S, _abandon, (record,))
    watchdog.daemon = True
    watchdog.start()
    code = 0
    try:
        for k, phase in enumerate(phases):
            later = sum(p.share for p in phases[k + 1 :])
            limit = budget.limit(phase.share, later)
            if limit < phase.min_s:
                reason = f"{limit:.0f} s left for it, it needs at least {phase.min_s:.0f} s"
                record.phase(phase.name).update(status="skipped", reason=reason)
                record.save()
                continue
            _run_one(record, phase, limit)
            record.save()
        record.data["status"] = "complete"
    except Interrupted as e:
        code = 128 + e.signum
        for name, entry in record.data["phases"].items():
            if entry["status"] in ("pending", "running"):
                entry.update(status="skipped", reason=f"the suite was interrupted ({e}) before it ran")
    finally:
        watchdog.cancel()
        for s, h in handlers.items():
            signal.signal(s, h)
        record.save()
    return code


def _abandon(record: Record) -> None:
    """The watchdog: the main thread is stuck past the deadline. Write what there is, end
    the process groups of the children it started, and end the program (exit 124)."""
    try:
        record.interrupt("the deadline passed with the main thread stuck")
    finally:
        for child in record.children:
            try:
                os.killpg(child.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        os._exit(124)
