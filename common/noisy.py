"""Noisy linear layers (Fortunato et al. 2018, "Noisy Networks for Exploration"): the
policy explores through learned, factorised Gaussian noise on the head's weights instead
of ε-greedy actions.

    w = mu_w + sigma_w * (f(eps_out) ⊗ f(eps_in)),   b = mu_b + sigma_b * f(eps_out),
    f(x) = sign(x) sqrt(|x|),   eps ~ N(0, 1)

with mu initialised from U(-1/sqrt(p), 1/sqrt(p)) and sigma to sigma0 / sqrt(p) for p
inputs (the paper's factorised initialisation; sigma0 = 0.5). Factorised noise needs p + q
normal draws per layer instead of p * q.

When the noise is drawn is the caller's choice (:func:`reset_noise`): the learner draws new
noise for the online and the target network before every update (independently), an
actor before every batched forward pass, as Rainbow did; with the noise switched off
(:func:`set_noise`, the evaluator's greedy play, as Dopamine's ``eval_mode``) a layer is
exactly its mean linear layer. The noise lives in buffers that are not part of the state
dict, so published weights and checkpoints carry only mu and sigma.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _scaled(n: int, generator: torch.Generator | None, device) -> torch.Tensor:
    x = torch.randn(n, generator=generator, device=device)
    return x.sign() * x.abs().sqrt()


class NoisyLinear(nn.Module):
    """A linear layer ``in_features -> out_features`` with factorised Gaussian noise."""

    def __init__(self, in_features: int, out_features: int, sigma0: float = 0.5):
        super().__init__()
        if in_features < 1 or out_features < 1 or not sigma0 >= 0:
            raise ValueError(
                f"NoisyLinear needs positive sizes and sigma0 >= 0, got {in_features}, {out_features}, {sigma0}"
            )
        self.in_features, self.out_features, self.sigma0 = in_features, out_features, float(sigma0)
        self.weight_mu = nn.Parameter(torch.empty(out_features, in_features))
        self.weight_sigma = nn.Parameter(torch.empty(out_features, in_features))
        self.bias_mu = nn.Parameter(torch.empty(out_features))
        self.bias_sigma = nn.Parameter(torch.empty(out_features))
        self.register_buffer("eps_in", torch.zeros(in_features), persistent=False)
        self.register_buffer("eps_out", torch.zeros(out_features), persistent=False)
        self.noise = True
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1 / math.sqrt(self.in_features)
        with torch.no_grad():
            self.weight_mu.uniform_(-bound, bound)
            self.bias_mu.uniform_(-bound, bound)
            self.weight_sigma.fill_(self.sigma0 * bound)
            self.bias_sigma.fill_(self.sigma0 * bound)

    def reset_noise(self, generator: torch.Generator | None = None) -> None:
        """Draw new factorised noise (used by every forward pass until the next draw)."""
        self.eps_in.copy_(_scaled(self.in_features, generator, self.eps_in.device))
        self.eps_out.copy_(_scaled(self.out_features, generator, self.eps_out.device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.noise:
            return F.linear(x, self.weight_mu, self.bias_mu)
        weight = self.weight_mu + self.weight_sigma * torch.outer(self.eps_out, self.eps_in)
        return F.linear(x, weight, self.bias_mu + self.bias_sigma * self.eps_out)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, sigma0={self.sigma0}"


def noisy_layers(module: nn.Module) -> list[NoisyLinear]:
    return [m for m in module.modules() if isinstance(m, NoisyLinear)]


def reset_noise(module: nn.Module, generator: torch.Generator | None = None) -> None:
    """New noise in every noisy layer of ``module`` (nothing for a network without any)."""
    with torch.no_grad():
        for layer in noisy_layers(module):
            layer.reset_noise(generator)


def set_noise(module: nn.Module, on: bool) -> None:
    """Switch the noise of every noisy layer on, or off (each layer its mean linear layer)."""
    for layer in noisy_layers(module):
        layer.noise = bool(on)


def linear(in_features: int, out_features: int, noisy: bool, sigma0: float = 0.5) -> nn.Module:
    """A plain or a noisy linear layer."""
    return NoisyLinear(in_features, out_features, sigma0) if noisy else nn.Linear(in_features, out_features)
