"""The GPU suite's standalone variants (``benchmarks/gpu_variants.py``) on the CPU: the
packed copy hands the learner exactly the four arrays, each variant builds and updates, the
process-wide settings come back, every preset is measured, and one variant that fails or
cannot run here never costs the others."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks import gpu_variants
from benchmarks.gpu_variants import Batches, PackedCopy, Variant, measure, preset_variants, run_variants, variants


def test_packed_copy_gives_the_four_arrays_back_through_one_buffer():
    rng = np.random.default_rng(0)
    pack = PackedCopy(5, "cpu", slots=2)
    for _ in range(3):  # round the ring of buffers
        arrays = (
            rng.integers(0, 18, 5).astype(np.int64),
            rng.normal(size=5).astype(np.float32),
            rng.uniform(size=5).astype(np.float32),
            rng.uniform(size=5).astype(np.float32),
        )
        got = [x.astype(None) for x in pack(*arrays)]
        assert [t.dtype for t in got] == [torch.int64, torch.float32, torch.float32, torch.float32]
        for t, a in zip(got, arrays):
            np.testing.assert_array_equal(t.numpy(), a)
        assert {t.untyped_storage().data_ptr() for t in got} == {got[0].untyped_storage().data_ptr()}


@pytest.mark.parametrize("small", ["four", "packed", "device"])
def test_each_way_of_handing_over_the_small_arrays_trains(small):
    v = Variant(small=small, batch_size=4, fast_paths={"precision": "fp32"})
    result = measure(v, "cpu", seconds=0.05, warmup=1)
    assert result["updates"] >= 1 and result["updates_per_s"] > 0
    assert result["settings"]["small"] == small and result["batch_size"] == 4
    assert result["samples_per_s"] == pytest.approx(4 * result["updates_per_s"])


def test_host_frames_are_numpy_and_device_frames_tensors():
    host = Batches(Variant(frames="host"), 3, "cpu", pool=2).next()
    device = Batches(Variant(frames="device"), 3, "cpu", pool=2).next()
    assert isinstance(host.obs, np.ndarray) and host.obs.shape == (3, 4, 84, 84)
    assert isinstance(device.obs, torch.Tensor) and device.next_obs.dtype == torch.uint8


def test_process_wide_settings_are_set_for_the_variant_and_back_after(monkeypatch):
    seen = []
    real_build = gpu_variants.build

    def build(variant, device):
        seen.append((torch.backends.cudnn.benchmark, torch.get_num_threads()))
        return real_build(variant, device)

    monkeypatch.setattr(gpu_variants, "build", build)
    before, threads = torch.backends.cudnn.benchmark, torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        measure(Variant(cudnn_benchmark=not before, batch_size=2), "cpu", seconds=0.01, warmup=1)
        assert seen == [(not before, 1)]  # one learner thread on a CPU
        assert torch.backends.cudnn.benchmark == before and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)


def test_the_standalone_variants_start_with_the_reference_and_share_its_batch():
    named = variants(512)
    assert list(named)[0] == "auto_on_device" and named["auto_on_device"] == Variant(batch_size=512)
    assert {"batch_256", "batch_1024", "cudagraphs", "packed_copy", "cudnn_benchmark"} <= set(named)
    assert all(v.batch_size in (256, 512, 1024) for v in named.values())


def test_every_preset_is_measured_new_ones_included(monkeypatch):
    from common.config import PRESETS

    monkeypatch.setitem(PRESETS, "rainbow", PRESETS["apex"])
    named = preset_variants(None)
    assert set(named) == set(PRESETS) and named["rainbow"] == Variant(preset="rainbow", batch_size=None)


def test_a_variant_failing_or_impossible_here_never_costs_the_others(monkeypatch):
    def fake_measure(variant, device, seconds, warmup):
        if variant.cudnn_benchmark:
            raise RuntimeError("cuDNN error: CUDNN_STATUS_NOT_SUPPORTED")
        return {"updates_per_s": 7.0, "batch_size": variant.batch_size, "warmup_s": 0.1, "compile_seconds": None}

    monkeypatch.setattr(gpu_variants, "measure", fake_measure)
    saves = []
    figures: dict = {}
    named = {"a": Variant(cudnn_benchmark=True), "b": Variant(cudagraphs=True), "c": Variant(batch_size=4)}
    run_variants(named, "cpu", 0.1, 1, 60.0, figures, lambda: saves.append(dict(figures)))
    assert figures["a"]["status"] == "failed" and "CUDNN_STATUS_NOT_SUPPORTED" in figures["a"]["error"]
    assert figures["b"] == {"status": "skipped", "reason": "CUDA graphs need a CUDA device"}
    assert figures["c"]["status"] == "done" and figures["c"]["updates_per_s"] == 7.0
    assert len(saves) >= 3 and set(saves[-1]) == {"a", "b", "c"}


def test_variants_are_skipped_when_the_phase_has_too_little_left(monkeypatch):
    monkeypatch.setattr(gpu_variants, "measure", lambda *a: pytest.fail("must not run"))
    figures: dict = {}
    run_variants({"a": Variant(batch_size=4)}, "cuda", 3.0, 5, 20.0, figures, lambda: None)
    # On CUDA a compiled variant needs its compile too (a guess before any was measured).
    assert figures["a"]["status"] == "skipped" and "it needs about 45 s" in figures["a"]["reason"]


def test_the_variant_cut_short_says_so_and_the_phase_stops(monkeypatch):
    from benchmarks.oneshot import Overrun

    def fake_measure(variant, device, seconds, warmup):
        if variant.batch_size == 2:
            raise Overrun("ran past its limit of 60 s")
        return {"updates_per_s": 7.0, "batch_size": variant.batch_size, "warmup_s": 0.1, "compile_seconds": None}

    monkeypatch.setattr(gpu_variants, "measure", fake_measure)
    figures: dict = {}
    named = {"a": Variant(batch_size=4), "b": Variant(batch_size=2), "c": Variant(batch_size=4)}
    with pytest.raises(Overrun):
        run_variants(named, "cpu", 0.1, 1, 60.0, figures, lambda: None)
    assert figures["a"]["status"] == "done" and "c" not in figures
    assert figures["b"] == {"status": "interrupted", "reason": "ran past its limit of 60 s"}
