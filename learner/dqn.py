"""The learner: the online and target networks, the optimizer and one update per batch.

The loss of each head lives in ``learner/losses.py`` and the optimizers in
``learner/optimizers.py``; this module owns the networks, the device, the fast paths and the
hand-off of each update's priorities.

The fast paths are plain constructor values, each off by default here (``build_learner``
takes the resolved config's choices): bf16 autocast of the forward passes (the heads' output
layers, targets, TD errors and the loss stay fp32), TF32, ``channels_last``, a foreach/fused
optimizer, ``torch.compile`` of the forward passes and the loss (falls back to eager if it
fails), one online forward over s and s' together, and reading loss and mean Q back only
every ``stats_period`` updates. On CUDA the priorities come back one update late, so the host
never waits for the step it has just queued (:meth:`DQNLearner.update`). Noisy networks get
new noise, independently for the online and the target network, before every update.
"""

from __future__ import annotations

import copy
import functools
import logging
import time
import warnings
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from common.config import is_cuda
from common.messages import SampleBatch
from common.noisy import noisy_layers, reset_noise
from learner.losses import LossSpec, batch_loss
from learner.optimizers import NATURE_RMSPROP_EPS, make_optimizer

log = logging.getLogger(__name__)

# Arrays from Ray's object store are read-only; torch only reads them here.
warnings.filterwarnings("ignore", message="The given NumPy array is not writable")

PRECISIONS = ("fp32", "bf16")


def set_tf32(on: bool) -> None:
    """TF32 for CUDA matmuls and convolutions, or full fp32, through torch's public API
    (``set_float32_matmul_precision`` and ``cudnn.allow_tf32``), so every flag, old and new,
    still reads back (mixing torch >= 2.9's ``fp32_precision`` with the older flags makes
    reading them raise). Process-wide settings."""
    torch.set_float32_matmul_precision("high" if on else "highest")
    torch.backends.cudnn.allow_tf32 = bool(on)


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
    priorities one update late (see :meth:`update`). ``compile_mode``: torch.compile's mode
    (None: its default; "reduce-overhead": CUDA graphs).

    ``loss_spec`` (``learner.losses.LossSpec``) sets the loss of the network's head and
    Munchausen; without it, the expected head's loss from ``double_q``, ``loss`` and
    ``joint_forward``. On ``cuda:N`` the learner makes N this thread's current device.
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
        compile_mode: str | None = None,
        joint_forward: bool = False,
        stats_period: int = 1,
        late_priorities: bool | None = None,
        loss_spec: LossSpec | None = None,
    ):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.device = torch.device(device)
        cuda = is_cuda(self.device)
        if cuda:
            if self.device.index is not None:
                torch.cuda.set_device(self.device)  # CUDA events and streams of this thread on this device
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
        kind = getattr(network, "kind", "expected")
        self.loss_spec = loss_spec or LossSpec(kind=kind, double_q=double_q, loss=loss, joint_forward=joint_forward)
        if self.loss_spec.kind != kind:
            raise ValueError(f"the loss is for the {self.loss_spec.kind} head, the network has the {kind} head")
        self.double_q, self.loss = self.loss_spec.double_q, self.loss_spec.loss
        self.grad_clip = grad_clip
        self.target_update_period = target_update_period
        self.learner_steps = 0
        self.precision, self.joint_forward = precision, self.loss_spec.joint_forward
        self.stats_period = max(1, int(stats_period))
        self.late_priorities = cuda if late_priorities is None else bool(late_priorities)
        self.noisy = bool(noisy_layers(self.online))
        self._setup_compile(compile, compile_mode)
        self._stats = {"loss": float("nan"), "mean_q": float("nan"), "stats_step": 0}
        self._pending: _Pending | None = None
        self._host: torch.Tensor | None = None

    def _setup_compile(self, compile: bool, mode: str | None) -> None:
        """The loss's compiled form (made at the first update), or the eager one."""
        self._compute = torch.compile(self._losses, dynamic=False, mode=mode) if compile else self._losses
        self._compile_pending = bool(compile)
        self.compile_seconds: float | None = None
        self.compile_error: str | None = None

    def _to_device(self, array: np.ndarray) -> torch.Tensor:
        # uint8 frames travel as bytes and are converted on the device by the network.
        t = array if isinstance(array, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(array))
        if t.device.type != self.device.type:  # not gathered on the device already (learner/mirror.py)
            t = t.pin_memory().to(self.device, non_blocking=True)
        if self.channels_last and t.dim() == 4:
            t = t.contiguous(memory_format=torch.channels_last)
        return t

    def _losses(self, obs, next_obs, actions, returns, discounts, weights):
        """(loss, priorities[B], mean Q) in fp32: the forward passes and the loss
        (``learner/losses.py``), what ``compile`` wraps."""
        amp = functools.partial(
            torch.autocast, self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"
        )
        return batch_loss(
            self.online, self.target, obs, next_obs, actions, returns, discounts, weights, self.loss_spec, amp
        )

    def _backward(self, compute, tensors):
        self.optimizer.zero_grad(set_to_none=True)
        loss, priorities, mean_q = compute(*tensors)
        loss.backward()
        return loss, priorities, mean_q

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
        ``stats_period``-th, the last read ones in between) and the new priorities:

        - ``handoff``: the ``(tag, ids, float32[B] priorities)`` ready to send now, a list
          the caller forwards as it is: this batch's, or on the late path (CUDA) the previous
          update's (none after the first), whose device-to-host copy went into pinned memory
          without waiting and is done by now unless the device is behind. :meth:`flush`
          hands over the last one.
        - ``priorities``: this batch's float32[B] when not on the late path, else None.
        """
        tensors = [
            self._to_device(batch.obs),
            self._to_device(batch.next_obs),
            self._to_device(batch.actions.astype(np.int64)),
            self._to_device(batch.returns.astype(np.float32)),
            self._to_device(batch.discounts.astype(np.float32)),
            self._to_device(batch.weights.astype(np.float32)),
        ]
        if self.noisy:  # new noise for this update, independent in the two networks (Rainbow)
            reset_noise(self.online)
            reset_noise(self.target)
        if self._compile_pending:
            loss, priorities, mean_q = self._first_compiled_backward(tensors)
        else:
            loss, priorities, mean_q = self._backward(self._compute, tensors)
        if self.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.online.parameters(), self.grad_clip)
        self.optimizer.step()
        self.learner_steps += 1
        if self.learner_steps % self.target_update_period == 0:
            self.sync_target()
        if self._stats["stats_step"] == 0 or self.learner_steps % self.stats_period == 0:
            self._stats = {"loss": float(loss.detach()), "mean_q": float(mean_q), "stats_step": self.learner_steps}
        priorities = priorities.float()
        if not self.late_priorities:
            now = priorities.cpu().numpy()
            return {**self._stats, "priorities": now, "handoff": [(tag, batch.ids, now)]}
        late = self.flush()
        buffer = self._buffer(priorities.shape[0])
        buffer.copy_(priorities, non_blocking=True)
        done = torch.cuda.Event() if self.device.type == "cuda" else None
        if done is not None:
            done.record()
        self._pending = _Pending(tag, batch.ids, buffer, done)
        return {**self._stats, "priorities": None, "handoff": [] if late is None else [late]}

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
        """The target network takes the online network's weights (and spectral norms' vectors)."""
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


def loss_spec_for(L, kind: str) -> LossSpec:
    """The loss settings of a resolved ``LearnerConfig`` for a network with the ``kind`` head."""
    return LossSpec(
        kind=kind,
        double_q=L.double_q,
        loss=L.loss,
        kappa=L.kappa,
        tau_samples=L.iqn_tau_samples,
        target_samples=L.iqn_target_samples,
        munchausen=(L.munchausen_tau, L.munchausen_alpha, L.munchausen_l0) if L.munchausen else None,
        joint_forward=L.joint_forward,
    )


def build_learner(cfg, spec, device: torch.device | str) -> "DQNLearner":
    """The learner for a resolved ``Config`` and an ``EnvSpec``: the one place where the
    config tree is turned into the plain values :class:`DQNLearner` takes."""
    from common.networks import q_network_for

    L = cfg.learner  # resolved by common.config.resolve (the one place 'auto' is settled)
    cuda = is_cuda(device)
    network = q_network_for(spec, L)
    return DQNLearner(
        network,
        L.lr,
        L.adam_eps,
        L.grad_clip,
        L.target_update_period,
        device,
        optimizer=L.optimizer,
        rmsprop_decay=L.rmsprop_decay,
        rmsprop_eps=L.rmsprop_eps,
        precision=L.precision,
        tf32=L.tf32,
        channels_last=L.channels_last,
        compile=L.compile,
        compile_mode=None if L.compile_mode == "default" else L.compile_mode,
        fused_optimizer=("fused" if cuda else "foreach") if L.fused_optimizer else "",
        stats_period=L.stats_period,
        loss_spec=loss_spec_for(L, network.kind),
    )
