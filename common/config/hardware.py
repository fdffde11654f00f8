"""The machine at hand: the one place that answers "is this CUDA?", "does this CPU do bf16?"
and "which cores does the learner keep?".

Everything that depends on the hardware asks here, so the driver, the learner and the
resolution of 'auto' settings cannot disagree: :func:`is_cuda` and :func:`pick_device`
for the learner's device, :func:`cpu_has_native_bf16` for the CPU's number formats,
:func:`cpu_learner_threads` and :func:`cpu_plan` for a CPU learner's threads and cores.
torch is imported only where a device is asked for, so parsing flags stays fast.
"""

from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING, Union

from common import affinity

if TYPE_CHECKING:
    import torch

    from common.config.schema import Config


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX-512 BF16 or AMX-BF16 in Linux's
    /proc/cpuinfo flags). False where that cannot be read: bf16 emulated is slower than fp32."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return bool({"avx512_bf16", "amx_bf16"} & set(line.split(":", 1)[1].split()))
    except OSError:
        pass
    return False


def is_cuda(device: Union[str, "torch.device"]) -> bool:
    """THE answer to "is the learner on CUDA": a ``--device`` value ('auto': CUDA when torch
    has a device) or a ``torch.device``."""
    if not isinstance(device, str):
        return device.type == "cuda"
    if device == "auto":
        import torch

        return torch.cuda.is_available()
    return device.startswith("cuda")


def pick_device(name: str) -> "torch.device":
    """The torch device a ``--device`` value names ('auto': the first CUDA device, else the CPU)."""
    import torch

    if name == "auto":
        return torch.device("cuda" if is_cuda(name) else "cpu")
    return torch.device(name)


def cpu_learner_threads(cfg: "Config") -> int:
    """Torch threads for a CPU learner: as asked, else the cores the local actors, replay
    and evaluator leave free (the core plan's) (OpenMP threads on cores the actors also use cost CPU for no more
    updates/s: docs/benchmarks.md, learner efficiency)."""
    if cfg.learner.learner_threads:
        return cfg.learner.learner_threads
    cores = os.cpu_count() or 1
    if cfg.run.address is not None:  # actors live elsewhere on a cluster
        return cores
    evaluator = bool(cfg.eval.eval_period)
    return plan_cores(cores, False, cfg.actors.num_actors, evaluator, shards=cfg.replay.replay_shards).learner


def cpu_plan(cfg: "Config") -> tuple[list[int], list[int]] | None:
    """(the learner's cores, the workers') under ``--pin-cpus on``, or None: not asked, a
    cluster, no affinity calls, or no core left for the workers. A CPU learner keeps one
    core per thread; a GPU learner GPU_DRIVER_CORES (its update's thread and the feeder's)."""
    if cfg.run.pin_cpus != "on" or cfg.run.address is not None or not affinity.can_pin():
        return None
    keep = GPU_DRIVER_CORES if is_cuda(cfg.learner.device) else cpu_learner_threads(cfg)
    return affinity.split_cpus(affinity.available_cpus(), keep)


# ---- the core plan -----------------------------------------------------------------------
#: Envs per actor where the cores suffice (``--envs-per-actor`` left auto).
DEFAULT_ENVS_PER_ACTOR = 32
#: Cores a GPU learner's process keeps: the thread that launches the update's kernels and
#: the feeder's thread (``learner/feeder.py``). A GPU update this size is bound by Python
#: launching kernels, so time-slicing these two, not the GPU, would set the learner's rate.
GPU_DRIVER_CORES = 2
#: At most this many replay shards: one shard answers only so many calls a second, and a
#: GPU learner needs a few; each beyond takes a core from the actors.
MAX_SHARDS = 4
#: Ray's workers' niceness under a GPU learner whose plan fits: below the learner's 0, so
#: Ray's own daemons and a burst of the evaluator never preempt an update. 0 elsewhere: on
#: cores the learner shares with the actors, niced actors starve (docs/benchmarks.md).
GPU_WORKER_NICENESS = 5


@dataclasses.dataclass(frozen=True)
class CorePlan:
    """Who gets the cores Ray sees. Busy parts get a core each: the learner's process (its
    threads on a CPU; on a GPU its update's and its feeder's thread), every actor, and on a
    GPU learner every replay shard (it answers sample requests as fast as they come). Light
    parts take the cores left, or share when none is: the evaluator (idle between
    evaluations) and a CPU learner's shard (a CPU learner samples a few batches a second)."""

    cores: int
    cuda: bool
    learner: int
    actors: int
    shards: int
    shards_busy: bool
    evaluator: int
    envs_per_actor: int
    envs_sized: bool  # envs_per_actor sized down here: more actors than cores
    worker_niceness: int

    @property
    def busy(self) -> int:
        return self.learner + self.actors + (self.shards if self.shards_busy else 0)

    @property
    def light(self) -> int:
        return self.evaluator + (0 if self.shards_busy else self.shards)

    @property
    def oversubscribed(self) -> int:
        """Busy parts beyond the cores (0: each has a core of its own)."""
        return max(0, self.busy - self.cores)

    @property
    def actors_fit(self) -> int:
        """The most actors with a core each beside the learner's least and the busy shards."""
        least = GPU_DRIVER_CORES if self.cuda and self.cores >= 2 * GPU_DRIVER_CORES else 1
        return max(1, self.cores - least - (self.shards if self.shards_busy else 0))

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "oversubscribed": self.oversubscribed}

    def line(self) -> str:
        """The plan in one line, for the start of a run."""
        who = "update + feeder threads" if self.cuda and self.learner > 1 else _n(self.learner, "thread")
        text = f"cores: {self.cores}; learner {who}, {_n(self.actors, 'actor')}, {_n(self.shards, 'replay shard')}"
        text += "" if self.shards_busy else " (light)"
        text += ", evaluator (light)" if self.evaluator else ""
        if self.oversubscribed:
            return text + f": {self.busy} busy on {self.cores} cores, time-shared (--num-actors {self.actors_fit} fits)"
        if self.light:
            text += "; light parts share" if self.light > self.cores - self.busy else "; light parts on the cores left"
        return text + (f"; Ray's workers at nice {self.worker_niceness}" if self.worker_niceness else "")


def _n(count: int, word: str) -> str:
    return f"{count} {word}{'s' * (count != 1)}"


def plan_cores(
    cores: int,
    cuda: bool,
    num_actors: int,
    evaluator: bool,
    learner_threads: int = 0,
    shards: int | None = None,
    envs_per_actor: int | None = None,
) -> CorePlan:
    """The core plan for ``cores`` CPUs (see :class:`CorePlan`). ``shards`` and
    ``envs_per_actor``: as typed, or None (auto). A CPU learner gets one shard; a GPU
    learner as many as the actors leave, up to MAX_SHARDS and cores // 4. A CPU learner's
    threads: as typed, else the cores the actors and the light parts leave (at least 1).
    The envs per actor are DEFAULT_ENVS_PER_ACTOR unless the actors outnumber the cores;
    then the actors' cores' share of emulators is split between them, so they start in
    seconds rather than minutes."""
    cores, ev = max(1, cores), int(evaluator)
    roomy = cuda and cores >= 2 * GPU_DRIVER_CORES  # below: the feeder shares the update's core
    if shards is None:
        shards = max(1, min(MAX_SHARDS, cores // 4, cores - GPU_DRIVER_CORES - num_actors)) if cuda else 1
    if cuda:
        learner = GPU_DRIVER_CORES if roomy else 1
    else:
        learner = learner_threads or max(1, cores - num_actors - shards - ev)
    busy_shards = shards if roomy else 0
    sized = envs_per_actor is None and num_actors > cores
    if envs_per_actor is None:
        actor_cores = max(1, cores - (learner if cuda or learner_threads else 1) - busy_shards)
        envs_per_actor = max(1, DEFAULT_ENVS_PER_ACTOR * actor_cores // num_actors) if sized else DEFAULT_ENVS_PER_ACTOR
    fits = learner + num_actors + busy_shards <= cores
    niceness = GPU_WORKER_NICENESS if cuda and fits else 0
    return CorePlan(cores, cuda, learner, num_actors, shards, roomy, ev, envs_per_actor, sized, niceness)


def core_plan(cfg: "Config", cuda: bool, cores: int, auto_envs: bool = False) -> CorePlan:
    """The plan of a config (its typed or resolved shards and envs per actor) on ``cores``
    (``--num-cpus`` where given: the CPUs Ray sees). ``auto_envs``: the envs per actor were
    left auto (the plan then says whether it sized them)."""
    return plan_cores(
        cfg.run.num_cpus or cores,
        cuda,
        0 if cfg.run.address is not None else cfg.actors.num_actors,  # a cluster's actors run elsewhere
        evaluator=bool(cfg.eval.eval_period),
        learner_threads=cfg.learner.learner_threads,
        shards=cfg.replay.replay_shards,
        envs_per_actor=None if auto_envs else cfg.env.envs_per_actor,
    )
