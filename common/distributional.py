"""The targets and per-item losses of the distributional heads and of Munchausen RL: pure
torch functions of tensors, shared by the learner's loss (``learner/losses.py``) and the
actors' initial priorities (``actors/actor.py``), so both follow one rule.

The replay hands over ``R = sum_{j<k} gamma^j r_{t+j}`` and ``discount = gamma^k (1 - terminated)``
(the learner never needs n), and every target below is built from them:

- C51 (Bellemare et al. 2017): the bootstrapped distribution's atoms ``z_j`` move to
  ``R + discount * z_j``, clipped to [v_min, v_max], and each one's probability is shared
  between its two nearest atoms (:func:`categorical_projection`). A terminal item
  (discount 0) puts all the mass at R. The loss is the cross-entropy of the predicted
  distribution against it; Rainbow uses that loss as the item's priority.
- QR-DQN and IQN (Dabney et al. 2018a, b): target samples ``R + discount * theta_j(s', a*)``;
  the quantile Huber loss (:func:`quantile_huber_loss`) of the predicted quantiles at their
  fractions against them, summed over the predicted quantiles and averaged over the target
  samples (as Dopamine); the per-item loss is the priority.
- Munchausen (Vieillard et al. 2020): the reward gets ``alpha * clip(tau * log pi(a_t|s_t), l0, 0)``
  with ``pi = softmax(q_target / tau)``, and the bootstrap is the soft value
  ``sum_a pi(a|s') (q(s', a) - tau * log pi(a|s'))`` instead of a max (:func:`soft_bootstrap`).
  With n-step returns the bonus is added once, for the first action (as "Beyond The Rainbow").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def categorical_projection(
    probs: torch.Tensor, returns: torch.Tensor, discounts: torch.Tensor, atoms: torch.Tensor
) -> torch.Tensor:
    """``float[B, N]``: ``probs[B, N]`` on ``atoms[N]`` moved to ``returns + discounts * atoms``
    (clipped to the support) and projected back onto ``atoms`` (Bellemare et al. 2017, Alg. 1):
    each moved atom's mass goes to the two nearest atoms in proportion to closeness, so the
    mass is kept. Written as Dopamine's "hat" form, ``sum_j clip(1 - |Tz_j - z_i| / dz, 0, 1) p_j``."""
    v_min, v_max = atoms[0], atoms[-1]
    dz = (atoms[-1] - atoms[0]) / (atoms.numel() - 1)
    moved = (returns.unsqueeze(1) + discounts.unsqueeze(1) * atoms.unsqueeze(0)).clamp(v_min, v_max)  # [B, N]
    weights = (1 - (moved.unsqueeze(1) - atoms.view(1, -1, 1)).abs() / dz).clamp(0, 1)  # [B, N_i, N_j]
    return (weights * probs.unsqueeze(1)).sum(dim=2)


def cross_entropy(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """``float[B]``: ``-sum_i p_i log softmax(logits)_i`` per item."""
    return -(target_probs * F.log_softmax(logits.float(), dim=-1)).sum(dim=-1)


def quantile_huber_loss(
    quantiles: torch.Tensor, fractions: torch.Tensor, targets: torch.Tensor, kappa: float = 1.0
) -> torch.Tensor:
    """``float[B]``: the quantile Huber loss of ``quantiles[B, N]`` at ``fractions[B, N]`` (or
    ``[N]``) against target samples ``targets[B, M]``:

        u = target_m - quantile_i,  rho(u) = |tau_i - 1{u < 0}| * huber_kappa(u) / kappa

    summed over i and averaged over m. ``kappa`` 0 is the plain quantile (pinball) loss."""
    u = targets.unsqueeze(1) - quantiles.unsqueeze(2)  # [B, N, M]
    if kappa > 0:  # torch's fused Huber kernel: 5x faster than where() over the [B, N, M] errors
        huber = F.huber_loss(u, u.new_zeros(()).expand_as(u), reduction="none", delta=kappa) / kappa
    else:
        huber = u.abs()
    if fractions.dim() == 1:
        fractions = fractions.unsqueeze(0)
    weight = (fractions.unsqueeze(2) - (u.detach() < 0).to(u.dtype)).abs()
    return (weight * huber).sum(dim=1).mean(dim=1)


def distributional_item_loss(
    kind: str,
    taken: torch.Tensor,
    boot: torch.Tensor,
    returns: torch.Tensor,
    discounts: torch.Tensor,
    *,
    atoms: torch.Tensor | None = None,
    fractions: torch.Tensor | None = None,
    kappa: float = 1.0,
) -> torch.Tensor:
    """The per-item loss ``float[B]`` of one head for the action taken, which is also its
    priority: ``taken`` is the head's output at (s_t, a_t) (c51: logits ``[B, N]``; qr, iqn:
    quantile values ``[B, N]`` at ``fractions``), ``boot`` the bootstrapped distribution at
    s_{t+k} (c51: probabilities ``[B, N]``; qr, iqn: quantile values ``[B, M]``), ``returns``
    and ``discounts`` the replay's (with any Munchausen bonus already in ``returns``)."""
    returns, discounts = returns.float(), discounts.float()
    if kind == "c51":
        return cross_entropy(taken, categorical_projection(boot.float(), returns, discounts, atoms))
    if kind in ("qr", "iqn"):
        targets = returns.unsqueeze(1) + discounts.unsqueeze(1) * boot.float()
        return quantile_huber_loss(taken.float(), fractions, targets, kappa)
    raise ValueError(f"no distributional loss for head {kind!r}")


def munchausen_bonus(q: torch.Tensor, actions: torch.Tensor, tau: float, alpha: float, l0: float) -> torch.Tensor:
    """``float[B]``: ``alpha * clip(tau * log pi(a|s), l0, 0)`` with ``pi = softmax(q[B, A] / tau)``."""
    tau_log_pi = tau * F.log_softmax(q.float() / tau, dim=1)
    return alpha * tau_log_pi.gather(1, actions.view(-1, 1)).squeeze(1).clamp(l0, 0.0)


def soft_bootstrap(q_next: torch.Tensor, values: torch.Tensor, tau: float) -> torch.Tensor:
    """The soft value at s': ``sum_a pi(a|s') (values[:, a] - tau * log pi(a|s'))`` with
    ``pi = softmax(q_next[B, A] / tau)``; ``values`` is ``[B, A]`` (expected Q: gives ``[B]``)
    or ``[B, A, M]`` (quantile samples: gives ``[B, M]``)."""
    log_pi = F.log_softmax(q_next.float() / tau, dim=1)
    pi = log_pi.exp()
    if values.dim() == 3:
        pi, log_pi = pi.unsqueeze(2), log_pi.unsqueeze(2)
    return (pi * (values.float() - tau * log_pi)).sum(dim=1)
