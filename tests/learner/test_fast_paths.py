"""The learner's fast paths, each on a CPU: it runs, and one update matches the plain fp32
eager update within a stated tolerance; the stats period; the late-priority path; and how
'auto' resolves per device.

Tolerances, against the fp32 eager update on the same seed and batch:
- fp32 paths (channels_last, foreach/fused optimizer, joint forward, compile): the same
  arithmetic in another order, so loss and priorities to rel 1e-5 (abs 1e-6), gradients to
  rel 1e-4 (abs 1e-6) and parameters after one Adam step to abs 1e-6 (a thousandth of the
  step, lr 1e-3).
- bf16 autocast (8-bit mantissa, relative rounding 2^-8 = 0.4% per op): loss to rel 3e-2,
  priorities to abs 3e-2 (|td| ~ 1), the gradient's relative error (norm of the difference
  over the norm) under 0.1; Adam's first step is about lr * sign(g) per weight, so where g is
  near 0 its sign may flip: parameters within 2 lr and the steps' cosine above 0.9.
"""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest
import torch

from common import config as config_module
from common.config import Config, LearnerConfig, resolve, resolve_fast_paths
from common.messages import SampleBatch
from common.networks import build_q_network
from learner.dqn import DQNLearner
from learner.optimizers import CentredRMSProp

LR = 1e-3
ADAM_EPS = (
    1.5e-4  # the project's; a tiny eps would make Adam's first step lr * sign(g), which flips with rounding where g ~ 0
)
FP32 = dict(loss_rel=1e-5, prio_abs=1e-6, grad_rel=1e-4, param_abs=1e-6)


def batch(rng, b, frame_shape, stack):
    if len(frame_shape) == 2:
        obs = lambda: rng.integers(0, 256, (b, stack, *frame_shape), dtype=np.uint8)  # noqa: E731
    else:
        obs = lambda: rng.normal(size=(b, stack, *frame_shape)).astype(np.float32)  # noqa: E731
    return SampleBatch(
        ids=np.arange(b),
        obs=obs(),
        actions=rng.integers(0, 4, b),
        returns=rng.normal(size=b).astype(np.float32),
        discounts=np.full(b, 0.97, np.float32),
        next_obs=obs(),
        weights=rng.uniform(0.5, 1.0, b).astype(np.float32),
    )


def one_update(frame_shape, stack=4, b=8, seed=0, **kwargs):
    """(learner, update's output, gradients, parameters before) after one update."""
    torch.manual_seed(seed)
    learner = DQNLearner(build_q_network(frame_shape, stack, 4), LR, ADAM_EPS, 10.0, 100, **kwargs)
    before = [p.detach().clone() for p in learner.online.parameters()]
    out = learner.update(batch(np.random.default_rng(seed), b, frame_shape, stack))
    grads = [p.grad.detach().clone() for p in learner.online.parameters()]
    return learner, out, grads, before


def rel(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    diff = torch.cat([(x - y).flatten() for x, y in zip(a, b)]).norm()
    return float(diff / torch.cat([y.flatten() for y in b]).norm())


def assert_matches(fast, plain, loss_rel, prio_abs, grad_rel, param_abs):
    (fl, fo, fg, _), (pl, po, pg, _) = fast, plain
    assert fo["loss"] == pytest.approx(po["loss"], rel=loss_rel, abs=1e-6)
    np.testing.assert_allclose(fo["priorities"], po["priorities"], rtol=loss_rel, atol=prio_abs)
    assert rel(fg, pg) <= grad_rel
    for a, b in zip(fl.online.parameters(), pl.online.parameters()):
        torch.testing.assert_close(a.detach().contiguous(), b.detach(), rtol=0, atol=param_abs)


CNN, MLP = (84, 84), (6,)


@pytest.fixture(scope="module")
def plain_cnn():
    return one_update(CNN)


@pytest.fixture(scope="module")
def plain_mlp():
    return one_update(MLP, stack=1, b=16)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(channels_last=True),
        dict(fused_optimizer="foreach"),
        dict(fused_optimizer="fused"),
        dict(joint_forward=True),
    ],
    ids=["channels_last", "foreach", "fused", "joint_forward"],
)
def test_fp32_paths_match_the_plain_update(plain_cnn, kwargs):
    assert_matches(one_update(CNN, **kwargs), plain_cnn, **FP32)


def test_bf16_autocast_matches_within_bf16_rounding(plain_cnn):
    fast = one_update(CNN, precision="bf16")
    (fl, fo, fg, before), (pl, po, pg, _) = fast, plain_cnn
    assert fo["loss"] == pytest.approx(po["loss"], rel=3e-2)
    np.testing.assert_allclose(fo["priorities"], po["priorities"], atol=3e-2)
    assert fo["priorities"].dtype == np.float32 and isinstance(fo["loss"], float)
    assert rel(fg, pg) < 0.1
    assert all(p.dtype == torch.float32 for p in fl.online.parameters())  # master weights stay fp32
    step_fast = torch.cat([(p.detach() - b).flatten() for p, b in zip(fl.online.parameters(), before)])
    step_plain = torch.cat([(p.detach() - b).flatten() for p, b in zip(pl.online.parameters(), before)])
    assert float((step_fast - step_plain).abs().max()) <= 2 * LR * 1.01
    assert float(torch.nn.functional.cosine_similarity(step_fast, step_plain, dim=0)) > 0.9


def test_bf16_with_channels_last_and_foreach_together(plain_cnn):
    fo = one_update(CNN, precision="bf16", channels_last=True, fused_optimizer="foreach")[1]
    assert fo["loss"] == pytest.approx(plain_cnn[1]["loss"], rel=3e-2)


def test_channels_last_weights_leave_as_plain_contiguous_arrays():
    learner = one_update(CNN, channels_last=True)[0]
    weights = learner.weights_numpy()
    assert all(w.flags["C_CONTIGUOUS"] for w in weights.values())
    plain = build_q_network(CNN, 4, 4)
    plain.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})


def test_mlp_paths_match_too(plain_mlp):
    for kwargs in (dict(joint_forward=True), dict(fused_optimizer="foreach"), dict(channels_last=True)):
        assert_matches(one_update(MLP, stack=1, b=16, **kwargs), plain_mlp, **FP32)


def _inductor_unavailable() -> str:
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        return "no C compiler for torch.compile's inductor"
    try:
        import torch._inductor  # noqa: F401
    except Exception as e:  # noqa: BLE001
        return f"torch._inductor does not import: {e}"
    return ""


@pytest.mark.skipif(bool(_inductor_unavailable()), reason=_inductor_unavailable() or "inductor available")
def test_compiled_update_of_a_tiny_net_matches_eager(plain_mlp, monkeypatch):
    import torch._inductor.config as inductor

    # One compile worker: a pool of them costs more to start than this tiny graph takes to
    # build (71 s against 127 s cold on 2 loaded cores; ~20 s with a warm inductor cache).
    monkeypatch.setattr(inductor, "compile_threads", 1)
    fast = one_update(MLP, stack=1, b=16, compile=True)
    learner = fast[0]
    assert learner.compile_error is None and learner.compile_seconds > 0
    assert_matches(fast, plain_mlp, **FP32)


def test_a_failing_compile_falls_back_to_eager_with_one_warning(plain_mlp, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("no toolchain here\nsecond line")

    monkeypatch.setattr(torch, "compile", lambda fn, **kw: broken)
    fast = one_update(MLP, stack=1, b=16, compile=True)
    assert fast[0].compile_error == "RuntimeError: no toolchain here" and fast[0].compile_seconds is None
    assert [r.levelname for r in caplog.records if "torch.compile" in r.getMessage()] == ["WARNING"]
    assert_matches(fast, plain_mlp, **FP32)


def test_loss_and_mean_q_are_read_every_stats_period_updates():
    rng = np.random.default_rng(3)
    batches = [batch(rng, 8, MLP, 1) for _ in range(7)]
    runs = {}
    for period in (1, 3):
        torch.manual_seed(3)
        learner = DQNLearner(build_q_network(MLP, 1, 4), LR, ADAM_EPS, 10.0, 100, stats_period=period)
        runs[period] = [learner.update(b) for b in batches]
    every, sparse = runs[1], runs[3]
    assert [o["stats_step"] for o in every] == [1, 2, 3, 4, 5, 6, 7]
    # the first update, then every third; in between the last values read
    assert [o["stats_step"] for o in sparse] == [1, 1, 3, 3, 3, 6, 6]
    for o in sparse:
        read = every[o["stats_step"] - 1]
        assert (o["loss"], o["mean_q"]) == (read["loss"], read["mean_q"])
    # priorities come every update regardless
    for a, b in zip(every, sparse):
        np.testing.assert_array_equal(a["priorities"], b["priorities"])


def test_late_priorities_come_one_update_late_with_their_tag_and_ids():
    rng = np.random.default_rng(4)
    batches = [dataclasses.replace(batch(rng, 8, MLP, 1), ids=np.arange(8) + 100 * i) for i in range(3)]
    results = {}
    for late in (False, True):
        torch.manual_seed(4)
        learner = DQNLearner(build_q_network(MLP, 1, 4), LR, ADAM_EPS, 10.0, 100, late_priorities=late)
        results[late] = [learner.update(b, tag=f"shard{i}") for i, b in enumerate(batches)] + [learner.flush()]
    now, late = results[False], results[True]
    # Off the late path each update hands over its own batch's priorities, and nothing is held.
    for i, o in enumerate(now[:3]):
        [(tag, ids, priorities)] = o["handoff"]
        assert tag == f"shard{i}" and ids is batches[i].ids and priorities is o["priorities"]
    assert now[3] is None
    assert late[0]["handoff"] == [] and all(o["priorities"] is None for o in late[:3])
    handed = [*late[1]["handoff"], *late[2]["handoff"], late[3]]
    assert len(handed) == 3
    for i, (tag, ids, priorities) in enumerate(handed):
        assert tag == f"shard{i}" and ids.tolist() == batches[i].ids.tolist()
        np.testing.assert_array_equal(priorities, now[i]["priorities"])
    assert results[True][-1] is not None and learner.flush() is None


def test_the_trainer_sends_every_late_priority(tmp_path):
    from tests.learner.test_trainer_loop import make

    trainer, fleet = make(tmp_path, run={"total_learner_steps": 12})
    trainer.learner.late_priorities = True  # what a CUDA learner does
    trainer.run()
    # Each update's priorities go back one update late; the last ones are flushed before the fleet stops.
    assert trainer.learner.learner_steps == 12 and fleet.priority_updates == 12
    assert trainer.learner.flush() is None


def test_a_late_learner_flushes_its_priorities_before_every_checkpoint_and_snapshot(tmp_path):
    from tests.learner.test_trainer_loop import make

    trainer, fleet = make(tmp_path, run={"total_learner_steps": 7}, replay={"snapshot_interval": 1e-9})
    trainer.learner.late_priorities = True  # what a CUDA learner does
    sent, at_snapshot = [], []
    send, snap = fleet.update_priorities, fleet.save_snapshots
    fleet.update_priorities = lambda *a: (sent.append(a), send(*a))[1]
    fleet.save_snapshots = lambda wait: (at_snapshot.append((len(sent), trainer.learner.learner_steps)), snap(wait))[1]
    trainer.run()
    # At every snapshot request (the periodic ones and the final checkpoint's) the priorities of
    # every update so far have been sent, the one the late path held included.
    assert len(at_snapshot) >= 2 and len(sent) == 7
    assert all(n_sent == steps for n_sent, steps in at_snapshot)


def test_centred_rmsprop_foreach_is_the_same_arithmetic():
    torch.manual_seed(5)
    params = [[torch.nn.Parameter(torch.randn(3, 4)), torch.nn.Parameter(torch.randn(5))] for _ in range(2)]
    params[1] = [torch.nn.Parameter(p.detach().clone()) for p in params[0]]
    opts = [CentredRMSProp(ps, lr=0.01, decay=0.9, eps=1e-4, foreach=f) for ps, f in zip(params, (False, True))]
    for _ in range(4):
        g = [torch.randn_like(p) for p in params[0]]
        for ps, opt in zip(params, opts):
            for p, gi in zip(ps, g):
                p.grad = gi.clone()
            opt.step()
    for a, b in zip(*params):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


# ---- 'auto' per device ---------------------------------------------------------------------
def test_auto_resolves_by_device(monkeypatch):
    gpu = resolve(Config(), atari=True, cuda=True).learner
    assert (gpu.precision, gpu.tf32, gpu.channels_last, gpu.fused_optimizer, gpu.compile) == (
        "bf16",
        True,
        True,
        True,
        True,
    )
    assert gpu.stats_period == gpu.publish_period and gpu.joint_forward is False
    for native, precision in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(config_module, "cpu_has_native_bf16", lambda: native)
        cpu = resolve(Config(), atari=True, cuda=False).learner
        assert cpu.precision == precision and cpu.tf32 is False and cpu.stats_period == 1
        assert None not in (cpu.channels_last, cpu.fused_optimizer, cpu.compile)
    typed = LearnerConfig(precision="fp32", compile=False, stats_period=0, channels_last=False)
    kept = resolve_fast_paths(typed, cuda=True)
    assert (kept.precision, kept.compile, kept.stats_period, kept.channels_last) == ("fp32", False, 0, False)
    assert resolve_fast_paths(kept, cuda=False) == kept  # resolved values stay


def test_bad_fast_path_values_name_the_flag():
    with pytest.raises(config_module.ConfigError, match="--precision=fp16"):
        LearnerConfig(precision="fp16")
    with pytest.raises(config_module.ConfigError, match="--stats-period=-1"):
        LearnerConfig(stats_period=-1)


def test_tf32_is_set_through_the_public_api_so_every_flag_reads_back():
    from learner.dqn import set_tf32

    before = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    try:
        for on in (True, False):
            set_tf32(on)
            # Reading the older flags raises once torch's newer fp32_precision was mixed in.
            assert torch.backends.cuda.matmul.allow_tf32 is on
            assert torch.get_float32_matmul_precision() == ("high" if on else "highest")
            assert torch.backends.cudnn.allow_tf32 is on
    finally:
        torch.set_float32_matmul_precision(before[0])
        torch.backends.cudnn.allow_tf32 = before[1]
