"""DQN with n-step returns, prioritized replay weights and a target network; the parts of
the algorithm are plain settings.

The replay hands over ``(s, a, R, discount, s')`` with ``R = sum_{j<k} gamma^j r_{t+j}`` and
``discount = gamma^k (1 - terminated)``, so the target needs neither n nor episode ends:

    double:  y = R + discount * Q_target(s', argmax_a Q_online(s', a))   (van Hasselt et al. 2016)
    plain:   y = R + discount * max_a Q_target(s', a)                     (Mnih et al. 2015)

The loss is the importance-weighted mean of ``huber(y - Q(s, a))`` (Mnih et al.'s clipping
of the error to [-1, 1] is exactly the Huber loss's gradient) or of ``(y - Q(s, a))^2 / 2``
(the unclipped error: the same gradient inside [-1, 1]); ``|y - Q(s, a)|`` becomes the new
priority of each sampled item. The optimizer is Adam or DeepMind's centred RMSProp
(:class:`CentredRMSProp`, eps inside the square root, as Nature DQN and Ape-X used it).
"""

from __future__ import annotations

import copy
import logging
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from common.messages import SampleBatch

log = logging.getLogger(__name__)

# Arrays from Ray's object store are read-only; torch only reads them here.
warnings.filterwarnings("ignore", message="The given NumPy array is not writable")


LOSSES = ("huber", "mse")
OPTIMIZERS = ("adam", "rmsprop")


def double_dqn_targets(q_next_online: torch.Tensor, q_next_target: torch.Tensor,
                       returns: torch.Tensor, discounts: torch.Tensor) -> torch.Tensor:
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

    def __init__(self, params, lr: float, decay: float, eps: float):
        if not lr > 0 or not 0 <= decay < 1 or not eps > 0:
            raise ValueError(f"CentredRMSProp needs lr > 0, 0 <= decay < 1, eps > 0; got {lr}, {decay}, {eps}")
        super().__init__(params, dict(lr=lr, decay=decay, eps=eps))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, decay, eps = group["lr"], group["decay"], group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                state = self.state[p]
                if not state:
                    state["grad_avg"] = torch.zeros_like(p)
                    state["square_avg"] = torch.zeros_like(p)
                m, v = state["grad_avg"], state["square_avg"]
                m.mul_(decay).add_(g, alpha=1 - decay)
                v.mul_(decay).addcmul_(g, g, value=1 - decay)
                # v >= m^2 in exact arithmetic; the clamp keeps rounding from taking a root of < 0.
                denom = (v - m * m).clamp_(min=0).add_(eps).sqrt_()
                p.addcdiv_(g, denom, value=-lr)
        return loss


NATURE_RMSPROP_EPS = 0.01 / 32**2  # Nature's "min squared gradient" for a batch-mean loss (see above)


def make_optimizer(name: str, params, lr: float, adam_eps: float = 1.5e-4, rmsprop_decay: float = 0.95,
                   rmsprop_eps: float = NATURE_RMSPROP_EPS) -> torch.optim.Optimizer:
    """Adam (with ``adam_eps``) or :class:`CentredRMSProp` (with decay and eps)."""
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, eps=adam_eps)
    if name == "rmsprop":
        return CentredRMSProp(params, lr=lr, decay=rmsprop_decay, eps=rmsprop_eps)
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")


class DQNLearner:
    """Owns the online and target networks and the optimizer; one ``update`` per batch.

    The target network is synced after every ``target_update_period``-th update, so after
    update number ``k * period`` both networks are equal. ``double_q``: the double-DQN
    target (else Nature's max target); ``loss``: "huber" or "mse"; ``optimizer``: "adam"
    (``adam_eps``) or "rmsprop" (:class:`CentredRMSProp` with ``rmsprop_decay`` and
    ``rmsprop_eps``); ``grad_clip``: the gradient's global norm limit, 0 for none.
    """

    def __init__(self, network: nn.Module, lr: float, adam_eps: float, grad_clip: float,
                 target_update_period: int, device: torch.device | str = "cpu", *, double_q: bool = True,
                 loss: str = "huber", optimizer: str = "adam", rmsprop_decay: float = 0.95,
                 rmsprop_eps: float = NATURE_RMSPROP_EPS):
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        self.device = torch.device(device)
        self.online = network.to(self.device)
        self.target = copy.deepcopy(self.online).requires_grad_(False)
        self.optimizer_name = optimizer
        self.optimizer = make_optimizer(optimizer, self.online.parameters(), lr, adam_eps, rmsprop_decay, rmsprop_eps)
        self.double_q, self.loss = bool(double_q), loss
        self.grad_clip = grad_clip
        self.target_update_period = target_update_period
        self.learner_steps = 0

    def _to_device(self, array: np.ndarray) -> torch.Tensor:
        # uint8 frames travel as bytes and are converted on the device by the network.
        t = array if isinstance(array, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(array))
        if t.device.type != self.device.type:  # not gathered on the device already (learner/mirror.py)
            return t.pin_memory().to(self.device, non_blocking=True)
        return t

    def update(self, batch: SampleBatch) -> dict:
        """One gradient step. Returns loss, mean Q and the new priorities |td| (float32[B])."""
        obs = self._to_device(batch.obs)
        next_obs = self._to_device(batch.next_obs)
        actions = self._to_device(batch.actions.astype(np.int64))
        returns = self._to_device(batch.returns.astype(np.float32))
        discounts = self._to_device(batch.discounts.astype(np.float32))
        weights = self._to_device(batch.weights.astype(np.float32))
        with torch.no_grad():
            if self.double_q:
                targets = double_dqn_targets(self.online(next_obs), self.target(next_obs), returns, discounts)
            else:
                targets = dqn_targets(self.target(next_obs), returns, discounts)
        q = self.online(obs)
        loss, td = td_loss(q, actions, targets, weights, self.loss)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.online.parameters(), self.grad_clip)
        self.optimizer.step()
        self.learner_steps += 1
        if self.learner_steps % self.target_update_period == 0:
            self.sync_target()
        return {
            "loss": float(loss.detach()),
            "mean_q": float(q.detach().mean()),
            "priorities": td.detach().abs().float().cpu().numpy(),
        }

    def sync_target(self) -> None:
        self.target.load_state_dict(self.online.state_dict())

    def weights_numpy(self) -> dict[str, np.ndarray]:
        """The online weights as CPU numpy arrays: what actors receive."""
        return {k: v.detach().cpu().numpy() for k, v in self.online.state_dict().items()}

    def state_dict(self) -> dict:
        return {
            "online": self.online.state_dict(),
            "target": self.target.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "optimizer_name": self.optimizer_name,
            "learner_steps": self.learner_steps,
        }

    def load_state_dict(self, state: dict) -> None:
        """Networks and counters always; the optimizer's state only if it is the same kind
        (checkpoints from before the setting hold Adam's). A run resumed with another
        optimizer starts that one fresh, with a warning."""
        self.online.load_state_dict(state["online"])
        self.target.load_state_dict(state["target"])
        saved = state.get("optimizer_name", "adam")
        if saved == self.optimizer_name:
            self.optimizer.load_state_dict(state["optimizer"])
        else:
            self.optimizer.state.clear()
            log.warning("the checkpoint's optimizer is %s, this run's %s: starting %s's state fresh",
                        saved, self.optimizer_name, self.optimizer_name)
        self.learner_steps = int(state["learner_steps"])


def build_learner(cfg, spec, device: torch.device | str) -> "DQNLearner":
    """The learner for a resolved ``Config`` and an ``EnvSpec``: the one place where the
    config tree is turned into the plain values :class:`DQNLearner` takes."""
    from common.networks import q_network_for

    L = cfg.learner
    return DQNLearner(q_network_for(spec, L), L.lr, L.adam_eps, L.grad_clip, L.target_update_period, device,
                      double_q=L.double_q, loss=L.loss, optimizer=L.optimizer,
                      rmsprop_decay=L.rmsprop_decay, rmsprop_eps=L.rmsprop_eps)
