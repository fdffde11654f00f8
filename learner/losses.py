"""The learner's loss for each head: forward passes, the target, the weighted loss and each
item's new priority. Pure functions of the two networks and a batch (no optimizer, no device
handling): :class:`learner.dqn.DQNLearner` calls :func:`batch_loss`, possibly compiled.

The replay hands over ``(s, a, R, discount, s')`` with ``R = sum_{j<k} gamma^j r_{t+j}`` and
``discount = gamma^k (1 - terminated)``, so no target needs n or episode ends:

    double:  a* = argmax_a Q_online(s', a)   (van Hasselt et al. 2016)
    plain:   a* = argmax_a Q_target(s', a)   (Mnih et al. 2015)
    expected head:  y = R + discount * Q_target(s', a*);  loss huber(y - Q(s, a)) or (y - Q)^2 / 2
                    (Mnih et al.'s clipping of the error to [-1, 1] is the Huber loss's gradient)
    c51, qr, iqn:   the distribution of the target network at (s', a*), shifted by R and
                    discount (``common.distributional``); cross-entropy or quantile Huber loss

where Q of a distributional head is the mean of its distribution. With Munchausen (expected
and iqn heads) the target is ``R + bonus + discount * soft value`` (``common.distributional``)
and a* is not needed. The loss is the importance-weighted mean over the batch; the priority of
an item is ``|y - Q(s, a)|`` for the expected head and its unweighted loss for the others
(Rainbow's rule for C51, the same for QR and IQN).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from common.distributional import distributional_item_loss, munchausen_bonus, soft_bootstrap
from common.heads import qr_fractions

LOSSES = ("huber", "mse")


@dataclasses.dataclass(frozen=True)
class LossSpec:
    """The loss's plain settings. ``loss``: the expected head's ("huber" or "mse");
    ``kappa``: the quantile Huber threshold; ``tau_samples``/``target_samples``: IQN's N and
    N'; ``munchausen``: None or ``(tau, alpha, l0)``; ``joint_forward``: one online forward
    over s and s' together (expected head, double Q)."""

    kind: str = "expected"
    double_q: bool = True
    loss: str = "huber"
    kappa: float = 1.0
    tau_samples: int = 64
    target_samples: int = 64
    munchausen: tuple[float, float, float] | None = None
    joint_forward: bool = False

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.munchausen is not None and self.kind not in ("expected", "iqn"):
            raise ValueError(f"Munchausen is for the expected and iqn heads, not {self.kind!r}")


def double_dqn_targets(
    q_next_online: torch.Tensor, q_next_target: torch.Tensor, returns: torch.Tensor, discounts: torch.Tensor
) -> torch.Tensor:
    """y[B] = returns + discounts * q_next_target[b, argmax_a q_next_online[b, a]]."""
    best = q_next_online.argmax(dim=1, keepdim=True)
    return returns + discounts * q_next_target.gather(1, best).squeeze(1)


def dqn_targets(q_next_target: torch.Tensor, returns: torch.Tensor, discounts: torch.Tensor) -> torch.Tensor:
    """y[B] = returns + discounts * max_a q_next_target[b, a]: Nature DQN's target."""
    return returns + discounts * q_next_target.max(dim=1).values


def td_loss(q: torch.Tensor, actions: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor, loss: str = "huber"):
    """(weighted mean loss, td errors[B]) for Q-values q[B, A] and targets y[B].

    ``loss``: "huber" (delta 1) or "mse", which is ``td^2 / 2`` so that both have the
    gradient ``-td`` for |td| <= 1 and differ only in clipping it beyond."""
    q_taken = q.gather(1, actions.unsqueeze(1)).squeeze(1)
    td = targets - q_taken
    if loss == "huber":
        per_item = F.huber_loss(q_taken, targets, reduction="none", delta=1.0)
    elif loss == "mse":
        per_item = 0.5 * td.square()
    else:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    return (weights * per_item).mean(), td


def _taken(outputs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """``outputs[B, A, N]`` at each item's action: ``[B, N]``."""
    return outputs[torch.arange(outputs.shape[0], device=outputs.device), actions]


def _expected(online, target, obs, next_obs, actions, returns, discounts, weights, spec: LossSpec, amp):
    with amp():
        if spec.double_q and spec.joint_forward and spec.munchausen is None:
            both = online(torch.cat([obs, next_obs]))
            q, q_next_online = both[: obs.shape[0]], both[obs.shape[0] :].detach()
        else:
            q = online(obs)
            with torch.no_grad():
                q_next_online = online(next_obs) if spec.double_q and spec.munchausen is None else None
        with torch.no_grad():
            q_next_target = target(next_obs)
            q_target = target(obs) if spec.munchausen is not None else None
    q = q.float()
    with torch.no_grad():
        if spec.munchausen is not None:
            tau, alpha, l0 = spec.munchausen
            bonus = munchausen_bonus(q_target.float(), actions, tau, alpha, l0)
            targets = returns + bonus + discounts * soft_bootstrap(q_next_target.float(), q_next_target.float(), tau)
        elif spec.double_q:
            targets = double_dqn_targets(q_next_online.float(), q_next_target.float(), returns, discounts)
        else:
            targets = dqn_targets(q_next_target.float(), returns, discounts)
    loss, td = td_loss(q, actions, targets, weights, spec.loss)
    return loss, td.detach().abs(), q.detach().mean()


def _distributional(online, target, obs, next_obs, actions, returns, discounts, weights, spec: LossSpec, amp):
    b, kind = obs.shape[0], spec.kind
    taus = taus_next = fractions = None
    if kind == "iqn":
        taus = torch.rand(b, spec.tau_samples, device=obs.device)
        taus_next = torch.rand(b, spec.target_samples, device=obs.device)
        fractions = taus
    with amp():
        outputs = online.outputs(obs, taus) if kind == "iqn" else online.outputs(obs)
        with torch.no_grad():
            next_target = target.outputs(next_obs, taus_next) if kind == "iqn" else target.outputs(next_obs)
            next_online = online(next_obs) if spec.double_q and spec.munchausen is None else None
            q_target = target(obs) if spec.munchausen is not None else None
    q_next_target = target.q(next_target)
    with torch.no_grad():
        if spec.munchausen is not None:
            tau, alpha, l0 = spec.munchausen
            returns = returns + munchausen_bonus(q_target.float(), actions, tau, alpha, l0)
            boot = soft_bootstrap(q_next_target, next_target, tau)
        else:
            best = (next_online if spec.double_q else q_next_target).float().argmax(dim=1)
            boot = _taken(next_target.float(), best)
            if kind == "c51":
                boot = torch.softmax(boot, dim=-1)
    if kind == "qr":
        fractions = qr_fractions(outputs.shape[-1], device=outputs.device)
    per_item = distributional_item_loss(
        kind,
        _taken(outputs, actions),
        boot,
        returns,
        discounts,
        atoms=online.atoms,
        fractions=fractions,
        kappa=spec.kappa,
    )
    return (weights * per_item).mean(), per_item.detach(), online.q(outputs).detach().mean()


def batch_loss(online, target, obs, next_obs, actions, returns, discounts, weights, spec: LossSpec, amp):
    """(weighted mean loss, priorities float32[B], mean Q) of one batch, the forward passes
    under ``amp()`` (a context manager: autocast or nothing); the loss is fp32."""
    fn = _expected if spec.kind == "expected" else _distributional
    return fn(online, target, obs, next_obs, actions, returns, discounts, weights, spec, amp)
