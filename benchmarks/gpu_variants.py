"""Standalone learner update rates for the GPU suite: one variant per default still to decide.

``benchmarks.gpu_suite``'s ``standalone`` and ``presets`` phases. Each variant times
``DQNLearner.update`` (built by ``learner.dqn.build_learner`` from a resolved config, as the
trainer builds it) on random Atari-shaped batches, changing one thing against the
reference ``auto_on_device``: the defaults resolved for the device, the frames already on
it (what the mirror feed's gather hands the learner) and the four small per-batch arrays
(actions, returns, discounts, weights) copied from the host one by one, as the learner does.
The other variants: compile off; ``torch.backends.cudnn.benchmark``; one packed copy of the
small arrays instead of four (or none: already on the device); CUDA graphs (compile mode
``reduce-overhead``); the whole batch from host memory (the stacked feed); other batch
sizes; fp32 with and without TF32; and each preset of ``common.config.PRESETS`` at its own
batch size. Process-wide torch settings a variant changes are set back after it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import time
from typing import Callable

import numpy as np

#: The frames of an Atari batch: uint8[B, 4, 84, 84], as the replay stacks them.
STACK, FRAME, NUM_ACTIONS = 4, (84, 84), 4
#: The compile time assumed before the first compiled variant has measured one (CUDA).
COMPILE_GUESS_S = 40.0


@dataclasses.dataclass(frozen=True)
class Variant:
    """One standalone measurement. ``fast_paths``: LearnerConfig values set instead of auto;
    ``frames``: "device" (the mirror feed) or "host" (the stacked feed); ``small``: the four
    small arrays as "four" host copies (the learner's own), one "packed" copy, or already
    on the "device"; ``cudnn_benchmark``; ``cudagraphs`` (compile mode reduce-overhead);
    ``batch_size`` (None: the preset's own); ``preset``."""

    fast_paths: dict = dataclasses.field(default_factory=dict)
    frames: str = "device"
    small: str = "four"
    cudnn_benchmark: bool = False
    cudagraphs: bool = False
    batch_size: int | None = None
    preset: str = "apex"


def variants(batch_size: int) -> dict[str, Variant]:
    """The standalone phase's variants, most needed first (a short deadline keeps those)."""
    v = {
        "auto_on_device": Variant(),
        "eager_on_device": Variant(fast_paths={"compile": False}),
        "cudnn_benchmark": Variant(cudnn_benchmark=True),
        "packed_copy": Variant(small="packed"),
        "small_on_device": Variant(small="device"),
        "cudagraphs": Variant(cudagraphs=True),
        "auto_host_feed": Variant(frames="host"),
        "bf16_eager_host_feed": Variant(frames="host", fast_paths={"precision": "bf16", "compile": False}),
        f"batch_{batch_size // 2}": Variant(batch_size=batch_size // 2),
        f"batch_{batch_size * 2}": Variant(batch_size=batch_size * 2),
        "fp32_tf32": Variant(fast_paths={"precision": "fp32"}),
        "fp32_ieee": Variant(fast_paths={"precision": "fp32", "tf32": False}),
    }
    return {name: dataclasses.replace(x, batch_size=x.batch_size or batch_size) for name, x in v.items()}


def compile_mode_keyword() -> bool:
    """Whether the config takes ``compile_mode`` (a LearnerConfig field that
    ``build_learner`` passes on to ``DQNLearner``'s own ``compile_mode``); until it does,
    CUDA graphs are asked for through inductor's process-wide ``triton.cudagraphs``,
    which is all that torch.compile's mode reduce-overhead sets."""
    from common.config import LearnerConfig
    from learner.dqn import DQNLearner

    fields = {f.name for f in dataclasses.fields(LearnerConfig)}
    return "compile_mode" in fields and "compile_mode" in inspect.signature(DQNLearner.__init__).parameters


@contextlib.contextmanager
def process_settings(variant: Variant, cuda: bool):
    """The variant's process-wide torch settings, set back afterwards (on a CPU also one
    torch thread); compiled code of earlier variants forgotten (torch._dynamo's caches
    hold a few learners at most)."""
    import torch

    benchmark, threads = torch.backends.cudnn.benchmark, torch.get_num_threads()
    torch.backends.cudnn.benchmark = variant.cudnn_benchmark
    if not cuda:  # one learner thread, as benchmarks.learner's standalone loop (and no OpenMP spinning on shared cores)
        torch.set_num_threads(1)
    if cuda:  # (nothing compiles on a CPU: compile's auto is off there, and importing dynamo takes seconds)
        torch._dynamo.reset()
    with contextlib.ExitStack() as stack:
        if variant.cudagraphs and not compile_mode_keyword():
            import torch._inductor.config as inductor

            stack.enter_context(inductor.patch({"triton.cudagraphs": True}))
        try:
            yield
        finally:
            torch.backends.cudnn.benchmark = benchmark
            torch.set_num_threads(threads)
            if cuda:
                torch._dynamo.reset()
                torch.cuda.empty_cache()


class OnDevice:
    """A small per-batch array already on the device: ``DQNLearner.update`` calls
    ``.astype(dtype)`` on each and leaves a tensor already on its device where it is."""

    def __init__(self, tensor):
        self.tensor = tensor

    def astype(self, dtype):
        return self.tensor


class PackedCopy:
    """actions (int64), returns, discounts and weights (float32) in one pinned host buffer,
    one host-to-device copy, and views of it on the device (no kernel to unpack). A ring
    of ``slots`` buffers, each reused once its copy has finished."""

    def __init__(self, batch_size: int, device, slots: int = 4):
        import torch

        self.b, self.device, self.cuda = batch_size, torch.device(device), torch.device(device).type == "cuda"
        self.host = [torch.empty(20 * batch_size, dtype=torch.uint8, pin_memory=self.cuda) for _ in range(slots)]
        self.done = [None] * slots
        self.k = 0

    def __call__(self, actions, returns, discounts, weights) -> list[OnDevice]:
        import torch

        i, b = self.k % len(self.host), self.b
        self.k += 1
        if self.done[i] is not None:
            self.done[i].synchronize()
        h = self.host[i].numpy()
        h[: 8 * b].view(np.int64)[:] = actions
        for j, a in enumerate((returns, discounts, weights)):
            h[8 * b + 4 * j * b : 8 * b + 4 * (j + 1) * b].view(np.float32)[:] = a
        d = self.host[i].to(self.device, non_blocking=True)
        if self.cuda:
            self.done[i] = torch.cuda.Event()
            self.done[i].record()
        views = [d[: 8 * b].view(torch.int64)]
        views += [d[8 * b + 4 * j * b : 8 * b + 4 * (j + 1) * b].view(torch.float32) for j in range(3)]
        return [OnDevice(t) for t in views]


class Batches:
    """Random Atari batches as the variant's feed hands them over, ``pool`` of them in turn."""

    def __init__(self, variant: Variant, batch_size: int, device, pool: int = 8, seed: int = 0):
        import torch

        from common.messages import SampleBatch

        self.SampleBatch, self.variant, self.k = SampleBatch, variant, 0
        rng, b = np.random.default_rng(seed), batch_size
        shape = (b, STACK, *FRAME)
        if variant.frames == "host":
            self.frames = [
                (rng.integers(0, 256, shape, np.uint8), rng.integers(0, 256, shape, np.uint8)) for _ in range(pool)
            ]
        else:
            g = torch.Generator(device=device).manual_seed(seed)
            frames = torch.randint(0, 256, (pool, 2, *shape), dtype=torch.uint8, device=device, generator=g)
            self.frames = [(f[0], f[1]) for f in frames]
        self.small = [
            (
                rng.integers(0, NUM_ACTIONS, b).astype(np.int64),
                rng.normal(size=b).astype(np.float32),
                np.full(b, 0.99**3, np.float32),
                rng.uniform(0.1, 1.0, b).astype(np.float32),
            )
            for _ in range(pool)
        ]
        self.ids = np.arange(b, dtype=np.int64)
        self.packer = PackedCopy(b, device) if variant.small == "packed" else None
        if variant.small == "device":
            self.small = [[OnDevice(torch.from_numpy(a).to(device)) for a in s] for s in self.small]

    def next(self):
        obs, next_obs = self.frames[self.k % len(self.frames)]
        small = self.small[self.k % len(self.small)]
        self.k += 1
        if self.packer is not None:
            small = self.packer(*small)
        actions, returns, discounts, weights = small
        return self.SampleBatch(self.ids, obs, actions, returns, discounts, next_obs, weights)


def build(variant: Variant, device: str):
    """The learner of the variant's resolved config (Atari, this device) and that config."""
    from common.config import Config, LearnerConfig, RunConfig, resolve
    from common.env_spec import EnvSpec
    from learner.dqn import build_learner

    fast = dict(variant.fast_paths)
    if variant.cudagraphs and compile_mode_keyword():
        fast["compile_mode"] = "reduce-overhead"
    cfg = resolve(
        Config(run=RunConfig(preset=variant.preset), learner=LearnerConfig(batch_size=variant.batch_size, **fast)),
        atari=True,
        cuda=device != "cpu",
    )
    spec = EnvSpec("ALE/Breakout-v5", FRAME, "uint8", STACK, NUM_ACTIONS, 4, "lz4", True, True)
    return build_learner(cfg, spec, device), cfg


def _sync(device: str) -> None:
    import torch

    if device != "cpu":
        torch.cuda.synchronize()


def measure(variant: Variant, device: str, seconds: float, warmup: int = 5) -> dict:
    """updates/s of the variant over ``seconds`` after ``warmup`` updates (the first
    compiles where compile is on; CUDA graphs are recorded in the next ones)."""
    import torch

    cuda = device != "cpu"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t_build = time.perf_counter()
    with process_settings(variant, cuda):
        learner, cfg = build(variant, device)
        batches = Batches(variant, cfg.learner.batch_size, device)
        for _ in range(warmup):
            learner.update(batches.next())
        learner.flush()
        _sync(device)
        warm_s = time.perf_counter() - t_build
        n, t0, c0 = 0, time.perf_counter(), time.process_time()
        while time.perf_counter() - t0 < seconds:
            learner.update(batches.next())  # on CUDA the priorities come one update late: no sync
            n += 1
        learner.flush()
        _sync(device)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        L = cfg.learner
        out = {
            "updates_per_s": n / wall,
            "samples_per_s": n * L.batch_size / wall,
            "cpu_per_wall": cpu / wall,
            "updates": n,
            "batch_size": L.batch_size,
            "settings": {k: getattr(L, k) for k in ("precision", "tf32", "channels_last", "fused_optimizer", "compile")}
            | {"frames": variant.frames, "small": variant.small, "cudnn_benchmark": variant.cudnn_benchmark},
            "warmup_s": round(warm_s, 1),
            "compile_seconds": learner.compile_seconds,
            "compile_error": learner.compile_error,
        }
        if variant.cudagraphs:
            out["cudagraphs_via"] = (
                "compile_mode" if compile_mode_keyword() else "torch._inductor.config.triton.cudagraphs"
            )
        if cuda:
            out["max_memory_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        del learner, batches
    return out


def needs(variant: Variant, device: str) -> str | None:
    """Why the variant cannot run here (None: it can)."""
    if variant.cudagraphs and device == "cpu":
        return "CUDA graphs need a CUDA device"
    return None


def expected_s(variant: Variant, device: str, seconds: float, compile_s: float | None) -> float:
    """A variant's likely time: its measuring time, start-up, and a compile on CUDA (the
    slowest seen so far, or COMPILE_GUESS_S before any)."""
    compiled = device != "cpu" and variant.fast_paths.get("compile", True)
    return seconds + 2.0 + ((compile_s or COMPILE_GUESS_S) if compiled else 0.0)


def run_variants(
    named: dict[str, Variant],
    device: str,
    seconds: float,
    warmup: int,
    limit_s: float,
    figures: dict,
    save: Callable[[], None],
) -> None:
    """Measure each variant in turn into ``figures[name]`` while ``limit_s`` allows, saving
    after each: ``{"status": "done", ...}``, ``{"status": "skipped", "reason": ...}`` or
    ``{"status": "failed", "error": ...}`` (one failing never costs the others)."""
    t0, compile_s = time.monotonic(), None
    for name, variant in named.items():
        left = limit_s - (time.monotonic() - t0)
        why = needs(variant, device)
        need = expected_s(variant, device, seconds, compile_s)
        if why is None and need > left:
            why = f"{left:.0f} s left in the phase, it needs about {need:.0f} s"
        if why is not None:
            figures[name] = {"status": "skipped", "reason": why}
        else:
            figures[name] = {"status": "running"}
            save()
            try:
                figures[name] = {"status": "done", **measure(variant, device, seconds, warmup)}
                compile_s = figures[name]["compile_seconds"] or compile_s  # the latest: caches make later ones quicker
            except Exception as e:  # a compile error, say: the next variant still runs
                figures[name] = {"status": "failed", "error": f"{type(e).__name__}: {e}"[:400]}
            except BaseException as e:  # SIGTERM, or the phase past its limit: say which variant it cut
                figures[name] = {"status": "interrupted", "reason": str(e) or type(e).__name__}
                raise
        print(f"  {name}: {_short(figures[name])}", flush=True)
        save()


def _short(result: dict) -> str:
    if result["status"] != "done":
        return f"{result['status']}: {result.get('reason') or result.get('error')}"
    return (
        f"{result['updates_per_s']:.1f} updates/s at batch {result['batch_size']} ({result['warmup_s']} s to warm up)"
    )


def preset_variants(batch_size: int | None) -> dict[str, Variant]:
    """One variant per preset of ``common.config.PRESETS`` (new presets are measured as they
    come), each at its own batch size for the device unless ``batch_size`` is given."""
    from common.config import PRESETS

    return {name: Variant(preset=name, batch_size=batch_size) for name in PRESETS}
