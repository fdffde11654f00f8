"""The heads (``common.heads``) and torsos (``common.torsos``) of the Q-network: fp32 output
layers under bf16 autocast, the dueling combination per atom, C51's and the quantile heads'
expected Q, IQN's cosine embedding and its sampled mean, the IMPALA torso's size and its
spectral normalisation."""

import math

import pytest
import torch
from torch import nn

from common.heads import (
    DuelingHead,
    HeadSpec,
    PlainHead,
    TauEmbedding,
    expected_q,
    q_head,
    qr_fractions,
    support,
)
from common.networks import build_q_network
from common.torsos import ImpalaTorso, SpectralNormConv2d

pytestmark = pytest.mark.usefixtures("one_torch_thread")


BF16 = dict(device_type="cpu", dtype=torch.bfloat16)


def _set(layer: nn.Linear, weight, bias=None):
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(weight, dtype=torch.float32))
        layer.bias.copy_(torch.zeros_like(layer.bias) if bias is None else torch.tensor(bias, dtype=torch.float32))


def close_actions_head(dueling: bool) -> nn.Module:
    """A head that maps the features (1, 1) to Q = (19.95, 20.05): two actions 0.1 apart at
    |Q| ~ 20, where bf16's step is 0.125 and both round to 20.0. The hidden layer sees and
    gives small integers, exact in bf16, so any difference comes from the output layers."""
    head = q_head(2, 2, hidden=2, dueling=dueling)
    if dueling:
        _set(head.value[0], [[1, 0], [0, 1]])
        _set(head.value[2], [[10.0, 10.0]])  # V = 20
        _set(head.advantage[0], [[1, 0], [0, 1]])
        _set(head.advantage[2], [[-0.05, 0.0], [0.0, 0.05]])  # A = (-0.05, 0.05), mean 0
    else:
        _set(head[0], [[1, 0], [0, 1]])
        _set(head[2], [[19.95, 0.0], [0.0, 20.05]])
    return head


@pytest.mark.parametrize("dueling", [True, False])
def test_bf16_autocast_keeps_close_actions_apart(dueling):
    head = close_actions_head(dueling)
    x = torch.ones(3, 2)
    fp32 = head(x)
    torch.testing.assert_close(fp32, torch.tensor([[19.95, 20.05]] * 3), atol=1e-5, rtol=0)
    with torch.autocast(**BF16):
        mixed = head(x)
    assert mixed.dtype == torch.float32
    assert (mixed - fp32).abs().max().item() < 1e-4
    assert torch.all(mixed.argmax(dim=1) == 1) and torch.all(mixed[:, 1] - mixed[:, 0] > 0.09)
    # what an output layer in bf16 would have given: a tie, and the wrong action half the time
    assert torch.tensor(19.95).bfloat16() == torch.tensor(20.05).bfloat16()


@pytest.mark.parametrize("kind", ["expected", "c51", "qr"])
def test_heads_output_fp32_under_autocast(kind):
    torch.manual_seed(0)
    net = build_q_network((4,), 1, 3, head=HeadSpec(kind=kind, num_atoms=5, num_quantiles=7))
    obs = torch.randn(2, 1, 4)
    with torch.autocast(**BF16):
        out, q = net.outputs(obs), net(obs)
    assert out.dtype == torch.float32 and q.dtype == torch.float32
    shape = {"expected": (2, 3), "c51": (2, 3, 5), "qr": (2, 3, 7)}[kind]
    assert out.shape == shape and q.shape == (2, 3)
    torch.testing.assert_close(q, net(obs), atol=0.05, rtol=0.02)  # the torso and hidden layers in bf16 only


def test_dueling_distributional_head_combines_per_atom():
    torch.manual_seed(1)
    head = DuelingHead(6, num_actions=3, hidden=8, atoms=4)
    x = torch.randn(5, 6)
    out = head(x)
    assert out.shape == (5, 3, 4)
    value = head.value(x)  # [5, 4]
    adv = head.advantage(x).view(5, 3, 4)
    for b in range(5):
        for a in range(3):
            for k in range(4):
                by_hand = value[b, k] + adv[b, a, k] - sum(adv[b, j, k] for j in range(3)) / 3
                assert out[b, a, k].item() == pytest.approx(by_hand.item(), abs=1e-5)
    # the advantages average to zero per atom: the mean over actions is V
    torch.testing.assert_close(out.mean(dim=1), value, atol=1e-5, rtol=0)


def test_plain_distributional_head_has_one_output_per_action_and_atom():
    head = PlainHead(6, num_actions=3, hidden=8, atoms=4)
    x = torch.randn(5, 6)
    torch.testing.assert_close(head(x), head[2](head[1](head[0](x))).view(5, 3, 4))


def test_c51_q_is_the_mean_of_the_softmax_on_the_atoms():
    spec = HeadSpec(kind="c51", num_atoms=5, v_min=-2, v_max=2)
    atoms = support(spec)
    torch.testing.assert_close(atoms, torch.tensor([-2.0, -1.0, 0.0, 1.0, 2.0]))
    logits = torch.tensor([[[0.0, 0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0, math.log(3)]]])
    # uniform: mean 0; weights (1, 1, 1, 1, 3) / 7: (-2 - 1 + 0 + 1 + 6) / 7 = 4 / 7
    torch.testing.assert_close(expected_q("c51", logits, atoms), torch.tensor([[0.0, 4 / 7]]))
    sharp = torch.full((1, 1, 5), -50.0)
    sharp[0, 0, 3] = 50.0
    assert expected_q("c51", sharp, atoms).item() == pytest.approx(1.0, abs=1e-6)


def test_quantile_heads_q_is_the_mean_and_qr_fractions_are_midpoints():
    torch.testing.assert_close(qr_fractions(4), torch.tensor([1 / 8, 3 / 8, 5 / 8, 7 / 8]))
    quantiles = torch.tensor([[[1.0, 2.0, 6.0], [0.0, 0.0, 3.0]]])
    for kind in ("qr", "iqn"):
        torch.testing.assert_close(expected_q(kind, quantiles), torch.tensor([[3.0, 1.0]]))
    q = torch.tensor([[1.0, -2.0]])
    assert torch.equal(expected_q("expected", q), q)


def test_head_spec_refuses_impossible_heads():
    for kwargs in (
        dict(kind="c51", num_atoms=1),
        dict(kind="c51", v_min=10, v_max=-10),
        dict(kind="c51", v_min=1, v_max=1),
        dict(kind="qr", num_quantiles=0),
        dict(kind="iqn", embedding_dim=0),
        dict(kind="iqn", acting_samples=0),
        dict(kind="mean"),
    ):
        with pytest.raises(ValueError):
            HeadSpec(**kwargs)
    assert HeadSpec(kind="c51").outputs_per_action == 51 and HeadSpec(kind="qr").outputs_per_action == 200
    assert HeadSpec(kind="iqn").outputs_per_action == 1 and HeadSpec().outputs_per_action == 1


# --------------------------------------------------------------------------- IQN


def test_tau_embedding_is_relu_linear_of_cos_pi_i_tau():
    emb = TauEmbedding(dim=4, features=4)
    with torch.no_grad():
        emb.linear.weight.copy_(torch.eye(4))
        emb.linear.bias.zero_()
    taus = torch.tensor([[0.0, 0.25, 0.5], [1.0, 0.1, 0.9]])
    out = emb(taus)
    assert out.shape == (2, 3, 4)
    for b in range(2):
        for t in range(3):
            for i in range(1, 5):  # i = 1..dim, Dopamine's indices
                by_hand = max(0.0, math.cos(math.pi * i * taus[b, t].item()))
                assert out[b, t, i - 1].item() == pytest.approx(by_hand, abs=1e-6)
    # e.g. tau 0.25: cos(pi/4), cos(pi/2), cos(3pi/4), cos(pi) -> (0.7071, 0, 0, 0) after the ReLU
    torch.testing.assert_close(out[0, 1], torch.tensor([math.sqrt(0.5), 0.0, 0.0, 0.0]), atol=1e-6, rtol=0)


def iqn_net(acting_samples=32):
    torch.manual_seed(4)
    return build_q_network((4,), 1, 3, head=HeadSpec(kind="iqn", embedding_dim=16, acting_samples=acting_samples))


def test_iqn_outputs_at_fixed_fractions_are_deterministic():
    net = iqn_net()
    obs = torch.randn(2, 1, 4)
    taus = torch.tensor([[0.1, 0.5, 0.9], [0.2, 0.2, 0.7]])
    a = net.outputs(obs, taus)
    torch.rand(10)  # whatever torch's generator does in between
    assert a.shape == (2, 3, 3)  # [B, A, T]
    assert torch.equal(net.outputs(obs, taus), a)
    # each fraction's values depend on that fraction alone (not on the others in the row)
    torch.testing.assert_close(net.outputs(obs[1:], taus[1:, :1]), a[1:, :, :1])
    torch.testing.assert_close(a[1, :, 0], a[1, :, 1])


def test_iqn_mean_over_sampled_fractions_approaches_the_expected_q():
    """The expected Q is the integral of the quantile function over (0, 1): the midpoint
    rule over 4096 fractions gives it to within its smoothness; the mean of 4096 uniform
    samples (what ``outputs`` draws without taus, and ``forward`` with K = 4096) is within a
    few standard errors, std(Z) / sqrt(4096), of it."""
    net = iqn_net(acting_samples=4096)
    obs = torch.randn(3, 1, 4)
    grid = qr_fractions(4096).expand(3, -1)
    with torch.no_grad():
        z = net.outputs(obs, grid)  # [3, A, 4096]
        integral = z.mean(dim=2)
        tol = 5 * z.std(dim=2) / math.sqrt(4096) + 1e-5
        torch.manual_seed(5)
        sampled = net.outputs(obs, torch.rand(3, 4096)).mean(dim=2)
        torch.manual_seed(6)
        q = net(obs)
    assert torch.all((sampled - integral).abs() <= tol), (sampled - integral, tol)
    assert torch.all((q - integral).abs() <= tol), (q - integral, tol)
    assert torch.all(z.std(dim=2) > 0)  # the quantile function is not flat: the check says something
    # K = 32 (acting's default) is a noisier estimate of the same
    small = iqn_net(acting_samples=32)
    small.load_state_dict(net.state_dict())
    with torch.no_grad():
        assert torch.all((small(obs) - integral).abs() <= 5 * z.std(dim=2) / math.sqrt(32) + 1e-5)


# --------------------------------------------------------------------------- torsos


@pytest.mark.parametrize("width", [1, 2])
def test_impala_torso_size_for_84x84(width):
    torso = ImpalaTorso(4, width=width)
    assert torso.features == 32 * width * 36
    out = torso(torch.rand(1, 4, 84, 84))
    assert out.shape == (1, 32 * width * 36)
    # the adaptive max-pool: another frame size gives the same number of features
    assert torso(torch.rand(1, 4, 64, 72)).shape == (1, 32 * width * 36)


def test_impala_network_takes_uint8_frames():
    torch.manual_seed(0)
    net = build_q_network((84, 84), 4, 6, head=HeadSpec(kind="qr", num_quantiles=8), torso="impala", width=1)
    out = net.outputs(torch.randint(0, 255, (1, 4, 84, 84), dtype=torch.uint8))
    assert out.shape == (1, 6, 8) and net(torch.zeros(1, 4, 84, 84, dtype=torch.uint8)).shape == (1, 6)
    with pytest.raises(ValueError, match="impala"):
        build_q_network((4,), 1, 2, torso="impala")
    with pytest.raises(ValueError, match="impala"):
        build_q_network((4, 10, 10), 1, 2, torso="impala")


def test_impala_spectral_norm_is_in_the_residual_blocks():
    plain = ImpalaTorso(4, width=1)
    normed = ImpalaTorso(4, width=1, spectral_norm=True)
    count = sum(isinstance(m, SpectralNormConv2d) for m in normed.modules())
    assert count == 12  # 3 stages x 2 residual blocks x 2 convolutions
    assert not any(isinstance(m, SpectralNormConv2d) for m in plain.modules())
    assert set(normed.state_dict()) - set(plain.state_dict()) == {k for k in normed.state_dict() if k.endswith(".u")}


def largest_singular_value(conv: SpectralNormConv2d) -> float:
    with torch.no_grad():
        return torch.linalg.matrix_norm(conv.normalized_weight().flatten(1), ord=2).item()


def test_spectral_norm_converges_to_one_in_training_mode():
    torch.manual_seed(0)
    conv = SpectralNormConv2d(8, 16, 3, padding=1)
    with torch.no_grad():
        conv.weight.mul_(7.0)  # far from norm 1 to begin with
    raw = torch.linalg.matrix_norm(conv.weight.detach().flatten(1), ord=2).item()
    assert raw > 2
    x = torch.randn(2, 8, 6, 6)
    conv.train()
    for _ in range(30):  # one power iteration per training forward pass
        conv(x)
    assert largest_singular_value(conv) == pytest.approx(1.0, abs=0.02)
    # the output is the plain convolution by weight / sigma
    torch.testing.assert_close(
        conv(x), nn.functional.conv2d(x, conv.weight / raw, conv.bias, padding=1), atol=2e-2, rtol=2e-2
    )


def test_spectral_norm_eval_mode_does_not_change_u():
    torch.manual_seed(1)
    conv = SpectralNormConv2d(4, 4, 3)
    x = torch.randn(1, 4, 5, 5)
    conv.eval()
    u = conv.u.clone()
    a = conv(x)
    for _ in range(5):
        b = conv(x)
    assert torch.equal(conv.u, u) and torch.equal(a, b)
    conv.train()
    conv(x)
    assert not torch.equal(conv.u, u)
    assert conv.u.norm().item() == pytest.approx(1.0, abs=1e-5)


def test_spectral_norm_lets_the_gradient_through_the_weight():
    conv = SpectralNormConv2d(3, 3, 3)
    conv(torch.randn(1, 3, 5, 5)).square().sum().backward()
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0
    assert conv.u.grad is None and not conv.u.requires_grad
