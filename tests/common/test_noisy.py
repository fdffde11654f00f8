"""Noisy linear layers (``common.noisy``): with the noise off a layer is exactly its mean
linear layer; the factorised noise has the paper's statistics; the initialisation is the
paper's; the noise is drawn only when asked and never saved."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from common.noisy import NoisyLinear, linear, noisy_layers, reset_noise, set_noise

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def effective(layer: NoisyLinear) -> tuple[torch.Tensor, torch.Tensor]:
    """The weight ``[out, in]`` and bias the layer applies, read through its forward pass:
    f(0) is the bias, f(e_k) - f(0) the k-th column of the weight."""
    with torch.no_grad():
        bias = layer(torch.zeros(1, layer.in_features))[0]
        weight = (layer(torch.eye(layer.in_features)) - bias).t()
    return weight, bias


def test_noise_off_is_exactly_the_mean_linear_layer():
    torch.manual_seed(0)
    layer = NoisyLinear(6, 3)
    x = torch.randn(5, 6)
    reset_noise(layer)
    noisy = layer(x)
    assert not torch.allclose(noisy, F.linear(x, layer.weight_mu, layer.bias_mu))  # the noise is on by default
    set_noise(layer, False)
    assert torch.equal(layer(x), F.linear(x, layer.weight_mu, layer.bias_mu))
    reset_noise(layer)  # drawing new noise while it is off changes nothing
    assert torch.equal(layer(x), F.linear(x, layer.weight_mu, layer.bias_mu))
    set_noise(layer, True)
    assert not torch.equal(layer(x), F.linear(x, layer.weight_mu, layer.bias_mu))


def test_the_same_noise_until_the_next_draw():
    torch.manual_seed(1)
    layer = NoisyLinear(4, 2)
    x = torch.randn(3, 4)
    reset_noise(layer)
    first = layer(x)
    torch.randn(100)  # other draws from torch's generator do not touch the layer's noise
    assert torch.equal(layer(x), first)
    reset_noise(layer)
    assert not torch.equal(layer(x), first)


def test_a_generator_makes_the_draws_reproducible():
    layer = NoisyLinear(4, 2)
    x = torch.randn(3, 4)
    reset_noise(layer, torch.Generator().manual_seed(7))
    a = layer(x)
    reset_noise(layer, torch.Generator().manual_seed(8))
    assert not torch.equal(layer(x), a)
    reset_noise(layer, torch.Generator().manual_seed(7))
    assert torch.equal(layer(x), a)


def test_factorised_noise_statistics():
    """w - mu_w = sigma_w * f(e_out) f(e_in) with f(x) = sign(x) sqrt(|x|), e ~ N(0, 1):
    E[f(e)] = 0 and E[f(e)^2] = E|e| = sqrt(2 / pi), so the weight's noise has mean 0 and
    variance sigma^2 * E[f^2]^2 = sigma^2 * 2 / pi; the bias's (sigma_b f(e_out)) variance is
    sigma_b^2 * sqrt(2 / pi). Each draw's weight noise is a rank-one matrix."""
    torch.manual_seed(2)
    layer = NoisyLinear(8, 6, sigma0=0.5)
    with torch.no_grad():  # distinct sigmas per entry, so a mix-up of entries would show
        layer.weight_sigma.copy_(torch.linspace(0.1, 1.0, 48).view(6, 8))
        layer.bias_sigma.copy_(torch.linspace(0.2, 0.7, 6))
    gen = torch.Generator().manual_seed(3)
    draws, biases = [], []
    for _ in range(4000):
        reset_noise(layer, gen)
        w, b = effective(layer)
        draws.append(w)
        biases.append(b)
    w_noise = (torch.stack(draws) - layer.weight_mu.detach()) / layer.weight_sigma.detach()  # [n, out, in]
    b_noise = (torch.stack(biases) - layer.bias_mu.detach()) / layer.bias_sigma.detach()
    n = w_noise.shape[0]
    # mean 0 per entry: each mean's standard error is sqrt(2/pi / n) ~ 0.0126
    assert w_noise.mean(dim=0).abs().max() < 5 * math.sqrt(2 / math.pi / n)
    assert b_noise.mean(dim=0).abs().max() < 5 * math.sqrt(math.sqrt(2 / math.pi) / n)
    # the variances, pooled over entries, within a few per cent
    assert w_noise.var(dim=0).mean().item() == pytest.approx(2 / math.pi, rel=0.05)
    assert b_noise.var(dim=0).mean().item() == pytest.approx(math.sqrt(2 / math.pi), rel=0.05)
    # rank one per draw (factorised, not one draw per entry)
    sv = torch.linalg.svdvals(w_noise[:50])
    assert torch.all(sv[:, 1] < 1e-5 * sv[:, 0] + 1e-5)
    # E|f(e)| = E|e|^(1/2) = 2^(1/4) Gamma(3/4) / sqrt(pi) = 0.8222, so E|w - mu| / sigma = 0.8222^2 = 0.676
    # (a Gaussian of the same variance would give sqrt(2/pi) * sqrt(2/pi) = 0.637)
    half_moment = 2**0.25 * math.gamma(0.75) / math.sqrt(math.pi)
    assert w_noise.abs().mean().item() == pytest.approx(half_moment**2, rel=0.03)


def test_factorised_initialisation():
    for p, q, sigma0 in ((64, 16, 0.5), (512, 6, 0.1)):
        layer = NoisyLinear(p, q, sigma0=sigma0)
        bound = 1 / math.sqrt(p)
        for mu in (layer.weight_mu, layer.bias_mu):
            assert mu.abs().max().item() <= bound
        w = layer.weight_mu.detach()
        assert w.min().item() < -0.8 * bound and w.max().item() > 0.8 * bound  # spread over the range
        assert abs(w.mean().item()) < 0.1 * bound
        assert torch.all(layer.weight_sigma == sigma0 * bound) and torch.all(layer.bias_sigma == sigma0 * bound)


def test_bad_sizes_and_sigma_are_refused():
    for args in ((0, 3), (3, 0), (3, 3, -0.1), (3, 3, float("nan"))):
        with pytest.raises(ValueError, match="NoisyLinear"):
            NoisyLinear(*args)


def test_noise_buffers_are_not_in_the_state_dict():
    layer = NoisyLinear(4, 3)
    reset_noise(layer)
    assert set(layer.state_dict()) == {"weight_mu", "weight_sigma", "bias_mu", "bias_sigma"}
    other = NoisyLinear(4, 3)
    other.load_state_dict(layer.state_dict())  # strict: nothing missing, nothing extra
    set_noise(layer, False)
    set_noise(other, False)
    x = torch.randn(2, 4)
    assert torch.equal(layer(x), other(x))
    # a fresh copy has no noise drawn yet: it plays as the mean layer until reset_noise
    fresh = NoisyLinear(4, 3)
    fresh.load_state_dict(layer.state_dict())
    assert torch.equal(fresh(x), F.linear(x, layer.weight_mu, layer.bias_mu))


def test_module_helpers_reach_every_noisy_layer():
    net = nn.Sequential(linear(4, 8, noisy=True), nn.ReLU(), nn.Sequential(linear(8, 2, noisy=True)), nn.Linear(2, 2))
    assert isinstance(linear(4, 8, noisy=False), nn.Linear) and not isinstance(linear(4, 8, False), NoisyLinear)
    layers = noisy_layers(net)
    assert len(layers) == 2
    before = [layer.eps_in.clone() for layer in layers]
    reset_noise(net)
    assert all(not torch.equal(b, layer.eps_in) for b, layer in zip(before, layers))
    set_noise(net, False)
    assert all(layer.noise is False for layer in layers)
    reset_noise(nn.Linear(2, 2))  # a network without noisy layers: nothing to do
