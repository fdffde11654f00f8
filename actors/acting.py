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
- ``auto``: bf16 where the CPU has native bf16, else int8 where torch has a quantized
  engine, else fp32.

Fidelity against the fp32 network (greedy action, Q-values) is measured on real
Breakout states by ``tests/actors/test_acting.py``. A publish costs one load into the
master plus a conversion of the large layers (``load``; a few milliseconds, measured by
``benchmarks.actors``). No Ray here.
"""

from __future__ import annotations

import copy
import functools
import warnings

import numpy as np
import torch
from torch import nn

from common.config import cpu_has_native_bf16

PRECISIONS = ("auto", "fp32", "bf16", "int8", "bf16-int8")
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
    cannot run falls back to fp32 (``why`` says so)."""
    if requested not in PRECISIONS:
        raise ValueError(f"actor precision must be one of {PRECISIONS}, got {requested!r}")
    bf16, int8 = native_bf16(), int8_engine()
    if requested == "auto":
        if bf16:
            return "bf16", "auto: the CPU has native bf16"
        if int8:
            return "int8", f"auto: no native bf16; int8 engine {int8}"
        return "fp32", "auto: no native bf16, no int8 engine"
    if requested == "bf16-int8" and not int8:
        requested = "bf16"  # then as bf16, below
    if requested == "int8" and not int8:
        return "fp32", "int8 asked for, but torch has no quantized engine here: fp32"
    if requested in ("bf16", "bf16-int8") and not bf16:
        # Allowed (oneDNN emulates it), but say that it is slow.
        return requested, f"{requested} asked for; this CPU has no native bf16 (emulated, slower than fp32)"
    return requested, requested


class _Cast(nn.Module):
    """Runs ``layer`` on its input cast to ``dtype`` (a no-op where it already is)."""

    def __init__(self, layer: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.layer, self.dtype = layer, dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x.to(self.dtype))


def _large(module: nn.Module) -> bool:
    """Every convolution (few weights, most of the work) and each big Linear."""
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
    """

    def __init__(self, network: nn.Module, precision: str = "fp32"):
        if precision not in PRECISIONS[1:]:
            raise ValueError(f"precision must be one of {PRECISIONS[1:]}, got {precision!r}")
        self.network = network.eval()
        self._pairs: list[tuple[nn.Module, nn.Module, str]] = []  # (master layer, converted layer, format)
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
        if isinstance(module, (nn.Conv2d, nn.Linear)):
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
        self.sync()

    def sync(self) -> None:
        """Convert the master's current weights into the acting copy."""
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
        with torch.inference_mode():
            return self.fast(torch.from_numpy(stacks)).float().cpu().numpy()

    def describe(self) -> str:
        layers = ", ".join(f"{type(m).__name__} {fmt}" for m, _, fmt in self._pairs)
        return f"{self.precision} ({len(self._pairs)} layers converted: {layers})" if self._pairs else self.precision
