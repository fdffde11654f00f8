"""The optimizers of the learner: Adam, and DeepMind's centred RMSProp as Nature DQN and
Ape-X used it (eps inside the square root, which ``torch.optim.RMSprop`` cannot express).
:func:`make_optimizer` is the one place a name becomes an optimizer."""

from __future__ import annotations

import torch

OPTIMIZERS = ("adam", "rmsprop")


class CentredRMSProp(torch.optim.Optimizer):
    """DeepMind's centred RMSProp, as in Nature DQN's Lua code and TF's ``centered=True``:

        m  <- decay * m  + (1 - decay) * g         (mean gradient)
        v  <- decay * v  + (1 - decay) * g^2       (mean squared gradient)
        theta <- theta - lr * g / sqrt(v - m^2 + eps)

    Nature's table calls ``decay`` "gradient momentum" and "squared gradient momentum"
    (both 0.95) and ``eps`` "min squared gradient" (0.01): it is added *inside* the square
    root, so the denominator is at least sqrt(eps). ``torch.optim.RMSprop(centered=True)``
    adds eps *outside* (``sqrt(v - m^2) + eps``), which no choice of its eps reproduces.
    No momentum (neither paper used any).

    Only eps is not scale-free: gradients c times larger give the same step as eps / c^2.
    DeepMind's Lua code sums the batch's gradients where we average them, so its 0.01 at a
    batch of 32 is ``eps = 0.01 / 32**2`` here (:data:`NATURE_RMSPROP_EPS`)."""

    def __init__(self, params, lr: float, decay: float, eps: float, foreach: bool = False):
        if not lr > 0 or not 0 <= decay < 1 or not eps > 0:
            raise ValueError(f"CentredRMSProp needs lr > 0, 0 <= decay < 1, eps > 0; got {lr}, {decay}, {eps}")
        super().__init__(params, dict(lr=lr, decay=decay, eps=eps))
        self.foreach = bool(foreach)  # one kernel per operation over all tensors: the same arithmetic

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, decay, eps = group["lr"], group["decay"], group["eps"]
            params = [p for p in group["params"] if p.grad is not None]
            for p in params:
                if not self.state[p]:
                    self.state[p]["grad_avg"] = torch.zeros_like(p)
                    self.state[p]["square_avg"] = torch.zeros_like(p)
            if not params:
                continue
            grads = [p.grad for p in params]
            ms = [self.state[p]["grad_avg"] for p in params]
            vs = [self.state[p]["square_avg"] for p in params]
            (_step_foreach if self.foreach else _step_loop)(params, grads, ms, vs, lr, decay, eps)
        return loss


def _step_loop(params, grads, ms, vs, lr: float, decay: float, eps: float) -> None:
    for p, g, m, v in zip(params, grads, ms, vs):
        m.mul_(decay).add_(g, alpha=1 - decay)
        v.mul_(decay).addcmul_(g, g, value=1 - decay)
        # v >= m^2 in exact arithmetic; the clamp keeps rounding from taking a root of < 0.
        denom = (v - m * m).clamp_(min=0).add_(eps).sqrt_()
        p.addcdiv_(g, denom, value=-lr)


def _step_foreach(params, grads, ms, vs, lr: float, decay: float, eps: float) -> None:
    """:func:`_step_loop`'s arithmetic, each operation over all tensors at once."""
    torch._foreach_mul_(ms, decay)
    torch._foreach_add_(ms, grads, alpha=1 - decay)
    torch._foreach_mul_(vs, decay)
    torch._foreach_addcmul_(vs, grads, grads, value=1 - decay)
    denom = torch._foreach_sub(vs, torch._foreach_mul(ms, ms))
    torch._foreach_clamp_min_(denom, 0.0)
    torch._foreach_add_(denom, eps)
    torch._foreach_sqrt_(denom)
    torch._foreach_addcdiv_(params, grads, denom, value=-lr)


NATURE_RMSPROP_EPS = 0.01 / 32**2  # Nature's "min squared gradient" for a batch-mean loss (see above)


def make_optimizer(
    name: str,
    params,
    lr: float,
    adam_eps: float = 1.5e-4,
    rmsprop_decay: float = 0.95,
    rmsprop_eps: float = NATURE_RMSPROP_EPS,
    fused: str = "",
) -> torch.optim.Optimizer:
    """Adam (with ``adam_eps``) or :class:`CentredRMSProp` (with decay and eps).

    ``fused``: "" (torch's default implementation), "foreach" (one kernel per operation over
    all tensors) or "fused" (Adam's single fused kernel; RMSProp has none and uses foreach)."""
    if fused not in ("", "foreach", "fused"):
        raise ValueError(f"fused must be '', 'foreach' or 'fused', got {fused!r}")
    if name == "adam":
        kind = {"foreach": dict(foreach=True), "fused": dict(fused=True)}.get(fused, {})
        return torch.optim.Adam(params, lr=lr, eps=adam_eps, **kind)
    if name == "rmsprop":
        return CentredRMSProp(params, lr=lr, decay=rmsprop_decay, eps=rmsprop_eps, foreach=bool(fused))
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")
