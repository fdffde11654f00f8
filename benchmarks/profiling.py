"""Where a process spends its time, by module: py-spy on a live process, a stack sampler in this one.

A category is a label and the modules it covers (``common/envs.py``, a package such as
``replay_server/`` or ``ray/``). A py-spy sample goes to the innermost frame of its stack
whose file lies in a listed module; frames of unlisted code (torch, numpy, lz4, the
standard library) are charged to their nearest listed caller, so a forward pass counts
where the network is (``common/networks.py``) and ``torch.save`` where the checkpoint is
written. :class:`ThreadSampler` takes the same samples inside this process.
Categories never name functions, so renaming a private function cannot move time from one
category to another; moving code to another module can, and the tables at the end of this
file are then the one place to update.
"""

from __future__ import annotations

import collections
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from benchmarks.report import table

Category = tuple[str, tuple[str, ...]]  # (label, modules: "pkg/file.py" or "pkg/" for a whole package)


# --------------------------------------------------------------------------- modules


def in_module(path: str, module: str) -> bool:
    """Whether the file ``path`` (absolute, or relative to a sys.path entry as py-spy shows
    it) is ``module``: a file such as ``common/envs.py``, or anything under a package such
    as ``torch/``. Whole path components only: ``ray/`` does not match ``xray/``."""
    path = path.replace(os.sep, "/")
    if module.endswith("/"):
        return path.startswith(module) or "/" + module in path
    return path == module or path.endswith("/" + module)


def category_of(path: str, categories: list[Category]) -> str | None:
    """The first category, in list order, that lists a module holding ``path`` (so list a
    file before the package that contains it); None if none does."""
    for label, modules in categories:
        if any(in_module(path, m) for m in modules):
            return label
    return None


def frame_path(frame: str) -> str:
    """The file of a py-spy frame ``[Class.]func (path/file.py)``; "" if it names none."""
    _, sep, where = frame.rpartition(" (")
    return where[:-1] if sep and where.endswith(")") else ""


def stack_category(frames: list[str], categories: list[Category]) -> str:
    """The category of the innermost frame (outermost first in ``frames``, as py-spy writes
    them) that lies in a listed module; "other" if no frame does."""
    for frame in reversed(frames):
        label = category_of(frame_path(frame), categories)
        if label is not None:
            return label
    return "other"


def stack_shares(stacks, keep: str | None, categories: list[Category]) -> tuple[dict, int]:
    """Share of samples per category, and the samples counted. Only stacks with a frame in
    the module ``keep`` count (e.g. ``actors/remote.py``: the actor's own thread and the
    calls Ray hands it, not Ray's idle threads); ``keep`` None counts every stack."""
    totals: dict[str, int] = {label: 0 for label, _ in categories}
    totals["other"] = 0
    n = 0
    for frames, count in stacks:
        if keep is not None and not any(in_module(frame_path(f), keep) for f in frames):
            continue
        n += count
        totals[stack_category(frames, categories)] += count
    return ({k: v / n for k, v in totals.items()} if n else {}), n


class ThreadSampler:
    """The Python stack of one thread of this process, sampled every ``interval`` s from a
    background thread: py-spy's view, in-process and without py-spy. Use it as a context
    manager around the code to profile (by default the calling thread's); :attr:`stacks`
    is then in :func:`read_stacks`' form, for :func:`stack_shares`. The sampler needs the
    GIL to look, so a sample lands at the next switch of the GIL (at most
    ``sys.getswitchinterval()`` late): shares, not exact times."""

    def __init__(self, interval: float = 0.002, thread_id: int | None = None):
        self.interval = interval
        self.thread_id = threading.get_ident() if thread_id is None else thread_id
        self.counts: collections.Counter = collections.Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stack-sampler", daemon=True)

    def __enter__(self) -> "ThreadSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            frame = sys._current_frames().get(self.thread_id)
            stack = []
            while frame is not None:
                stack.append(f"{frame.f_code.co_name} ({frame.f_code.co_filename})")
                frame = frame.f_back
            if stack:
                self.counts[tuple(reversed(stack))] += 1

    @property
    def stacks(self) -> list[tuple[list[str], int]]:
        return [(list(frames), n) for frames, n in self.counts.items()]


# --------------------------------------------------------------------------- py-spy


def pyspy_path() -> str | None:
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


def pyspy_start(pid: int, seconds: float, out: Path, rate: int = 50) -> subprocess.Popen | None:
    """Start sampling ``pid`` for ``seconds`` with py-spy (collapsed stacks, idle included,
    non-blocking so the process is not paused); None when py-spy is not installed."""
    exe = pyspy_path()
    if exe is None:
        return None
    return subprocess.Popen(
        [
            exe,
            "record",
            "-p",
            str(pid),
            "-d",
            str(int(seconds)),
            "-r",
            str(rate),
            "-f",
            "raw",
            "--idle",
            "--nolineno",
            "--nonblocking",
            "-o",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def read_stacks(path: Path) -> list[tuple[list[str], int]]:
    stacks = []
    if not path.exists():
        return stacks
    for line in path.read_text().splitlines():
        frames, _, count = line.rpartition(" ")
        if frames and count.isdigit():
            stacks.append((frames.split(";"), int(count)))
    return stacks


def top_leaves(stacks, keep: str | None, k: int = 8) -> list[tuple[str, float]]:
    """The innermost Python frames that take the most samples (self time)."""
    counts: dict[str, int] = {}
    n = 0
    for frames, count in stacks:
        if keep is not None and not any(in_module(frame_path(f), keep) for f in frames):
            continue
        n += count
        counts[frames[-1]] = counts.get(frames[-1], 0) + count
    return [(f, c / n) for f, c in sorted(counts.items(), key=lambda x: -x[1])[:k]] if n else []


def spy_processes(run, targets: dict, seconds: float, out_prefix: Path) -> dict:
    """py-spy on several live processes of ``run`` (a :class:`~benchmarks.system_run.SystemRun`)
    at once, for ``seconds``, while the run goes on being polled. ``targets``: name -> (pid,
    keep, categories) as for :func:`stack_shares`. Returns name -> {file, samples, shares,
    top_self} (or {error})."""
    spies, out = {}, {}
    for name, (pid, keep, cats) in targets.items():
        if pid is None:
            out[name] = {"error": "process not found"}
            continue
        path = Path(f"{out_prefix}-{name}.pyspy.txt")
        spy = pyspy_start(pid, seconds, path)
        if spy is None:
            out[name] = {"error": "py-spy is not installed (pip install py-spy)"}
            continue
        spies[name] = (spy, path, keep, cats)
    end = time.monotonic() + seconds + 20
    while any(s.poll() is None for s, *_ in spies.values()) and time.monotonic() < end:
        run.poll()
        time.sleep(0.5)
    for name, (spy, path, keep, cats) in spies.items():
        if spy.poll() is None:
            spy.kill()
            spy.wait()
        stacks = read_stacks(path)
        shares, n = stack_shares(stacks, keep, cats)
        out[name] = {"file": str(path), "samples": n, "shares": shares, "top_self": top_leaves(stacks, keep)}
    return out


def print_spy(title: str, result: dict) -> None:
    if "shares" not in result:
        print(f"{title}: {result.get('error', 'no samples')}")
        return
    print(table([title, "share of samples"], [[k, v] for k, v in result["shares"].items()]))
    print(
        f"  ({result['samples']} samples; top self time: "
        + "; ".join(f"{f} {s:.0%}" for f, s in result["top_self"][:5])
        + ")"
    )


# --------------------------------------------------------------------------- the system's categories

# The actor's loop without Ray (ActorCore sampled in benchmarks.actors). torch's frames
# are charged to their caller: the forward pass to common/networks.py, a weight swap
# (load_state_dict) to actors/.
CORE_CATEGORIES: list[Category] = [
    ("emulator + preprocessing (common/envs/)", ("common/envs/",)),
    # The acting network (actors/acting.py, actors/int8_static.py) is listed before actors/ so
    # it is not charged to the loop.
    (
        "forward pass (common/networks.py, actors/acting.py, actors/int8_static.py)",
        ("common/networks.py", "actors/acting.py", "actors/int8_static.py"),
    ),
    ("frame stacking (common/stacking.py)", ("common/stacking.py",)),
    ("StepBatch lz4 + msgpack (common/messages.py)", ("common/messages.py",)),
    ("actor loop: eps-greedy, priorities, batching (actors/)", ("actors/",)),
]

# A live actor's thread (and the calls Ray hands it: set_weights, stats).
ACTOR_CATEGORIES: list[Category] = CORE_CATEGORIES[:-1] + [
    ("Ray: sends, rate-limiter polls, back-pressure (ray/)", ("ray/",)),
    ("throttled sleep (threading.py)", ("threading.py",)),
    CORE_CATEGORIES[-1],
]
ACTOR_KEEP = "actors/remote.py"

# The learner driver's main thread. Ray's waits (for a sample, for stats) are ray/; what
# the loop does around them is learner/.
DRIVER_CATEGORIES: list[Category] = [
    ("learner update (learner/dqn.py)", ("learner/dqn.py",)),
    ("checkpoint, metrics, TensorBoard", ("learner/checkpoint.py", "learner/run_log.py", "learner/tensorboard.py")),
    ("Ray: waiting for samples, stats, requests (ray/)", ("ray/",)),
    ("the learner loop itself (learner/)", ("learner/",)),
]
DRIVER_KEEP = "learner/main.py"

# The replay server, all threads, idle included.
REPLAY_CATEGORIES: list[Category] = [
    ("decode + lz4 frame check (common/messages.py)", ("common/messages.py",)),
    ("sum tree: PER sampling, priorities (replay_server/sum_tree.py)", ("replay_server/sum_tree.py",)),
    ("rate limiter (replay_server/rate_limiter.py)", ("replay_server/rate_limiter.py",)),
    ("snapshots (replay_server/snapshot.py)", ("replay_server/snapshot.py",)),
    ("storage: insert, stack rebuilding (replay_server/)", ("replay_server/",)),
    ("Ray: idle, receiving calls (ray/)", ("ray/",)),
]
