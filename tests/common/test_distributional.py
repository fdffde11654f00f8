"""Hand examples for the distributional targets and losses (``common.distributional``): the
categorical projection of C51, the quantile Huber loss of QR-DQN and IQN, and Munchausen's
bonus and soft bootstrap. Every expected value below is worked out by hand in a comment."""

import math

import numpy as np
import pytest
import torch

from common.distributional import (
    categorical_projection,
    cross_entropy,
    distributional_item_loss,
    munchausen_bonus,
    quantile_huber_loss,
    soft_bootstrap,
)
from common.heads import qr_fractions

pytestmark = pytest.mark.usefixtures("one_torch_thread")


ATOMS = torch.tensor([-2.0, -1.0, 0.0, 1.0, 2.0])  # a 5-atom support, dz = 1


def project(probs, returns, discounts, atoms=ATOMS):
    return categorical_projection(
        torch.tensor([probs], dtype=torch.float32),
        torch.tensor([returns], dtype=torch.float32),
        torch.tensor([discounts], dtype=torch.float32),
        atoms,
    )[0]


# --------------------------------------------------------------------------- categorical projection


def test_projection_keeps_the_mass():
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(64, 5, generator=g) * 3, dim=1)
    returns = torch.randn(64, generator=g) * 4  # many outside [-2, 2]
    discounts = torch.rand(64, generator=g)
    discounts[:8] = 0.0
    out = categorical_projection(probs, returns, discounts, ATOMS)
    assert out.shape == (64, 5)
    assert torch.all(out >= 0)
    torch.testing.assert_close(out.sum(dim=1), torch.ones(64), atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    "ret,expected",
    [
        (1.0, [0, 0, 0, 1, 0]),  # on an atom: all of it there
        (0.5, [0, 0, 0.5, 0.5, 0]),  # halfway between 0 and 1
        (0.25, [0, 0, 0.75, 0.25, 0]),  # a quarter of the way from 0 to 1
        (-1.75, [0.75, 0.25, 0, 0, 0]),  # a quarter of the way from -2 to -1
        (2.0, [0, 0, 0, 0, 1]),  # v_max itself
    ],
)
def test_terminal_step_puts_all_mass_at_the_return(ret, expected):
    # discount 0: the bootstrapped distribution does not matter, whatever it is
    for probs in ([0.2] * 5, [1, 0, 0, 0, 0], [0, 0, 0, 0, 1]):
        torch.testing.assert_close(project(probs, ret, 0.0), torch.tensor(expected, dtype=torch.float32))


@pytest.mark.parametrize("ret,edge", [(5.0, 4), (2.0001, 4), (-7.0, 0), (-2.5, 0)])
def test_returns_beyond_the_support_are_clipped_to_its_ends(ret, edge):
    expected = torch.zeros(5)
    expected[edge] = 1.0
    torch.testing.assert_close(project([0.1, 0.2, 0.4, 0.2, 0.1], ret, 0.0), expected)


def test_bootstrapped_atoms_beyond_the_support_are_clipped():
    # R = 1.5, discount 1: the atoms move to -0.5, 0.5, 1.5, 2.5, 3.5; the last two clip to 2.
    # -0.5 -> half at -1, half at 0; 0.5 -> half at 0, half at 1; 1.5 -> half at 1, half at 2.
    p = [0.1, 0.2, 0.3, 0.25, 0.15]
    expected = [0, 0.05, 0.05 + 0.1, 0.1 + 0.15, 0.15 + 0.25 + 0.15]
    torch.testing.assert_close(project(p, 1.5, 1.0), torch.tensor(expected))
    # and at the bottom: R = -3, discount 1: the atoms move to -5, -4, -3, -2, -1; the first
    # four clip to -2: 0.1 + 0.2 + 0.3 + 0.25 = 0.85 at -2, 0.15 at -1
    torch.testing.assert_close(project(p, -3.0, 1.0), torch.tensor([0.85, 0.15, 0, 0, 0]))


def test_n_step_discount_gamma_cubed_by_hand():
    # gamma 0.5, n 3: discount = 0.5^3 = 0.125, R = 0.5.
    # moved atoms: 0.5 + 0.125 * (-2, -1, 0, 1, 2) = 0.25, 0.375, 0.5, 0.625, 0.75, all between 0 and 1:
    # mass at 1 = sum_j p_j * (moved_j - 0) = .1*.25 + .2*.375 + .3*.5 + .2*.625 + .2*.75 = 0.525
    p = [0.1, 0.2, 0.3, 0.2, 0.2]
    torch.testing.assert_close(project(p, 0.5, 0.5**3), torch.tensor([0, 0, 0.475, 0.525, 0]))


def test_n_step_discount_spreads_over_several_atoms():
    # gamma 0.9, n 3: discount 0.729, R = 0; p = 1/2 at -2 and 1/2 at 2.
    # -2 -> -1.458, 0.542 of the way from -2 to -1: 0.542 of its 1/2 at -1, 0.458 at -2
    #  2 ->  1.458, likewise: 0.542 of its 1/2 at 1, 0.458 at 2
    d = 0.9**3
    out = project([0.5, 0, 0, 0, 0.5], 0.0, d)
    expected = torch.tensor([0.5 * (2 * d - 1), 0.5 * (2 - 2 * d), 0, 0.5 * (2 - 2 * d), 0.5 * (2 * d - 1)])
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(expected, torch.tensor([0.229, 0.271, 0, 0.271, 0.229]))


def test_projection_of_a_wider_support_matches_a_loop_over_atoms():
    """Bellemare et al.'s Algorithm 1 written as a loop (floor/ceil), on 11 atoms in [-10, 10]."""
    atoms = torch.linspace(-10, 10, 11)
    g = torch.Generator().manual_seed(3)
    probs = torch.softmax(torch.randn(16, 11, generator=g), dim=1)
    returns, discounts = torch.randn(16, generator=g) * 6, torch.rand(16, generator=g)
    out = categorical_projection(probs, returns, discounts, atoms)
    ref = np.zeros((16, 11))
    for b in range(16):
        for j in range(11):
            tz = min(max(returns[b].item() + discounts[b].item() * atoms[j].item(), -10), 10)
            pos = (tz + 10) / 2.0
            lo, hi = math.floor(pos), math.ceil(pos)
            if lo == hi:
                ref[b, lo] += probs[b, j].item()
            else:
                ref[b, lo] += probs[b, j].item() * (hi - pos)
                ref[b, hi] += probs[b, j].item() * (pos - lo)
    np.testing.assert_allclose(out.numpy(), ref, atol=1e-5)


def test_cross_entropy_against_the_projection():
    logits = torch.tensor([[0.0, 1.0, 2.0, 0.0, -1.0]])
    target = torch.tensor([[0, 0, 0.25, 0.75, 0]])
    log_p = torch.log_softmax(logits, dim=1)[0]
    torch.testing.assert_close(cross_entropy(logits, target), -(0.25 * log_p[2] + 0.75 * log_p[3]).view(1))
    # a distribution's cross-entropy against itself is its entropy, the smallest over targets
    p = torch.softmax(logits, dim=1)
    assert cross_entropy(logits, p).item() == pytest.approx(-(p * p.log()).sum().item(), abs=1e-6)


def test_c51_item_loss_is_the_cross_entropy_with_the_projected_target():
    taken = torch.zeros(1, 5)  # uniform prediction: log p = -log 5 everywhere
    boot = torch.tensor([[0, 0, 1.0, 0, 0]])  # all mass at 0
    loss = distributional_item_loss(
        "c51", taken, boot, torch.tensor([0.5]), torch.tensor([0.9]), atoms=ATOMS
    )  # target: half at 0, half at 1
    assert loss.item() == pytest.approx(math.log(5), abs=1e-6)
    with pytest.raises(ValueError, match="expected"):
        distributional_item_loss("expected", taken, boot, torch.zeros(1), torch.zeros(1))


# --------------------------------------------------------------------------- quantile Huber loss


# Two quantiles theta = (0, 1) at fractions tau = (0.25, 0.75), two target samples (0.5, 3):
#   u = target - theta:   i=0: (0.5, 3) both >= 0 -> weight |0.25 - 0| = 0.25 for both
#                         i=1: (-0.5, 2)           -> weights |0.75 - 1| = 0.25, |0.75 - 0| = 0.75
#   kappa 1: huber(0.5) = 0.125, huber(3) = 2.5, huber(2) = 1.5
#     sum over i per target: m=0: .25*.125 + .25*.125 = 0.0625; m=1: .25*2.5 + .75*1.5 = 1.75
#     mean over targets: 0.90625
#   kappa 0 (|u|): m=0: .25*.5 + .25*.5 = 0.25; m=1: .25*3 + .75*2 = 2.25 -> 1.25
#   kappa 2 (huber/2): huber_2(0.5) = .125 -> .0625; huber_2(3) = 2*(3-1) = 4 -> 2; huber_2(2) = 2 -> 1
#     m=0: .25*.0625*2 = 0.03125; m=1: .25*2 + .75*1 = 1.25 -> 0.640625
@pytest.mark.parametrize("kappa,expected", [(1.0, 0.90625), (0.0, 1.25), (2.0, 0.640625)])
def test_quantile_huber_loss_hand_example(kappa, expected):
    quantiles = torch.tensor([[0.0, 1.0]])
    targets = torch.tensor([[0.5, 3.0]])
    for fractions in (torch.tensor([0.25, 0.75]), torch.tensor([[0.25, 0.75]])):  # [N] or [B, N]
        loss = quantile_huber_loss(quantiles, fractions, targets, kappa)
        assert loss.shape == (1,)
        assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_quantile_huber_loss_per_item():
    quantiles = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    targets = torch.tensor([[0.5, 3.0], [0.0, 1.0]])  # the second: targets at the quantiles, u in {0, +-1}
    loss = quantile_huber_loss(quantiles, torch.tensor([0.25, 0.75]), targets, 1.0)
    # item 2: i=0: u = (0, 1) -> .25*0 + .25*.5; i=1: u = (-1, 0) -> .25*.5 + 0; sum per m: (0.125, 0.125) -> 0.125
    torch.testing.assert_close(loss, torch.tensor([0.90625, 0.125]))


@pytest.mark.parametrize("kappa", [0.0, 1.0])
def test_minimising_the_quantile_loss_finds_the_quantiles_of_the_targets(kappa):
    """A free quantile vector at QR's fractions, trained against many fixed samples, ends at
    the samples' quantiles (exactly for kappa 0; for kappa 1 on samples spread far wider
    than kappa, within a small share of their spread)."""
    rng = np.random.default_rng(0)
    samples = rng.gamma(2.0, 10.0, size=2000).astype(np.float32)  # skewed: the quantiles are not symmetric
    tau = qr_fractions(5)
    theta = torch.zeros(1, 5, requires_grad=True)
    opt = torch.optim.Adam([theta], lr=2.0)
    sched = torch.optim.lr_scheduler.StepLR(opt, 100, gamma=0.3)
    targets = torch.from_numpy(samples).view(1, -1)
    for _ in range(400):
        opt.zero_grad()
        quantile_huber_loss(theta, tau, targets, kappa).sum().backward()
        opt.step()
        sched.step()
    expected = np.quantile(samples, tau.numpy())
    tol = 0.1 if kappa == 0 else 1.0  # the samples' spread is ~14 (measured: 0.02 and 0.5)
    np.testing.assert_allclose(theta.detach().numpy()[0], expected, atol=tol)
    assert np.all(np.diff(theta.detach().numpy()[0]) > 0)  # ordered as their fractions


def test_quantile_gradient_pushes_each_quantile_toward_its_fraction():
    # one quantile at 0, targets 1 (above) and -1 (below): at tau the gradient of the loss is
    # -(tau * 1 - (1 - tau) * 1) / 2 for |u| = 1 <= kappa: it rises for tau > 0.5, falls for tau < 0.5
    for tau, sign in ((0.9, -1), (0.1, 1), (0.5, 0)):
        theta = torch.zeros(1, 1, requires_grad=True)
        quantile_huber_loss(theta, torch.tensor([tau]), torch.tensor([[1.0, -1.0]]), 1.0).sum().backward()
        assert theta.grad.item() == pytest.approx(-(tau - (1 - tau)) * 0.5, abs=1e-6)
        assert np.sign(round(theta.grad.item(), 6)) == sign


def test_qr_item_loss_builds_the_target_from_returns_and_discounts():
    # taken quantiles (0, 1), bootstrapped samples (0, 5), R = 0.5, discount 0.5 -> targets (0.5, 3):
    # the hand example above
    loss = distributional_item_loss(
        "qr",
        torch.tensor([[0.0, 1.0]]),
        torch.tensor([[0.0, 5.0]]),
        torch.tensor([0.5]),
        torch.tensor([0.5]),
        fractions=torch.tensor([0.25, 0.75]),
        kappa=1.0,
    )
    assert loss.item() == pytest.approx(0.90625, abs=1e-6)


# --------------------------------------------------------------------------- Munchausen

# q = (1, 2), tau 0.5: q / tau = (2, 4); log-sum-exp = 4 + log(1 + e^-2) = 4.126928
# log pi = (-2.126928, -0.126928); tau * log pi = (-1.063464, -0.063464)
LSE = 4 + math.log(1 + math.exp(-2))


def test_munchausen_bonus_hand_example():
    q = torch.tensor([[1.0, 2.0], [1.0, 2.0]])
    bonus = munchausen_bonus(q, torch.tensor([0, 1]), tau=0.5, alpha=0.9, l0=-1.0)
    # action 0: tau log pi = -1.063464 clips to l0 = -1 -> 0.9 * -1; action 1: 0.9 * -0.063464
    torch.testing.assert_close(bonus, torch.tensor([-0.9, 0.9 * 0.5 * (4 - LSE)]))
    assert bonus[1].item() == pytest.approx(-0.0571176, abs=1e-6)
    # a lower l0 leaves action 0 unclipped
    loose = munchausen_bonus(q, torch.tensor([0]), tau=0.5, alpha=0.9, l0=-5.0)
    assert loose.item() == pytest.approx(0.9 * 0.5 * (2 - LSE), abs=1e-6)


def test_munchausen_bonus_stays_within_alpha_l0_and_zero():
    g = torch.Generator().manual_seed(0)
    q = torch.randn(256, 6, generator=g) * 10
    actions = torch.randint(0, 6, (256,), generator=g)
    bonus = munchausen_bonus(q, actions, tau=0.03, alpha=0.9, l0=-1.0)
    assert torch.all(bonus <= 0) and torch.all(bonus >= -0.9)
    greedy = munchausen_bonus(q, q.argmax(dim=1), tau=0.03, alpha=0.9, l0=-1.0)
    assert torch.all(greedy >= bonus)  # the greedy action has the largest log pi


def test_soft_bootstrap_hand_example():
    # pi = softmax(2, 4) = (0.1192029, 0.8807971)
    # soft value = sum pi (q - tau log pi) = .1192029 * (1 + .5 * 2.126928) + .8807971 * (2 + .5 * .126928)
    #            = 2.063464 = tau * log-sum-exp(q / tau)
    q = torch.tensor([[1.0, 2.0]])
    assert soft_bootstrap(q, q, 0.5).item() == pytest.approx(0.5 * LSE, abs=1e-6)
    assert 0.5 * LSE == pytest.approx(2.063464, abs=1e-6)
    # values other than q: the policy is q's, the values are averaged under it
    values = torch.tensor([[10.0, 0.0]])
    pi0, pi1 = 1 / (1 + math.exp(2)), 1 / (1 + math.exp(-2))
    by_hand = pi0 * (10 + 0.5 * (LSE - 2)) + pi1 * (0 + 0.5 * (LSE - 4))
    assert soft_bootstrap(q, values, 0.5).item() == pytest.approx(by_hand, abs=1e-5)


def test_soft_bootstrap_of_quantile_samples_is_per_sample():
    q = torch.tensor([[1.0, 2.0]])
    samples = torch.tensor([[[1.0, 3.0, -1.0], [2.0, 0.0, 5.0]]])  # [B=1, A=2, M=3]
    out = soft_bootstrap(q, samples, 0.5)
    assert out.shape == (1, 3)
    for m in range(3):
        assert out[0, m].item() == pytest.approx(soft_bootstrap(q, samples[:, :, m], 0.5).item(), abs=1e-6)


@pytest.mark.parametrize("tau", [1e-2, 1e-3, 1e-4])
def test_soft_value_approaches_max_q_as_tau_shrinks(tau):
    g = torch.Generator().manual_seed(1)
    q = torch.randn(64, 4, generator=g) * 5
    soft = soft_bootstrap(q, q, tau)
    gap = soft - q.max(dim=1).values
    # tau * logsumexp(q / tau) lies in [max q, max q + tau log A]
    assert torch.all(gap >= -1e-4) and torch.all(gap <= tau * math.log(4) + 1e-4)
    # a high temperature: mean q + tau log A + var(q) / (2 tau) + ..., var(q) here < 200
    far = soft_bootstrap(q, q, 1000.0)
    assert torch.all((far - q.mean(dim=1) - 1000 * math.log(4)).abs() < 0.2)
