"""The Q-network's heads: what the torso's features become, for each kind of value estimate.

- ``expected`` (DQN): Q(s, a), ``float32[B, A]``.
- ``c51`` (Bellemare et al. 2017): logits over ``num_atoms`` fixed atoms on [v_min, v_max],
  ``float32[B, A, N]``; Q is the mean of the softmax distribution.
- ``qr`` (QR-DQN, Dabney et al. 2018a): ``num_quantiles`` quantile values at the fixed
  fractions (2i + 1) / 2N, ``float32[B, A, N]``; Q is their mean.
- ``iqn`` (Dabney et al. 2018b): the quantile values at sampled fractions τ, ``float32[B, A, T]``:
  the torso's features are multiplied by an embedding of each τ, ReLU(Linear(cos(π i τ))) for
  i = 1..embedding (Dopamine's indices), before the head.

Every head is either Nature DQN's plain one (Linear-ReLU-Linear) or the dueling one (Wang et
al. 2016), which for a distribution combines per atom (or quantile) as Rainbow does:
``V(s, ·) + A(s, a, ·) - mean_a A(s, a, ·)``. Its linear layers may be noisy (``common.noisy``).
The output layers and the dueling combination always compute in fp32, also under bf16
autocast: at |Q| ≈ 20 bf16 keeps steps of 0.125, which would merge actions 0.1 apart and
round every TD error and priority derived from them.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from common.config.fields import HEADS  # the one list of heads, shared with the config
from common.noisy import linear


@dataclasses.dataclass(frozen=True)
class HeadSpec:
    """What a head computes; plain values, the config's learner settings (``head_spec_for``)."""

    kind: str = "expected"
    dueling: bool = True
    noisy: bool = False
    sigma0: float = 0.5
    num_atoms: int = 51
    v_min: float = -10.0
    v_max: float = 10.0
    num_quantiles: int = 200
    embedding_dim: int = 64
    acting_samples: int = 32

    def __post_init__(self):
        if self.kind not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {self.kind!r}")
        if self.kind == "c51" and (self.num_atoms < 2 or not self.v_min < self.v_max):
            raise ValueError(
                f"c51 needs num_atoms >= 2 and v_min < v_max, got {self.num_atoms}, [{self.v_min}, {self.v_max}]"
            )
        if self.kind == "qr" and self.num_quantiles < 1:
            raise ValueError(f"qr needs num_quantiles >= 1, got {self.num_quantiles}")
        if self.kind == "iqn" and (self.embedding_dim < 1 or self.acting_samples < 1):
            raise ValueError(
                f"iqn needs embedding_dim and acting_samples >= 1, got {self.embedding_dim}, {self.acting_samples}"
            )

    @property
    def outputs_per_action(self) -> int:
        """Values the head's output layer gives per action."""
        return {"c51": self.num_atoms, "qr": self.num_quantiles}.get(self.kind, 1)


def _output(layer: nn.Module) -> nn.Module:
    """Mark an output layer: the actors' converted copies keep it fp32 (``keeps_fp32``)."""
    layer.keeps_fp32 = True
    return layer


def fp32(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``layer(x)`` in fp32, whatever autocast is on (the output layers, see the module doc)."""
    with torch.autocast(x.device.type, enabled=False):
        return layer(x.float())


class DuelingHead(nn.Module):
    """Q(s, a) = V(s) + A(s, a) - mean_a A(s, a) (Wang et al. 2016), per atom when ``atoms`` > 1:
    ``float32[B, A]`` for one value per action, else ``float32[B, A, atoms]``."""

    def __init__(self, in_features: int, num_actions: int, hidden: int, atoms: int = 1, noisy=False, sigma0=0.5):
        super().__init__()
        self.num_actions, self.atoms = num_actions, atoms
        self.value = nn.Sequential(
            linear(in_features, hidden, noisy, sigma0), nn.ReLU(), _output(linear(hidden, atoms, noisy, sigma0))
        )
        self.advantage = nn.Sequential(
            linear(in_features, hidden, noisy, sigma0),
            nn.ReLU(),
            _output(linear(hidden, num_actions * atoms, noisy, sigma0)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value = fp32(self.value[2], self.value[1](self.value[0](x)))
        adv = fp32(self.advantage[2], self.advantage[1](self.advantage[0](x)))
        if self.atoms == 1:
            return value + adv - adv.mean(dim=1, keepdim=True)
        adv = adv.view(-1, self.num_actions, self.atoms)
        return value.unsqueeze(1) + adv - adv.mean(dim=1, keepdim=True)


class PlainHead(nn.Sequential):
    """Nature DQN's head, Linear(in, hidden)-ReLU-Linear(hidden, A [* atoms])."""

    def __init__(self, in_features: int, num_actions: int, hidden: int, atoms: int = 1, noisy=False, sigma0=0.5):
        super().__init__(
            linear(in_features, hidden, noisy, sigma0),
            nn.ReLU(),
            _output(linear(hidden, num_actions * atoms, noisy, sigma0)),
        )
        self.num_actions, self.atoms = num_actions, atoms

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = fp32(self[2], self[1](self[0](x)))
        return out if self.atoms == 1 else out.view(-1, self.num_actions, self.atoms)


def q_head(
    in_features: int, num_actions: int, hidden: int, dueling: bool, atoms: int = 1, noisy=False, sigma0=0.5
) -> nn.Module:
    """The dueling head, or Nature's plain one."""
    cls = DuelingHead if dueling else PlainHead
    return cls(in_features, num_actions, hidden, atoms, noisy, sigma0)


class TauEmbedding(nn.Module):
    """IQN's embedding of quantile fractions: ReLU(Linear(cos(π i τ) for i = 1..dim)),
    ``float[B, T] -> float[B, T, features]``."""

    def __init__(self, dim: int, features: int):
        super().__init__()
        self.register_buffer("freqs", math.pi * torch.arange(1, dim + 1, dtype=torch.float32), persistent=False)
        self.linear = nn.Linear(dim, features)

    def forward(self, taus: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.linear(torch.cos(taus.unsqueeze(-1).float() * self.freqs)))


def qr_fractions(n: int, device=None) -> torch.Tensor:
    """QR-DQN's fixed quantile midpoints (2i + 1) / 2n, ``float32[n]``."""
    return (2 * torch.arange(n, device=device, dtype=torch.float32) + 1) / (2 * n)


def support(spec: HeadSpec, device=None) -> torch.Tensor:
    """C51's atoms, ``num_atoms`` evenly spaced on [v_min, v_max]."""
    return torch.linspace(spec.v_min, spec.v_max, spec.num_atoms, device=device)


def expected_q(kind: str, outputs: torch.Tensor, atoms: torch.Tensor | None = None) -> torch.Tensor:
    """Q ``float32[B, A]`` from a head's outputs: the mean of its distribution (fp32)."""
    with torch.autocast(outputs.device.type, enabled=False):
        outputs = outputs.float()
        if kind == "expected":
            return outputs
        if kind == "c51":
            return (torch.softmax(outputs, dim=-1) * atoms).sum(dim=-1)
        return outputs.mean(dim=-1)
