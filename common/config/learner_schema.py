"""The learner's section of the config: the algorithm (target, head, loss, optimizer) and
the fast paths (device, precision, layout, compile, feed).

Its own file as the largest section and the one each new algorithm extends: a new field
is one ``_f(default, help)`` here plus its check in ``__post_init__``; a preset's value for
it goes into ``PRESETS`` (``presets.py``), and ``--help`` then shows that value by itself.
Fields the device decides (``None`` or ``"auto"``) are filled by ``resolve_fast_paths``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional

from common.config.fields import FEEDS, LEARNER_PRECISIONS, LOSSES, OPTIMIZERS, _f, _require, _require_choice


@dataclasses.dataclass(frozen=True)
class LearnerConfig:
    batch_size: Optional[int] = _f(None, "transitions per update")
    double_q: Optional[bool] = _f(
        None,
        "double-DQN target r + discount * Q_target(s', argmax Q_online(s')); off: Nature's r + discount * max Q_target(s')",
    )
    dueling: Optional[bool] = _f(None, "dueling head V + A - mean A; off: Nature's plain head, Linear-ReLU-Linear")
    loss: str = _f(
        "huber",
        "TD loss: huber (delta 1: Nature's clipping of the error to [-1, 1]) or mse (td^2 / 2, unclipped)",
        choices=LOSSES,
    )
    optimizer: Optional[str] = _f(
        None, "adam, or rmsprop: DeepMind's centred RMSProp, eps inside the square root", choices=OPTIMIZERS
    )
    lr: Optional[float] = _f(
        None,
        "learning rate; left auto with a typed --optimizer, that optimizer's rate (Adam: this project's, by env "
        "kind; RMSProp: the preset paper's)",
    )
    adam_eps: float = _f(1.5e-4, "Adam epsilon")
    rmsprop_decay: float = _f(
        0.95,
        "RMSProp's decay of its mean gradient and mean squared gradient (Nature's 'gradient momentum' and 'squared gradient momentum'; Ape-X's decay)",
    )
    rmsprop_eps: Optional[float] = _f(
        None,
        "RMSProp epsilon, added under the square root (nature's 0.01/32^2: Nature's 'min squared gradient' 0.01 was for the gradient summed over its batch of 32, ours is the batch mean)",
    )
    gamma: float = _f(0.99, "discount per agent step")
    grad_clip: Optional[float] = _f(None, "clip the gradient's global norm to this (0: off)")
    target_update_period: Optional[int] = _f(None, "updates between target-network syncs")
    publish_period: int = _f(50, "updates between weight broadcasts to the actors (one ray.put each)")
    checkpoint_period: int = _f(5_000, "updates between checkpoints")
    device: str = _f("auto", "torch device for the learner: auto (cuda when available), cpu, cuda, cuda:N")
    learner_threads: int = _f(
        0, "torch threads for a CPU learner (0: the cores left after the local actors and replay, at least 1)"
    )
    prefetch: int = _f(4, "sample requests kept in flight to the replay so the learner never waits on a round trip")
    feed: str = _f(
        "auto",
        "how samples reach the learner. mirror: each frame crosses once, into a copy of each replay shard's frames on the learner's device, and a sample is frame indices (kilobytes); stacked: each sample's stacks of frames through Ray (megabytes) (auto: mirror on a GPU whose free memory holds the replay's frames twice over, stacked elsewhere)",
        choices=FEEDS,
    )
    precision: str = _f(
        "auto",
        "the forward passes in bf16 autocast, or fp32; weights, targets, TD errors and the loss stay fp32 either way (auto: bf16 on CUDA and on CPUs with native bf16, AVX-512 BF16 or AMX; fp32 elsewhere, where bf16 is emulated and slower)",
        choices=LEARNER_PRECISIONS,
    )
    tf32: Optional[bool] = _f(
        None,
        "TF32 matmuls and convolutions on CUDA, a 10-bit mantissa at several times fp32's speed (auto: on on CUDA; off on a CPU, where it does nothing)",
    )
    channels_last: Optional[bool] = _f(
        None,
        "NHWC frames and conv weights, the layout the convolution kernels prefer (auto: on on CUDA; off on a CPU, where it is no faster)",
    )
    fused_optimizer: Optional[bool] = _f(
        None,
        "the optimizer over all tensors at once: Adam's fused kernel on CUDA, foreach on a CPU, RMSProp's foreach on both; off: torch's per-tensor loop (auto: on: the same arithmetic in fewer kernels)",
    )
    compile: Optional[bool] = _f(
        None,
        "torch.compile the forward passes and the loss at the first update (its time is logged); falls back to eager with one warning if it fails (auto: on on CUDA; off on a CPU, where a cold compile takes minutes and the compiled update is not reliably faster than eager)",
    )
    joint_forward: bool = _f(
        False,
        "with --double-q, one online forward over s and s' together instead of two; off by default: the backward pass then also runs over s', extra work that pays only where kernel launches, not arithmetic, set the pace",
    )
    stats_period: Optional[int] = _f(
        None,
        "updates between reading loss and mean Q back from the device, each read a sync (0 or 1: every update) (auto: on CUDA the --publish-period, as each weight broadcast syncs anyway; 1 on a CPU, where a read costs nothing)",
    )

    def __post_init__(self):
        if self.batch_size is not None:
            _require(self.batch_size >= 1, "batch_size", self.batch_size, "must be at least 1")
        if self.lr is not None:
            _require(self.lr > 0 and math.isfinite(self.lr), "lr", self.lr, "must be a positive number")
        _require(self.adam_eps > 0, "adam_eps", self.adam_eps, "must be > 0")
        _require_choice("loss", self.loss, LOSSES)
        _require_choice("optimizer", self.optimizer, OPTIMIZERS, auto_none=True)
        _require(0 <= self.rmsprop_decay < 1, "rmsprop_decay", self.rmsprop_decay, "must be in [0, 1)")
        if self.rmsprop_eps is not None:
            _require(self.rmsprop_eps > 0, "rmsprop_eps", self.rmsprop_eps, "must be > 0")
        _require(0 <= self.gamma <= 1, "gamma", self.gamma, "must be in [0, 1]")
        if self.grad_clip is not None:
            _require(self.grad_clip >= 0, "grad_clip", self.grad_clip, "must be >= 0")
        if self.target_update_period is not None:
            _require(
                self.target_update_period >= 1, "target_update_period", self.target_update_period, "must be at least 1"
            )
        _require(self.publish_period >= 1, "publish_period", self.publish_period, "must be at least 1")
        _require(self.checkpoint_period >= 1, "checkpoint_period", self.checkpoint_period, "must be at least 1")
        _require(
            self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda"),
            "device",
            self.device,
            "must be auto, cpu, cuda or cuda:N",
        )
        _require(self.learner_threads >= 0, "learner_threads", self.learner_threads, "must be >= 0")
        _require(self.prefetch >= 1, "prefetch", self.prefetch, "must be at least 1")
        _require_choice("feed", self.feed, FEEDS)
        _require_choice("precision", self.precision, LEARNER_PRECISIONS)
        if self.stats_period is not None:
            _require(self.stats_period >= 0, "stats_period", self.stats_period, "must be >= 0")
