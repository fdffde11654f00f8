"""The actors' acting network: a copy of the Q-network in a faster number format.

An actor spends as long in its ε-greedy forward pass as in the emulator when it runs
the network in fp32 (``docs/benchmarks.md``). :class:`ActingNetwork` keeps the fp32
network as the master that published weights load into, and runs a converted copy:

- ``fp32``: the network itself.
- ``bf16``: the large layers (every Conv2d, and each Linear with >= 65,536 weights) hold
  bf16 weights and compute in bf16 (oneDNN accumulates in fp32); the small output layers
  (Linear(512, A), the dueling value) stay fp32 and take their input in fp32, so the
  Q-values, the action gaps and the dueling mean are not rounded to bf16's 8 bits.
  Only where the CPU does bf16 natively (AVX-512 BF16, AMX): elsewhere it is emulated
  and slower than fp32.
- ``int8``: the large Linear layers dynamically quantized (int8 weights, per output
  channel; activations quantized per batch), the convolutions fp32.
- ``bf16-int8``: both: bf16 convolutions, int8 large Linear layers, fp32 output layers.
- ``int8-static``: the Nature CNN in int8 throughout (``actors/int8_static.py``): every
  convolution and the 3136x512 layers, activation scales calibrated on the states the
  actor is acting on; output layers fp32. Converted on a thread beside the env loop, at
  most once per :data:`CONVERT_EVERY` forward passes; the actor acts with the previous
  conversion (fp32 before the first) until the new one is ready. Other networks run
  what ``auto`` would pick without it.
- ``auto``: int8-static for the Nature CNN where torch has an x86 int8 engine, else bf16
  where the CPU has native bf16, else int8 where torch has a quantized engine, else fp32.

Fidelity against the fp32 network (greedy action, Q-values) is measured on real
Breakout states by ``tests/actors/test_acting.py``. A publish costs one load into the
master plus a conversion of the large layers (``load``; a few milliseconds, measured by
``benchmarks.actors``; int8-static's 26-31 ms conversion runs on a thread). No Ray here.
"""

from __future__ import annotations

import concurrent.futures
import copy
import functools
import time
import warnings
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from actors import int8_static
from common.config import ACTOR_PRECISIONS as PRECISIONS
from common.config import cpu_has_native_bf16
from common.heads import qr_fractions
from common.noisy import NoisyLinear, noisy_layers, reset_noise

#: int8-static converts new weights at most once per this many forward passes: Ape-X's
#: actors fetch weights every 400 frames, 100 agent steps of each env.
CONVERT_EVERY = 100
#: Layers with fewer weights than this stay fp32: the output layers, which cost nothing
#: next to the torso and decide the argmax.
LARGE_LAYER_WEIGHTS = 65_536


def native_bf16() -> bool:
    """Whether this CPU does bf16 in hardware (``common.config.cpu_has_native_bf16``, the
    rule the learner's ``--precision auto`` uses too) and torch's oneDNN can use it."""
    return torch.backends.mkldnn.is_available() and cpu_has_native_bf16()


@functools.lru_cache(maxsize=None)
def int8_engine() -> str | None:
    """The quantized engine torch offers for dynamic int8 Linear layers, or None."""
    engines = torch.backends.quantized.supported_engines
    for name in ("x86", "fbgemm", "qnnpack"):
        if name in engines:
            return name
    return None


def resolve_precision(requested: str) -> tuple[str, str]:
    """(precision, why): ``auto`` made concrete for this CPU; an explicit choice the CPU
    cannot run falls back to fp32 (``why`` says so). The network may still narrow it
    (:meth:`ActingNetwork.__init__`: int8-static is for the Nature CNN only)."""
    if requested not in PRECISIONS:
        raise ValueError(f"actor precision must be one of {PRECISIONS}, got {requested!r}")
    if requested == "auto":
        engine = int8_static.static_int8_engine()
        if engine:
            return "int8-static", f"auto: int8 engine {engine} (the Nature CNN; other networks: {_auto_dynamic()[0]})"
        return _auto_dynamic()
    bf16, int8 = native_bf16(), int8_engine()
    if requested == "int8-static" and not int8_static.static_int8_engine():
        precision, why = _auto_dynamic()
        return precision, f"int8-static asked for, but torch has no x86 int8 engine here: {why}"
    if requested == "bf16-int8" and not int8:
        requested = "bf16"  # then as bf16, below
    if requested == "int8" and not int8:
        return "fp32", "int8 asked for, but torch has no quantized engine here: fp32"
    if requested in ("bf16", "bf16-int8") and not bf16:
        # Allowed (oneDNN emulates it), but say that it is slow.
        return requested, f"{requested} asked for; this CPU has no native bf16 (emulated, slower than fp32)"
    return requested, requested


def _auto_dynamic() -> tuple[str, str]:
    """``auto`` without int8-static: bf16 where native, else dynamic int8, else fp32."""
    if native_bf16():
        return "bf16", "auto: the CPU has native bf16"
    int8 = int8_engine()
    if int8:
        return "int8", f"auto: no native bf16; int8 engine {int8}"
    return "fp32", "auto: no native bf16, no int8 engine"


class _Cast(nn.Module):
    """Runs ``layer`` on its input cast to ``dtype`` (a no-op where it already is)."""

    def __init__(self, layer: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.layer, self.dtype = layer, dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x.to(self.dtype))


def _large(module: nn.Module) -> bool:
    """Every convolution (few weights, most of the work) and each big Linear; never an
    output layer or a layer that must stay fp32 (``keeps_fp32``: a distribution's logits or
    quantiles, a spectral-normalised convolution)."""
    if getattr(module, "keeps_fp32", False):
        return False
    if isinstance(module, nn.Conv2d):
        return True
    return isinstance(module, nn.Linear) and module.weight.numel() >= LARGE_LAYER_WEIGHTS


def _quantize_linear(layer: nn.Linear) -> nn.Module:
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear
    from torch.ao.quantization import per_channel_dynamic_qconfig

    layer.qconfig = per_channel_dynamic_qconfig
    try:
        return DynamicLinear.from_float(layer)
    finally:
        del layer.qconfig


def _requantize(qlayer: nn.Module, layer: nn.Linear) -> None:
    """Load ``layer``'s fp32 weights into the dynamic int8 ``qlayer``: symmetric per output
    channel, scale = max|w| / 127.5 (what ``per_channel_dynamic_qconfig``'s observer gives)."""
    w = layer.weight.detach()
    scales = (w.abs().amax(dim=1).double() / 127.5).clamp_min(torch.finfo(torch.float32).eps)
    qw = torch.quantize_per_channel(w, scales, torch.zeros(len(scales), dtype=torch.int64), 0, torch.qint8)
    qlayer.set_weight_bias(qw, None if layer.bias is None else layer.bias.detach())


class ActingNetwork:
    """A Q-network for acting in ``precision`` (see the module docstring), fed with
    fp32 state dicts. ``network`` is the fp32 master; it is put in eval mode and must not
    be trained through this object.

    ``q_values(stacks)``: float32[B, A] for uint8[B, S, 84, 84] (or float32[B, S, D]).
    ``precision``: what runs (fp32 when the network has no large layer, e.g. an MLP).
    int8-static only: ``convert_every`` (forward passes between conversions) and
    ``background`` (convert on a thread; False: at once, in ``q_values``, for tests).
    """

    def __init__(
        self, network: nn.Module, precision: str = "fp32", convert_every: int = CONVERT_EVERY, background: bool = True
    ):
        if precision not in PRECISIONS[1:]:
            raise ValueError(f"precision must be one of {PRECISIONS[1:]}, got {precision!r}")
        self.network = network.eval()
        self._noisy = bool(noisy_layers(network))
        self._pairs: list[tuple[nn.Module, nn.Module, str]] = []  # (master layer, converted layer, format)
        self.static: _StaticConversions | None = None
        self.fallback: str | None = None  # why the network does not run the precision asked for
        if precision == "int8-static":
            if int8_static.supports(network) and int8_static.static_int8_engine():
                self.precision, self.fast = precision, self.network
                self.static = _StaticConversions(self.network, convert_every, background)
                return
            precision = _auto_dynamic()[0]  # a network int8-static does not cover
            self.fallback = f"int8-static covers only the Nature CNN with an expected, non-noisy head: {precision}"
        self.precision = precision
        convertible = any(self._format(m) for m in network.modules())
        self.precision = precision if convertible else "fp32"
        self.fast = self.network if self.precision == "fp32" else self._convert()

    def _format(self, module: nn.Module) -> str | None:
        """What a layer is converted to in this precision: "bf16", "int8" or None (fp32)."""
        if not _large(module):
            return None
        if isinstance(module, nn.Linear) and self.precision in ("int8", "bf16-int8"):
            return "int8"
        return "bf16" if self.precision in ("bf16", "bf16-int8") else None

    def _convert(self) -> nn.Module:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.ao's deprecation notices
            return self._replace(self.network)

    def _replace(self, module: nn.Module) -> nn.Module:
        """A converted copy of ``module``: large layers converted (and remembered for
        ``load``), small layers and other leaves shared with the master (so a load updates
        them for free), containers rebuilt around the new children."""
        fmt = self._format(module)
        if fmt == "bf16":
            fast = _Cast(copy.deepcopy(module).to(torch.bfloat16), torch.bfloat16)
        elif fmt == "int8":
            fast = _Cast(_quantize_linear(module), torch.float32)
        if fmt is not None:
            self._pairs.append((module, fast.layer, fmt))
            return fast
        if isinstance(module, (nn.Conv2d, nn.Linear, NoisyLinear)):
            return _Cast(module, torch.float32)  # its input may come from a bf16 layer
        children = dict(module.named_children())
        if not children:
            return module
        fast = copy.copy(module)  # a shallow copy: same forward, its own child table
        fast._modules = {name: self._replace(child) for name, child in children.items()}
        return fast

    def load(self, state_dict: dict) -> None:
        """Load published fp32 weights (numpy arrays or tensors) and convert them."""
        self.network.load_state_dict({k: torch.as_tensor(v) for k, v in state_dict.items()})
        if self.static is not None:  # converted later, on a thread: from arrays no one can change
            self.static.due({k: _frozen(v) for k, v in state_dict.items()})
            return
        self.sync()

    def sync(self) -> None:
        """Convert the master's current weights into the acting copy (int8-static: due at
        the next forward pass ``convert_every`` after the last conversion began)."""
        if self.static is not None:
            self.static.due(_snapshot(self.network))
            return
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for master, fast, fmt in self._pairs:
                if fmt == "bf16":
                    fast.weight.copy_(master.weight)
                    if master.bias is not None:
                        fast.bias.copy_(master.bias)
                else:
                    _requantize(fast, master)

    def q_values(self, stacks: np.ndarray) -> np.ndarray:
        """Q-values float32[B, A] of the stacks (one forward pass)."""
        return self.outputs(stacks).q

    def outputs(self, stacks: np.ndarray) -> "ActOutputs":
        """One forward pass: Q float32[B, A] and, for a distributional head, each action's
        distribution (what the initial priorities need, ``common.distributional``). A noisy
        network draws new noise first: every acting step explores with its own sample."""
        net = self.fast if self.static is None else self.static.network_for(stacks)
        if self._noisy:
            reset_noise(self.network)  # the noisy layers are shared by the master and the copy
        kind = getattr(self.network, "kind", "expected")
        with torch.inference_mode():
            x = torch.from_numpy(stacks)
            if kind == "expected":
                return ActOutputs(net(x).float().cpu().numpy())
            taus = None
            if kind == "iqn":
                taus = torch.rand(x.shape[0], self.network.spec.acting_samples)
            out = net.outputs(x, taus) if kind == "iqn" else net.outputs(x)
            q = self.network.q(out).cpu().numpy()
            if kind == "c51":
                return ActOutputs(q, torch.log_softmax(out.float(), dim=-1).cpu().numpy())
            if kind == "qr":
                taus = qr_fractions(out.shape[-1]).expand(out.shape[0], -1)
            return ActOutputs(q, out.float().cpu().numpy(), taus.cpu().numpy())

    def describe(self) -> str:
        if self.static is not None:
            return (
                f"int8-static (3 Conv2d and the head's hidden layer int8, activations calibrated on the actor's "
                f"states, output layers fp32; converted on a thread every >= {self.static.every} forward passes)"
            )
        layers = ", ".join(f"{type(m).__name__} {fmt}" for m, _, fmt in self._pairs)
        text = f"{self.precision} ({len(self._pairs)} layers converted: {layers})" if self._pairs else self.precision
        return text if self.fallback is None else f"{text}; {self.fallback}"


class ActOutputs(NamedTuple):
    """One acting forward pass: ``q`` float32[B, A]; for a distributional head ``dist``, each
    action's distribution (c51: log-probabilities ``[B, A, N]``; qr, iqn: quantile values
    ``[B, A, M]``) and, for qr and iqn, the ``fractions`` ``[B, M]`` they are at."""

    q: np.ndarray
    dist: np.ndarray | None = None
    fractions: np.ndarray | None = None


def _snapshot(module: nn.Module) -> dict:
    """A copy of ``module``'s weights that later loads into it cannot change."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _frozen(v):
    """``v`` itself if nothing can write to it (a read-only array, as Ray delivers weights),
    else a copy: a conversion on a thread may read it later."""
    if isinstance(v, np.ndarray) and not v.flags.writeable:
        return v
    return v.detach().clone() if isinstance(v, torch.Tensor) else np.array(v, copy=True)


class _StaticConversions:
    """int8-static's conversions of ``master``'s weights: due after each load, begun at
    most once per ``every`` forward passes (calibrated on the stacks of that pass), run on a
    thread (``background``) and swapped in when ready. Until the first is ready the fp32
    master acts; if one fails, the master acts from then on (with a warning)."""

    def __init__(self, master: nn.Module, every: int, background: bool):
        self.master, self.every, self.background = master, max(1, int(every)), background
        self.calibration = copy.deepcopy(master)  # the converter's own fp32 copy
        self.current: nn.Module | None = None
        self.source: dict | None = _snapshot(master)
        self.future: concurrent.futures.Future | None = None
        self.pool: concurrent.futures.ThreadPoolExecutor | None = None
        self.calls = self.every  # forward passes since the last conversion began
        self.conversions, self.conversion_ms, self.failed = 0, [], False

    def due(self, state_dict: dict) -> None:
        self.source = state_dict

    def network_for(self, stacks: np.ndarray) -> nn.Module:
        self.calls += 1
        if self.future is not None and self.future.done():
            self._take()
        if self.source is not None and self.future is None and self.calls >= self.every and not self.failed:
            source, self.source, self.calls = self.source, None, 0
            states = np.array(stacks, copy=True)
            if self.background:
                if self.pool is None:
                    self.pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="raydqn-int8")
                self.future = self.pool.submit(self._build, source, states)
            else:
                self.future = concurrent.futures.Future()
                try:
                    self.future.set_result(self._build(source, states))
                except Exception as e:  # noqa: BLE001 - reported by _take
                    self.future.set_exception(e)
                self._take()
        return self.master if self.current is None else self.current

    def wait(self) -> None:
        """Block until a conversion in progress is swapped in (benchmarks, tests)."""
        if self.future is not None:
            concurrent.futures.wait([self.future])
            self._take()

    def _take(self) -> None:
        future, self.future = self.future, None
        try:
            self.current = future.result()
        except Exception as e:  # noqa: BLE001 - acting goes on in fp32
            self.failed, self.current = True, None
            warnings.warn(f"int8-static conversion failed ({e!r}): acting in fp32 from now on", stacklevel=2)

    def _build(self, source: dict, states: np.ndarray) -> nn.Module:
        t0 = time.perf_counter()
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.ao's deprecation notices
            self.calibration.load_state_dict({k: torch.as_tensor(v) for k, v in source.items()})
            net = int8_static.StaticInt8Nature(self.calibration, states).eval()
        self.conversions += 1
        self.conversion_ms = (self.conversion_ms + [1e3 * (time.perf_counter() - t0)])[-100:]
        return net
