"""The actors' acting network (actors/acting.py): what ``auto`` picks, and fidelity to fp32.

Fidelity is measured on 500 real Breakout states (``tests/data/acting_states.npz``, written
by ``tests/data/make_acting_states.py``: random play, stacks built by the actor's own
stacker). A random-init network's greedy action is the same on every state (its action
gaps come from biases, not from the frames), which would make agreement meaningless, so
the network is first trained a little (150 Adam updates, seeded) to regress Q-values that
depend on the frame: the Monte-Carlo return of the state plus a ball tracker's preference
for moving towards the ball (read from the game's RAM when the fixture was written). After
that its greedy action varies with the state (checked) and the gaps between the best two
actions spread from near-ties to ≈ 0.4, as a trained DQN's do.

Pinned: greedy agreement ≥ 99 % at the actors' batch sizes, every disagreement a near-tie
(fp32 gap ≤ 2 × the largest Q error), and |Q_fast − Q_fp32| ≤ 0.5 % of the Q scale
(max |Q_fp32| over the states); measured on this CPU: bf16 ≈ 0.1 %, int8 and bf16-int8
≈ 0.2 %. int8-static (activations in int8 too, their scales calibrated on the first batch
it acts on) is allowed 3 % (measured ≤ 2.4 %, ≥ 99.4 % agreement).
"""

from pathlib import Path

import numpy as np
import pytest
import torch

from actors import acting, int8_static
from actors.acting import ActingNetwork, resolve_precision
from common.networks import NatureCNN, build_q_network

STATES = Path(__file__).resolve().parents[1] / "data" / "acting_states.npz"
Q_TOLERANCE = 0.005  # of max |Q| over the states
STATIC_Q_TOLERANCE = 0.03  # int8-static: activations rounded to 8 bits as well
# Dynamic int8 rounds each batch's activations by that batch's range: at batch 8 the max
# |dQ| measured 0.42-0.48 % of the Q scale on the AMD EPYC dev machines and 0.50 % on an
# Intel Xeon one (torch's x86 engine computes differently there); agreement is held at 99 %.
DYNAMIC_INT8_Q_TOLERANCE = 0.0075
MIN_AGREEMENT = 0.99
needs_static_engine = pytest.mark.skipif(
    int8_static.static_int8_engine() is None, reason="torch has no x86 int8 engine here"
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def gaps(q: np.ndarray) -> np.ndarray:
    top = np.sort(q, axis=1)
    return top[:, -1] - top[:, -2]


@pytest.fixture(scope="module")
def trained():
    """(states uint8[500, 4, 84, 84], fp32 state dict trained a little, its Q float32[500, 4])."""
    data = np.load(STATES)
    states, targets = data["states"], data["targets"]
    torch.manual_seed(0)
    net = NatureCNN(4, 4, dueling=True)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)
    for _ in range(150):
        i = rng.integers(0, len(states), 32)
        loss = torch.nn.functional.mse_loss(net(torch.from_numpy(states[i])), torch.from_numpy(targets[i]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    with torch.inference_mode():
        q = net(torch.from_numpy(states)).numpy()
    return states, {k: v.detach().clone() for k, v in net.state_dict().items()}, q


def test_the_trained_network_makes_agreement_meaningful(trained):
    states, _, q = trained
    greedy = np.bincount(q.argmax(axis=1), minlength=4)
    assert greedy.max() <= 0.8 * len(states), f"greedy actions {greedy}: nearly constant, agreement would say nothing"
    assert np.median(gaps(q)) > 50 * Q_TOLERANCE * np.abs(q).max()


def engine_for(precision: str):
    if precision == "int8-static":
        return int8_static.static_int8_engine()
    return acting.int8_engine() if "int8" in precision else "none needed"


@pytest.mark.parametrize("precision", ["bf16", "int8", "bf16-int8", "int8-static"])
@pytest.mark.parametrize("batch", [8, 32])
def test_fast_network_agrees_with_fp32(trained, precision, batch):
    if engine_for(precision) is None:
        pytest.skip("torch has no quantized engine here")
    states, state_dict, q32 = trained
    torch.manual_seed(1)  # a different init: everything must come from load()
    # int8-static: converted at once (no thread), calibrated on the first batch it acts on.
    fast = ActingNetwork(NatureCNN(4, 4, dueling=True), precision, background=False)
    assert fast.precision == precision
    fast.load(state_dict)
    q = np.concatenate([fast.q_values(states[i : i + batch]) for i in range(0, len(states), batch)])
    if precision == "int8-static":  # one conversion, at the first batch, before it ran: every batch int8
        assert fast.static.conversions == 1 and fast.static.current is not None
    assert q.dtype == np.float32 and q.shape == q32.shape
    err = np.abs(q - q32).max()
    scale = np.abs(q32).max()
    tolerance = {"int8-static": STATIC_Q_TOLERANCE, "int8": DYNAMIC_INT8_Q_TOLERANCE}.get(precision, Q_TOLERANCE)
    assert err <= tolerance * scale, f"{precision}: max |dQ| {err:.2e} = {err / scale:.2%} of the Q scale"
    differ = q.argmax(axis=1) != q32.argmax(axis=1)
    assert 1 - differ.mean() >= MIN_AGREEMENT
    assert np.all(gaps(q32)[differ] <= 2 * err), "a disagreement that is not a near-tie"


@pytest.mark.parametrize("precision", ["fp32", "bf16", "int8", "bf16-int8", "int8-static"])
def test_each_load_replaces_the_converted_weights(precision):
    if engine_for(precision) is None:
        pytest.skip("torch has no quantized engine here")
    # Random-init weights: Q-values are tiny and int8's error is relative to the activations,
    # so a loose tolerance here; it is still far below what stale weights would be off by.
    x = np.random.default_rng(0).integers(0, 256, (8, 4, 84, 84), dtype=np.uint8)
    fast = ActingNetwork(NatureCNN(4, 6), precision, convert_every=1, background=False)
    previous = None
    for seed in (2, 3):
        torch.manual_seed(seed)
        ref = NatureCNN(4, 6).eval()
        fast.load({k: v.numpy() for k, v in ref.state_dict().items()})  # as published: numpy arrays
        with torch.inference_mode():
            want = ref(torch.from_numpy(x)).numpy()
        tolerance = 0.02 * np.abs(want).max()
        np.testing.assert_allclose(fast.q_values(x), want, atol=tolerance)
        if previous is not None:
            assert np.abs(previous - want).max() > 5 * tolerance
        previous = want


def test_fp32_runs_the_network_itself():
    net = NatureCNN(4, 4)
    fast = ActingNetwork(net, "fp32")
    x = np.random.default_rng(1).integers(0, 256, (3, 4, 84, 84), dtype=np.uint8)
    with torch.inference_mode():
        np.testing.assert_array_equal(fast.q_values(x), net(torch.from_numpy(x)).numpy())


def test_small_networks_stay_fp32():
    # CartPole's MLP has no large layer: nothing to gain, so nothing is converted.
    assert ActingNetwork(build_q_network((4,), 1, 2), "bf16").precision == "fp32"
    assert ActingNetwork(build_q_network((4,), 1, 2), "int8").precision == "fp32"


def test_bf16_keeps_the_output_layers_fp32():
    fast = ActingNetwork(NatureCNN(4, 4, dueling=True), "bf16")
    # 3 convolutions and the two 3136x512 layers; Linear(512, 1) and Linear(512, 4) stay fp32.
    assert [(type(m).__name__, fmt) for m, _, fmt in fast._pairs] == [("Conv2d", "bf16")] * 3 + [("Linear", "bf16")] * 2
    assert fast.fast.head.value[2].layer is fast.network.head.value[2]  # shared with the fp32 master
    assert fast.network.head.value[2].weight.dtype == torch.float32
    mixed = ActingNetwork(NatureCNN(4, 4, dueling=True), "bf16-int8")
    assert [fmt for _, _, fmt in mixed._pairs] == ["bf16"] * 3 + ["int8"] * 2


@pytest.mark.parametrize(
    "static, bf16, int8, want",
    [
        ("x86", True, "x86", "int8-static"),
        ("x86", False, "x86", "int8-static"),
        (None, True, "x86", "bf16"),
        (None, False, "x86", "int8"),
        (None, False, None, "fp32"),
        (None, True, None, "bf16"),
    ],
)
def test_auto_picks_what_the_cpu_supports(monkeypatch, static, bf16, int8, want):
    monkeypatch.setattr(int8_static, "static_int8_engine", lambda: static)
    monkeypatch.setattr(acting, "native_bf16", lambda: bf16)
    monkeypatch.setattr(acting, "int8_engine", lambda: int8)
    precision, why = resolve_precision("auto")
    assert precision == want and why.startswith("auto")
    assert resolve_precision("fp32")[0] == "fp32"


@needs_static_engine
def test_int8_static_acts_in_fp32_until_its_conversion_on_a_thread_is_ready(trained):
    states, state_dict, q32 = trained
    fast = ActingNetwork(NatureCNN(4, 4, dueling=True), "int8-static")  # background
    fast.load(state_dict)
    first = fast.q_values(states[:32])  # begins the conversion; the fp32 master answers now
    np.testing.assert_allclose(first, q32[:32], rtol=1e-5, atol=1e-6)
    fast.static.wait()
    assert fast.static.conversions == 1 and fast.static.current is not None
    assert fast.static.conversion_ms[0] > 0
    q = fast.q_values(states[32:64])  # int8 now: close, but not fp32's bits
    assert np.abs(q - q32[32:64]).max() <= STATIC_Q_TOLERANCE * np.abs(q32).max()
    assert not np.array_equal(q, q32[32:64])


@needs_static_engine
def test_int8_static_converts_new_weights_at_most_once_per_convert_every_passes():
    x = np.random.default_rng(0).integers(0, 256, (8, 4, 84, 84), dtype=np.uint8)
    fast = ActingNetwork(NatureCNN(4, 4), "int8-static", convert_every=3, background=False)
    fast.q_values(x)  # the first conversion: at once
    assert fast.static.conversions == 1
    torch.manual_seed(5)
    new = NatureCNN(4, 4).eval()
    fast.load(new.state_dict())
    with torch.inference_mode():
        want = new(torch.from_numpy(x)).numpy()
    stale = fast.q_values(x)  # pass 2 since the last conversion began: still the old weights
    assert fast.static.conversions == 1 and np.abs(stale - want).max() > 0.1 * np.abs(want).max()
    fast.q_values(x)
    assert fast.static.conversions == 1
    now = fast.q_values(x)  # pass 3: converted, and acting with the new weights
    assert fast.static.conversions == 2
    np.testing.assert_allclose(now, want, atol=0.03 * np.abs(want).max())


@needs_static_engine
def test_a_failed_int8_static_conversion_leaves_the_actor_acting_in_fp32(monkeypatch):
    def broken(*a, **k):
        raise RuntimeError("no kernel")

    monkeypatch.setattr(int8_static, "StaticInt8Nature", broken)
    net = NatureCNN(4, 4)
    fast = ActingNetwork(net, "int8-static", convert_every=1, background=False)
    x = np.random.default_rng(2).integers(0, 256, (4, 4, 84, 84), dtype=np.uint8)
    with pytest.warns(UserWarning, match="no kernel"):
        q = fast.q_values(x)
    with torch.inference_mode():
        np.testing.assert_array_equal(q, net(torch.from_numpy(x)).numpy())
    fast.sync()
    fast.q_values(x)  # no second try, no second warning
    assert fast.static.failed and fast.static.conversions == 0


def test_int8_static_is_for_the_nature_cnn_others_take_what_auto_would(monkeypatch):
    monkeypatch.setattr(acting, "native_bf16", lambda: False)
    monkeypatch.setattr(acting, "int8_engine", lambda: None)
    assert ActingNetwork(build_q_network((4,), 1, 2), "int8-static").precision == "fp32"
    assert ActingNetwork(build_q_network((4, 10, 10), 1, 3), "int8-static").precision == "fp32"
    monkeypatch.setattr(acting, "native_bf16", lambda: True)
    minatar = ActingNetwork(build_q_network((4, 10, 10), 1, 3), "int8-static")
    assert minatar.precision == "bf16" and minatar.static is None


def test_an_explicit_choice_the_cpu_lacks_falls_back_cleanly(monkeypatch):
    monkeypatch.setattr(acting, "int8_engine", lambda: None)
    assert resolve_precision("int8")[0] == "fp32"
    assert resolve_precision("bf16-int8")[0] == "bf16"
    monkeypatch.setattr(int8_static, "static_int8_engine", lambda: None)
    monkeypatch.setattr(acting, "native_bf16", lambda: False)
    precision, why = resolve_precision("int8-static")
    assert precision == "fp32" and "no x86 int8 engine" in why
    with pytest.raises(ValueError, match="fp16"):
        resolve_precision("fp16")


def test_the_builder_uses_the_flag():
    from actors.builder import build_actor_core
    from common.config import ActorConfig, Config, EnvConfig, resolve

    cfg = resolve(
        Config(
            env=EnvConfig(env_id="ALE/Breakout-v5", envs_per_actor=2),
            actors=ActorConfig(num_actors=1, actor_precision="bf16"),
        ),
        atari=True,
        cuda=False,
    )
    core = build_actor_core(cfg, 0)
    try:
        assert core.acting.precision == "bf16"
        core.step()
        assert core._last.q.dtype == np.float32 and core._last.q.shape == (2, 4)
    finally:
        core.env.close()


@pytest.mark.parametrize("kind", ["c51", "qr", "iqn"])
def test_auto_acts_each_distributional_head_in_a_format_that_agrees_with_fp32(kind):
    """The fidelity test for each head: ``auto`` falls back from int8-static (which covers the
    expected head only), says so, and its greedy actions agree with fp32 on >= 99 % of real
    Breakout states, every disagreement a near-tie. IQN's sampled fractions are the same
    for both (one torch seed per batch)."""
    from common.heads import HeadSpec

    data = np.load(STATES)
    states, targets = data["states"], data["targets"]
    spec = HeadSpec(kind=kind, num_atoms=51, v_min=-2.0, v_max=2.0, num_quantiles=32, acting_samples=32)
    torch.manual_seed(0)
    net = NatureCNN(4, 4, head=spec)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)
    for _ in range(60):  # fit the mean to the stored targets: action gaps worth agreeing on
        i = rng.integers(0, len(states), 32)
        loss = torch.nn.functional.mse_loss(net(torch.from_numpy(states[i])), torch.from_numpy(targets[i]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    precision, _ = acting.resolve_precision("auto")
    fast = ActingNetwork(NatureCNN(4, 4, head=spec), precision, background=False)
    ref = ActingNetwork(NatureCNN(4, 4, head=spec), "fp32")
    for a in (fast, ref):
        a.load({k: v.detach().clone() for k, v in net.state_dict().items()})

    def q_of(a):
        out = []
        for i in range(0, len(states), 32):
            torch.manual_seed(i)
            out.append(a.q_values(states[i : i + 32]))
        return np.concatenate(out)

    q32, q = q_of(ref), q_of(fast)
    if precision == "int8-static":
        assert fast.precision != "int8-static" and "int8-static covers only" in fast.describe()
    err, scale = np.abs(q - q32).max(), np.abs(q32).max()
    assert err <= Q_TOLERANCE * scale, f"{kind} in {fast.precision}: max |dQ| {err / scale:.2%} of the Q scale"
    differ = q.argmax(axis=1) != q32.argmax(axis=1)
    assert 1 - differ.mean() >= MIN_AGREEMENT
    assert np.all(gaps(q32)[differ] <= 2 * err), "a disagreement that is not a near-tie"
