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

from common.config.fields import (
    COMPILE_MODES,
    FEEDS,
    HEADS,
    LEARNER_PRECISIONS,
    LOSSES,
    OPTIMIZERS,
    TORSOS,
    _f,
    _require,
    _require_choice,
)


@dataclasses.dataclass(frozen=True)
class LearnerConfig:
    batch_size: Optional[int] = _f(None, "transitions per update")
    double_q: Optional[bool] = _f(
        None,
        "double-DQN target r + discount * Q_target(s', argmax Q_online(s')); off: Nature's r + discount * max Q_target(s')",
    )
    dueling: Optional[bool] = _f(None, "dueling head V + A - mean A; off: Nature's plain head, Linear-ReLU-Linear")
    head: Optional[str] = _f(
        None,
        "what the network estimates for each action: expected (its mean, DQN), c51 (a categorical distribution on "
        "--num-atoms atoms over [--v-min, --v-max], Bellemare et al. 2017), qr (--num-quantiles quantiles, Dabney et "
        "al. 2018) or iqn (quantiles at sampled fractions, Dabney et al. 2018); actions are chosen by the mean",
        choices=HEADS,
    )
    num_atoms: int = _f(51, "c51: atoms of the value distribution")
    v_min: Optional[float] = _f(None, "c51: the smallest atom")
    v_max: Optional[float] = _f(None, "c51: the largest atom")
    num_quantiles: int = _f(200, "qr: quantiles of the value distribution (QR-DQN's 200)")
    kappa: float = _f(1.0, "qr, iqn: the quantile Huber loss's threshold (0: the plain quantile loss)")
    iqn_tau_samples: Optional[int] = _f(None, "iqn: fractions sampled for the predicted quantiles (N)")
    iqn_target_samples: Optional[int] = _f(None, "iqn: fractions sampled for the target's quantiles (N')")
    iqn_acting_samples: Optional[int] = _f(None, "iqn: fractions sampled to estimate Q when acting (K)")
    iqn_embedding: int = _f(64, "iqn: cosine features of each fraction before its linear embedding")
    noisy: Optional[bool] = _f(
        None,
        "noisy nets (Fortunato et al. 2018): the head's linear layers carry learned factorised Gaussian noise, drawn "
        "anew for every acting step and every update; the evaluator plays with the noise off; presets that use them "
        "act with eps 0",
    )
    noisy_sigma0: float = _f(0.5, "noisy nets: the noise scale sigma0 of the factorised initialisation")
    munchausen: Optional[bool] = _f(
        None,
        "Munchausen RL (Vieillard et al. 2020): add alpha * clip(tau * log pi(a|s), l0, 0) to the reward and bootstrap "
        "with the soft value, pi = softmax(Q_target / tau); expected and iqn heads",
    )
    munchausen_tau: float = _f(0.03, "Munchausen: the entropy temperature tau")
    munchausen_alpha: float = _f(0.9, "Munchausen: the scale alpha of the log-policy bonus")
    munchausen_l0: float = _f(-1.0, "Munchausen: the lower clip l0 of tau * log pi")
    torso: Optional[str] = _f(
        None,
        "the network before the head for Atari frames: nature (Mnih et al. 2015) or impala (Espeholt et al. 2018, "
        "with a 6x6 adaptive max-pool as in Beyond The Rainbow); MinAtar and flat vectors keep their own",
        choices=TORSOS,
    )
    torso_width: Optional[int] = _f(None, "impala: channel multiplier of (16, 32, 32)")
    spectral_norm: Optional[bool] = _f(None, "impala: spectral normalisation of the residual blocks' convolutions")
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
    adam_eps: Optional[float] = _f(None, "Adam epsilon")
    rmsprop_decay: float = _f(
        0.95,
        "RMSProp's decay of its mean gradient and mean squared gradient (Nature's 'gradient momentum' and 'squared gradient momentum'; Ape-X's decay)",
    )
    rmsprop_eps: Optional[float] = _f(
        None,
        "RMSProp epsilon, added under the square root (nature's 0.01/32^2: Nature's 'min squared gradient' 0.01 was for the gradient summed over its batch of 32, ours is the batch mean)",
    )
    gamma: Optional[float] = _f(None, "discount per agent step")
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
    compile_mode: str = _f(
        "default",
        "torch.compile's mode with --compile: default, reduce-overhead (CUDA graphs: fewer kernel launches, "
        "static shapes) or max-autotune (searches kernels at the first update, slower to start)",
        choices=COMPILE_MODES,
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
        if self.adam_eps is not None:
            _require(self.adam_eps > 0, "adam_eps", self.adam_eps, "must be > 0")
        _require_choice("loss", self.loss, LOSSES)
        self._check_algorithm()
        _require_choice("optimizer", self.optimizer, OPTIMIZERS, auto_none=True)
        _require(0 <= self.rmsprop_decay < 1, "rmsprop_decay", self.rmsprop_decay, "must be in [0, 1)")
        if self.rmsprop_eps is not None:
            _require(self.rmsprop_eps > 0, "rmsprop_eps", self.rmsprop_eps, "must be > 0")
        if self.gamma is not None:
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
        _require_choice("compile_mode", self.compile_mode, COMPILE_MODES)
        _require_choice("precision", self.precision, LEARNER_PRECISIONS)
        if self.stats_period is not None:
            _require(self.stats_period >= 0, "stats_period", self.stats_period, "must be >= 0")

    def _check_algorithm(self) -> None:
        """The heads', noisy nets', Munchausen's and the torso's settings, and their combinations."""
        _require_choice("head", self.head, HEADS, auto_none=True)
        _require_choice("torso", self.torso, TORSOS, auto_none=True)
        _require(self.num_atoms >= 2, "num_atoms", self.num_atoms, "must be at least 2")
        if self.v_min is not None and self.v_max is not None:
            _require(self.v_min < self.v_max, "v_min", self.v_min, f"must be below --v-max={self.v_max}")
        _require(self.num_quantiles >= 1, "num_quantiles", self.num_quantiles, "must be at least 1")
        _require(self.kappa >= 0 and math.isfinite(self.kappa), "kappa", self.kappa, "must be >= 0")
        for name in ("iqn_tau_samples", "iqn_target_samples", "iqn_acting_samples"):
            value = getattr(self, name)
            if value is not None:
                _require(value >= 1, name, value, "must be at least 1")
        _require(self.iqn_embedding >= 1, "iqn_embedding", self.iqn_embedding, "must be at least 1")
        _require(self.noisy_sigma0 >= 0, "noisy_sigma0", self.noisy_sigma0, "must be >= 0")
        _require(self.munchausen_tau > 0, "munchausen_tau", self.munchausen_tau, "must be > 0")
        _require(self.munchausen_alpha >= 0, "munchausen_alpha", self.munchausen_alpha, "must be >= 0")
        _require(self.munchausen_l0 < 0, "munchausen_l0", self.munchausen_l0, "must be < 0")
        if self.torso_width is not None:
            _require(1 <= self.torso_width <= 16, "torso_width", self.torso_width, "must be in 1..16")
        if self.munchausen and self.head is not None:
            _require(
                self.head in ("expected", "iqn"),
                "munchausen",
                "on",
                f"is for the expected and iqn heads, not --head={self.head}",
            )
