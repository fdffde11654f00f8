"""The machine at hand: one answer to "is this CUDA", and the cores a pinned learner keeps."""

import torch

from common import affinity
from common.config import Config, LearnerConfig, RunConfig, cpu_plan, is_cuda, pick_device, resolve
from common.config.hardware import GPU_DRIVER_CORES


def test_is_cuda_answers_for_flags_and_devices():
    assert not is_cuda("cpu") and is_cuda("cuda") and is_cuda("cuda:1")
    assert is_cuda("auto") == torch.cuda.is_available()
    assert is_cuda(torch.device("cuda", 0)) and not is_cuda(torch.device("cpu"))
    assert pick_device("cpu") == torch.device("cpu") and pick_device("cuda:1") == torch.device("cuda", 1)
    assert is_cuda(pick_device("auto")) == is_cuda("auto")


def test_a_pinned_gpu_learner_keeps_its_update_and_feeder_cores(monkeypatch):
    monkeypatch.setattr(affinity, "can_pin", lambda: True)
    monkeypatch.setattr(affinity, "available_cpus", lambda: list(range(16)))

    def cfg(device, **run):
        return resolve(
            Config(learner=LearnerConfig(device=device), run=RunConfig(**run)), atari=True, cuda=is_cuda(device)
        )

    learner, workers = cpu_plan(cfg("cuda", pin_cpus="on"))
    assert learner == list(range(GPU_DRIVER_CORES)) and workers == list(range(GPU_DRIVER_CORES, 16))
    assert cpu_plan(cfg("cuda")) is None  # not asked
    assert cpu_plan(cfg("cuda", pin_cpus="on", address="auto")) is None  # a cluster: never
    cpu_learner, _ = cpu_plan(cfg("cpu", pin_cpus="on"))
    assert len(cpu_learner) >= 1
