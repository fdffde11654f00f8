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

The fast paths are plain constructor values, each off by default here (``build_learner``
takes the resolved config's choices): bf16 autocast of the forward passes (weights, targets,
TD errors and the loss stay fp32), TF32, ``channels_last``, a foreach/fused optimizer,
``torch.compile`` of the forward passes and the loss (falls back to eager if it fails),
one online forward over s and s' together, and reading loss and mean Q back only every
``stats_period`` updates. On CUDA the priorities come back one update late, so the host
never waits for the step it has just queued (:meth:`DQNLearner.update`).
"""

from __future__ import annotations

import copy
import logging
import time
import warnings
from typing import NamedTuple

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
PRECISIONS = ("fp32", "bf16")


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


def set_tf32(on: bool) -> None:
    """TF32 for CUDA matmuls and convolutions, or full fp32 (process-wide torch settings;
    torch >= 2.9 spells them ``fp32_precision`` and warns of mixing with the older flags)."""
    if hasattr(torch.backends.cuda.matmul, "fp32_precision"):
        torch.backends.cuda.matmul.fp32_precision = torch.backends.cudnn.conv.fp32_precision = "tf32" if on else "ieee"
    else:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = bool(on)


class _Pending(NamedTuple):
    """One update's priorities on their way to pinned host memory (the CUDA late path)."""

    tag: object
    ids: np.ndarray
    buffer: torch.Tensor
    done: "torch.cuda.Event | None"  # None on a CPU, where the copy is done when it returns


class DQNLearner:
    """Owns the online and target networks and the optimizer; one ``update`` per batch.

    The target network is synced after every ``target_update_period``-th update, so after
    update number ``k * period`` both networks are equal. ``double_q``: the double-DQN
    target (else Nature's max target); ``loss``: "huber" or "mse"; ``optimizer``: "adam"
    (``adam_eps``) or "rmsprop" (:class:`CentredRMSProp` with ``rmsprop_decay`` and
    ``rmsprop_eps``); ``grad_clip``: the gradient's global norm limit, 0 for none.

    Fast paths (all off by default, the plain fp32 eager update): ``precision`` "bf16" runs
    the forward passes under bf16 autocast (master weights, targets, TD errors and the loss
    stay fp32); ``tf32`` lets CUDA matmuls and convolutions use TF32 (a process-wide torch
    setting, set here only on CUDA); ``channels_last`` keeps 4-D inputs and conv weights
    NHWC; ``fused_optimizer``: "foreach" or "fused" (see :func:`make_optimizer`);
    ``compile``: torch.compile the forward passes and the loss, on the first update, with
    ``compile_seconds`` set, or eager again (one warning, ``compile_error`` set) if it
    fails; ``joint_forward``: with double_q, one online forward over s and s' together;
    ``stats_period``: loss and mean Q are read back from the device every that many updates
    (0 or 1: every update). ``late_priorities`` (None: on CUDA, where it saves a sync; on a
    CPU there is none to save, and True there only tests the path) returns each update's
    priorities one update late (see :meth:`update`).
    """

    def __init__(
        self,
        network: nn.Module,
        lr: float,
        adam_eps: float,
        grad_clip: float,
        target_update_period: int,
        device: torch.device | str = "cpu",
        *,
        double_q: bool = True,
        loss: str = "huber",
        optimizer: str = "adam",
        rmsprop_decay: float = 0.95,
        rmsprop_eps: float = NATURE_RMSPROP_EPS,
        precision: str = "fp32",
        tf32: bool = False,
        channels_last: bool = False,
        fused_optimizer: str = "",
        compile: bool = False,
        joint_forward: bool = False,
        stats_period: int = 1,
        late_priorities: bool | None = None,
    ):
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.device = torch.device(device)
        cuda = self.device.type == "cuda"
        if cuda:
            set_tf32(tf32)
        self.channels_last = bool(channels_last)
        if self.channels_last:
            network = network.to(memory_format=torch.channels_last)  # conv weights only; others stay
        self.online = network.to(self.device)
        self.target = copy.deepcopy(self.online).requires_grad_(False)
        self.optimizer_name = optimizer
        self.optimizer = make_optimizer(
            optimizer, self.online.parameters(), lr, adam_eps, rmsprop_decay, rmsprop_eps, fused_optimizer
        )
        self.double_q, self.loss = bool(double_q), loss
        self.grad_clip = grad_clip
        self.target_update_period = target_update_period
        self.learner_steps = 0
        self.precision, self.joint_forward = precision, bool(joint_forward)
        self.stats_period = max(1, int(stats_period))
        self.late_priorities = cuda if late_priorities is None else bool(late_priorities)
        self._compute = torch.compile(self._losses, dynamic=False) if compile else self._losses
        self._compile_pending = bool(compile)
        self.compile_seconds: float | None = None
        self.compile_error: str | None = None
        self._stats = {"loss": float("nan"), "mean_q": float("nan"), "stats_step": 0}
        self._pending: _Pending | None = None
        self._host: torch.Tensor | None = None

    def _to_device(self, array: np.ndarray) -> torch.Tensor:
        # uint8 frames travel as bytes and are converted on the device by the network.
        t = array if isinstance(array, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(array))
        if t.device.type != self.device.type:  # not gathered on the device already (learner/mirror.py)
            t = t.pin_memory().to(self.device, non_blocking=True)
        if self.channels_last and t.dim() == 4:
            t = t.contiguous(memory_format=torch.channels_last)
        return t

    def _losses(self, obs, next_obs, actions, returns, discounts, weights):
        """(loss, td[B], mean Q) in fp32: the forward passes and the loss, what ``compile`` wraps."""
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            if self.double_q and self.joint_forward:
                both = self.online(torch.cat([obs, next_obs]))
                q, q_next_online = both[: obs.shape[0]], both[obs.shape[0] :].detach()
            else:
                q = self.online(obs)
                with torch.no_grad():
                    q_next_online = self.online(next_obs) if self.double_q else None
            with torch.no_grad():
                q_next_target = self.target(next_obs)
        q = q.float()
        with torch.no_grad():
            if self.double_q:
                targets = double_dqn_targets(q_next_online.float(), q_next_target.float(), returns, discounts)
            else:
                targets = dqn_targets(q_next_target.float(), returns, discounts)
        loss, td = td_loss(q, actions, targets, weights, self.loss)
        return loss, td.detach(), q.detach().mean()

    def _backward(self, compute, tensors):
        self.optimizer.zero_grad(set_to_none=True)
        loss, td, mean_q = compute(*tensors)
        loss.backward()
        return loss, td, mean_q

    def _first_compiled_backward(self, tensors):
        """The first compiled step (the compile happens here, forward and backward); eager
        from then on if it fails."""
        self._compile_pending = False
        t0 = time.perf_counter()
        try:
            out = self._backward(self._compute, tensors)
        except Exception as e:  # the inductor toolchain missing, an op it cannot trace, ...
            self.compile_error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            log.warning("torch.compile failed, the learner runs eager: %s", self.compile_error)
            self._compute = self._losses
            return self._backward(self._compute, tensors)
        self.compile_seconds = time.perf_counter() - t0
        log.info("torch.compile: the first update took %.1f s, compile included", self.compile_seconds)
        return out

    def update(self, batch: SampleBatch, tag=None) -> dict:
        """One gradient step. Returns ``loss`` and ``mean_q`` (the values of update number
        ``stats_step``: read from the device after the first update and then every
        ``stats_period``-th, the last read ones in between) and the new priorities |td|:

        - ``priorities``: float32[B] for this batch; None on the late path (CUDA), where
        - ``late_priorities`` is the previous update's ``(tag, ids, float32[B])`` (None after
          the first): its device-to-host copy went into pinned memory without waiting, and
          is done by now unless the device is behind. :meth:`flush` hands over the last one.
        """
        tensors = [
            self._to_device(batch.obs),
            self._to_device(batch.next_obs),
            self._to_device(batch.actions.astype(np.int64)),
            self._to_device(batch.returns.astype(np.float32)),
            self._to_device(batch.discounts.astype(np.float32)),
            self._to_device(batch.weights.astype(np.float32)),
        ]
        if self._compile_pending:
            loss, td, mean_q = self._first_compiled_backward(tensors)
        else:
            loss, td, mean_q = self._backward(self._compute, tensors)
        if self.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.online.parameters(), self.grad_clip)
        self.optimizer.step()
        self.learner_steps += 1
        if self.learner_steps % self.target_update_period == 0:
            self.sync_target()
        if self._stats["stats_step"] == 0 or self.learner_steps % self.stats_period == 0:
            self._stats = {"loss": float(loss.detach()), "mean_q": float(mean_q), "stats_step": self.learner_steps}
        priorities = td.abs().float()
        if not self.late_priorities:
            return {**self._stats, "priorities": priorities.cpu().numpy(), "late_priorities": None}
        late = self.flush()
        buffer = self._buffer(priorities.shape[0])
        buffer.copy_(priorities, non_blocking=True)
        done = torch.cuda.Event() if self.device.type == "cuda" else None
        if done is not None:
            done.record()
        self._pending = _Pending(tag, batch.ids, buffer, done)
        return {**self._stats, "priorities": None, "late_priorities": late}

    def _buffer(self, size: int) -> torch.Tensor:
        """The pinned host buffer for the priorities (free again once :meth:`flush` copied it out)."""
        if self._host is None or self._host.shape[0] != size:
            self._host = torch.empty(size, dtype=torch.float32, pin_memory=self.device.type == "cuda")
        return self._host

    def flush(self):
        """The pending update's ``(tag, ids, float32[B] priorities)``, waiting for its copy;
        None if there is none (always None off the late path). Call it before a checkpoint
        or at the end, so that the last update's priorities are not lost."""
        pending, self._pending = self._pending, None
        if pending is None:
            return None
        if pending.done is not None:
            pending.done.synchronize()
        return pending.tag, pending.ids, pending.buffer.numpy().copy()

    def sync_target(self) -> None:
        self.target.load_state_dict(self.online.state_dict())

    def weights_numpy(self) -> dict[str, np.ndarray]:
        """The online weights as CPU numpy arrays: what actors receive."""
        return {k: v.detach().contiguous().cpu().numpy() for k, v in self.online.state_dict().items()}

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
            log.warning(
                "the checkpoint's optimizer is %s, this run's %s: starting %s's state fresh",
                saved,
                self.optimizer_name,
                self.optimizer_name,
            )
        self.learner_steps = int(state["learner_steps"])


def build_learner(cfg, spec, device: torch.device | str) -> "DQNLearner":
    """The learner for a resolved ``Config`` and an ``EnvSpec``: the one place where the
    config tree is turned into the plain values :class:`DQNLearner` takes."""
    from common.config import resolve_fast_paths
    from common.networks import q_network_for

    cuda = torch.device(device).type == "cuda"
    L = resolve_fast_paths(cfg.learner, cuda)  # already resolved in a run; settles 'auto' for this device otherwise
    return DQNLearner(
        q_network_for(spec, L),
        L.lr,
        L.adam_eps,
        L.grad_clip,
        L.target_update_period,
        device,
        double_q=L.double_q,
        loss=L.loss,
        optimizer=L.optimizer,
        rmsprop_decay=L.rmsprop_decay,
        rmsprop_eps=L.rmsprop_eps,
        precision=L.precision,
        tf32=L.tf32,
        channels_last=L.channels_last,
        compile=L.compile,
        joint_forward=L.joint_forward,
        fused_optimizer=("fused" if cuda else "foreach") if L.fused_optimizer else "",
        stats_period=L.stats_period,
    )
