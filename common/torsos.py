"""The Q-network's torsos: observation in, a flat feature vector out.

- :func:`nature_torso`: the Nature DQN convolutions (Mnih et al. 2015) for ``uint8[B, S, 84, 84]``
  frames, 3136 features.
- :class:`ImpalaTorso`: the IMPALA CNN (Espeholt et al. 2018), three stages of a 3x3
  convolution, a 3x3 max-pool of stride 2 and two residual blocks, with channels (16, 32, 32)
  times ``width``; as in "Beyond The Rainbow" (Clark et al. 2024) an adaptive max-pool to
  6x6 at the end (so any frame size gives 32 * width * 36 features) and, optionally, spectral
  normalisation of the residual blocks' convolutions (Miyato et al. 2018).
- :func:`minatar_torso` and :func:`mlp_torso`: MinAtar's one convolution over its 10x10
  states and a two-layer MLP for flat vectors. These two families keep their own torso.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def nature_torso(stack_size: int) -> nn.Sequential:
    """Conv(32, 8x8, 4)-ReLU-Conv(64, 4x4, 2)-ReLU-Conv(64, 3x3, 1)-ReLU-Flatten: 3136 features."""
    return nn.Sequential(
        nn.Conv2d(stack_size, 32, 8, stride=4),
        nn.ReLU(),
        nn.Conv2d(32, 64, 4, stride=2),
        nn.ReLU(),
        nn.Conv2d(64, 64, 3, stride=1),
        nn.ReLU(),
        nn.Flatten(),
    )


def minatar_torso(channels: int, stack_size: int) -> nn.Sequential:
    """MinAtar's Conv(16, 3x3, 1)-ReLU over ``uint8[B, S, C, 10, 10]`` (S folded into channels)."""
    return nn.Sequential(nn.Flatten(1, 2), nn.Conv2d(stack_size * channels, 16, 3, stride=1), nn.ReLU(), nn.Flatten())


def mlp_torso(in_features: int, hidden: int) -> nn.Sequential:
    """Flatten-Linear-ReLU-Linear-ReLU for ``float32[B, S, D]``."""
    return nn.Sequential(nn.Flatten(), nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())


class SpectralNormConv2d(nn.Conv2d):
    """A convolution whose weight is divided by its largest singular value (of the weight
    as an ``out x (in * k * k)`` matrix), estimated by one power iteration per training
    forward pass from the vector ``u`` kept between passes (Miyato et al. 2018; what
    ``torch.nn.utils.spectral_norm`` does). In eval mode ``u`` is not updated.
    Its own class, not a parametrization, so the state dict holds the plain ``weight``
    and ``u``, and the actors' converted copies can recognise it (``keeps_fp32``)."""

    keeps_fp32 = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        u = torch.randn(self.out_channels)
        self.register_buffer("u", u / u.norm().clamp_min(1e-12))

    def normalized_weight(self) -> torch.Tensor:
        w = self.weight.flatten(1)
        with torch.no_grad():
            u = self.u
            v = F.normalize(w.t().float() @ u, dim=0, eps=1e-12)
            if self.training:
                u = F.normalize(w.float() @ v, dim=0, eps=1e-12)
                self.u.copy_(u)
                v = F.normalize(w.t().float() @ u, dim=0, eps=1e-12)
        sigma = torch.dot(u, w.float() @ v)
        return self.weight / sigma.clamp_min(1e-12).to(self.weight.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.normalized_weight(), self.bias)


class _Residual(nn.Module):
    def __init__(self, channels: int, spectral_norm: bool):
        super().__init__()
        conv = SpectralNormConv2d if spectral_norm else nn.Conv2d
        self.conv0 = conv(channels, channels, 3, padding=1)
        self.conv1 = conv(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv1(F.relu(self.conv0(F.relu(x))))


class ImpalaTorso(nn.Module):
    """The IMPALA CNN (see the module doc) for ``[B, S, H, W]`` inputs already scaled to [0, 1]."""

    def __init__(self, in_channels: int, width: int = 1, spectral_norm: bool = False, pool: int = 6):
        super().__init__()
        if width < 1 or pool < 1:
            raise ValueError(f"the IMPALA torso needs width >= 1 and pool >= 1, got {width}, {pool}")
        stages, c_in = [], in_channels
        for c in (16 * width, 32 * width, 32 * width):
            stages += [
                nn.Conv2d(c_in, c, 3, padding=1),
                nn.MaxPool2d(3, stride=2, padding=1),
                _Residual(c, spectral_norm),
                _Residual(c, spectral_norm),
            ]
            c_in = c
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveMaxPool2d((pool, pool))
        self.features = c_in * pool * pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(F.relu(self.stages(x))).flatten(1)
