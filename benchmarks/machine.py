"""What a benchmark ran on, and how busy the rest of the (shared) machine was meanwhile.

Figures taken on a shared machine mean little without the load they were taken under:
:func:`machine` describes the hardware and software, :class:`ForeignLoad` measures the
cores everything else used over an interval, and :func:`wait_quiet` lets a phase start
only once the rest of the machine has calmed down.
"""

from __future__ import annotations

import importlib
import os
import platform
import time

try:
    import psutil
except ImportError:  # Ray ships psutil in ray/thirdparty_files and puts that on sys.path when imported:
    import ray  # noqa: F401  (so ray first, then psutil, in this order)

    psutil = importlib.import_module("psutil")


def machine() -> dict:
    """What the figures were taken on; load averages tell how busy the shared machine was."""
    import torch

    model = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cuda = torch.cuda.is_available()
    return {
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu": model or platform.processor(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }


def describe_machine(m: dict) -> str:
    return (
        f"machine: {m['cores']} cores ({m['cpu']}), {m['memory_gb']} GB, "
        f"{'GPU ' + m['gpu'] if m['gpu'] else 'no GPU'}, torch {m['torch']}, load average {m['loadavg']}"
    )


def busy_cpu_s() -> float:
    """CPU seconds the whole machine has been busy (all processes, everyone's)."""
    t = psutil.cpu_times()
    return sum(getattr(t, k, 0.0) for k in ("user", "nice", "system", "irq", "softirq", "steal", "guest"))


class ForeignLoad:
    """CPU cores used by everything else on the machine over an interval (this machine is
    shared): machine busy time minus the CPU time of the processes we account for."""

    def __init__(self):
        self.t0, self.busy0 = time.monotonic(), busy_cpu_s()

    def cores(self, ours_cpu_s: float) -> float:
        dt = max(time.monotonic() - self.t0, 1e-9)
        return max(busy_cpu_s() - self.busy0 - ours_cpu_s, 0.0) / dt


def wait_quiet(threshold: float = 0.25, timeout: float = 0.0, probe_s: float = 3.0) -> float:
    """Wait (at most ``timeout`` s) until the rest of the machine uses under ``threshold``
    cores over ``probe_s`` seconds; returns the last reading. The machine is shared, and
    torch's OpenMP threads collapse when a core they need is busy, so a phase that starts
    under foreign load measures the load, not the code."""
    deadline = time.monotonic() + timeout
    while True:
        probe = ForeignLoad()
        time.sleep(probe_s)
        load = probe.cores(0.0)
        if load < threshold or time.monotonic() >= deadline:
            return load
        print(f"  (waiting for the machine to quieten: other work uses {load:.2f} cores)", flush=True)


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]
