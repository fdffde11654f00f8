"""Double DQN with n-step returns, prioritized replay weights and a target network.

The replay hands over ``(s, a, R, discount, s')`` with ``R = sum_{j<k} gamma^j r_{t+j}`` and
``discount = gamma^k (1 - terminated)``, so the target needs neither n nor episode ends:

    y = R + discount * Q_target(s', argmax_a Q_online(s', a))      (van Hasselt et al. 2016)

The loss is the importance-weighted Huber loss of ``Q_online(s, a) - y``; ``|y - Q(s, a)|``
becomes the new priority of each sampled item.
"""

from __future__ import annotations

import copy

import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from common.messages import SampleBatch

# Arrays from Ray's object store are read-only; torch only reads them here.
warnings.filterwarnings("ignore", message="The given NumPy array is not writable")


def double_dqn_targets(q_next_online: torch.Tensor, q_next_target: torch.Tensor,
                       returns: torch.Tensor, discounts: torch.Tensor) -> torch.Tensor:
    """y[B] = returns + discounts * q_next_target[b, argmax_a q_next_online[b, a]]."""
    best = q_next_online.argmax(dim=1, keepdim=True)
    return returns + discounts * q_next_target.gather(1, best).squeeze(1)


def td_loss(q: torch.Tensor, actions: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor):
    """(weighted mean Huber loss, td errors[B]) for Q-values q[B, A] and targets y[B]."""
    q_taken = q.gather(1, actions.unsqueeze(1)).squeeze(1)
    td = targets - q_taken
    loss = (weights * F.huber_loss(q_taken, targets, reduction="none", delta=1.0)).mean()
    return loss, td


class DQNLearner:
    """Owns the online and target networks and the optimizer; one ``update`` per batch.

    The target network is synced after every ``target_update_period``-th update, so after
    update number ``k * period`` both networks are equal.
    """

    def __init__(self, network: nn.Module, lr: float, adam_eps: float, grad_clip: float,
                 target_update_period: int, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.online = network.to(self.device)
        self.target = copy.deepcopy(self.online).requires_grad_(False)
        self.optimizer = torch.optim.Adam(self.online.parameters(), lr=lr, eps=adam_eps)
        self.grad_clip = grad_clip
        self.target_update_period = target_update_period
        self.learner_steps = 0

    def _to_device(self, array: np.ndarray) -> torch.Tensor:
        # uint8 frames travel as bytes and are converted on the device by the network.
        t = torch.from_numpy(np.ascontiguousarray(array))
        if self.device.type == "cuda":
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
            targets = double_dqn_targets(self.online(next_obs), self.target(next_obs), returns, discounts)
        q = self.online(obs)
        loss, td = td_loss(q, actions, targets, weights)
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
            "learner_steps": self.learner_steps,
        }

    def load_state_dict(self, state: dict) -> None:
        self.online.load_state_dict(state["online"])
        self.target.load_state_dict(state["target"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.learner_steps = int(state["learner_steps"])


def build_learner(cfg, spec, device: torch.device | str) -> "DQNLearner":
    """The learner for a resolved ``Config`` and an ``EnvSpec``: the one place where the
    config tree is turned into the plain values :class:`DQNLearner` takes."""
    from common.networks import q_network_for

    L = cfg.learner
    return DQNLearner(q_network_for(spec, L), L.lr, L.adam_eps, L.grad_clip, L.target_update_period, device)
