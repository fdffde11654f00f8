"""The machine at hand: the one place that answers "is this CUDA?", "does this CPU do bf16?"
and "which cores does the learner keep?".

Everything that depends on the hardware asks here, so the driver, the learner and the
resolution of 'auto' settings cannot disagree: :func:`is_cuda` and :func:`pick_device`
for the learner's device, :func:`cpu_has_native_bf16` for the CPU's number formats,
:func:`cpu_learner_threads` and :func:`cpu_plan` for a CPU learner's threads and cores.
torch is imported only where a device is asked for, so parsing flags stays fast.
"""

from __future__ import annotations

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
    """Torch threads for a CPU learner: as asked, else the cores the local actors and
    replay leave free (OpenMP threads on cores the actors also use cost CPU for no more
    updates/s: docs/benchmarks.md, learner efficiency)."""
    if cfg.learner.learner_threads:
        return cfg.learner.learner_threads
    cores = os.cpu_count() or 1
    if cfg.run.address is not None:  # actors live elsewhere on a cluster
        return cores
    return max(1, cores - cfg.actors.num_actors - cfg.replay.replay_shards)


def cpu_plan(cfg: "Config") -> tuple[list[int], list[int]] | None:
    """(the learner's cores, the workers') under ``--pin-cpus on``, or None: not asked, a
    cluster, a GPU learner, no affinity calls, or no core left for the workers."""
    if cfg.run.pin_cpus != "on" or cfg.run.address is not None or not affinity.can_pin():
        return None
    if is_cuda(cfg.learner.device):
        return None
    return affinity.split_cpus(affinity.available_cpus(), cpu_learner_threads(cfg))
