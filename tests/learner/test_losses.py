"""The learner's loss for each head (``learner/losses.py``) and one update of each through
``DQNLearner``: every head (expected, c51, qr, iqn), Munchausen (expected, iqn) and noisy
nets run on a small MLP, give finite losses and priorities, and learn a fixed batch; the
c51, qr and Munchausen targets match a computation written out step by step here."""

import contextlib
import dataclasses

import numpy as np
import pytest
import torch

from common.distributional import categorical_projection, munchausen_bonus, quantile_huber_loss, soft_bootstrap
from common.heads import HeadSpec, qr_fractions
from common.messages import SampleBatch
from common.networks import build_q_network
from learner.dqn import DQNLearner
from learner.losses import LossSpec, batch_loss

MUNCHAUSEN = (0.03, 0.9, -1.0)
NO_AMP = contextlib.nullcontext


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# name: (head spec, loss spec)
CASES = {
    "expected": (HeadSpec(), LossSpec()),
    "expected-plain-q": (HeadSpec(dueling=False), LossSpec(double_q=False)),
    "c51": (HeadSpec(kind="c51", num_atoms=11, v_min=-5, v_max=5), LossSpec(kind="c51")),
    "qr": (HeadSpec(kind="qr", num_quantiles=16), LossSpec(kind="qr")),
    "iqn": (
        HeadSpec(kind="iqn", embedding_dim=16, acting_samples=8),
        LossSpec(kind="iqn", tau_samples=16, target_samples=16),
    ),
    "iqn+munchausen": (
        HeadSpec(kind="iqn", embedding_dim=16, acting_samples=8),
        LossSpec(kind="iqn", tau_samples=16, target_samples=16, munchausen=MUNCHAUSEN),
    ),
    "expected+munchausen": (HeadSpec(), LossSpec(munchausen=MUNCHAUSEN)),
    "expected+noisy": (HeadSpec(noisy=True), LossSpec()),
    "c51+noisy": (HeadSpec(kind="c51", num_atoms=11, v_min=-5, v_max=5, noisy=True), LossSpec(kind="c51")),
    "iqn+noisy+munchausen": (
        HeadSpec(kind="iqn", embedding_dim=16, acting_samples=8, noisy=True),
        LossSpec(kind="iqn", tau_samples=8, target_samples=8, munchausen=MUNCHAUSEN),
    ),
}


def fixed_batch(b=32, d=4, seed=0):
    rng = np.random.default_rng(seed)
    return SampleBatch(
        ids=np.arange(b),
        obs=rng.normal(size=(b, 1, d)).astype(np.float32),
        actions=rng.integers(0, 2, b),
        returns=rng.normal(size=b).astype(np.float32),
        discounts=np.where(rng.random(b) < 0.2, 0.0, 0.9**3).astype(np.float32),  # some terminal items
        next_obs=rng.normal(size=(b, 1, d)).astype(np.float32),
        weights=rng.uniform(0.3, 1.0, b).astype(np.float32),
    )


def on_the_atoms(batch: SampleBatch) -> SampleBatch:
    """Terminal items with returns on c51's atoms (-5..5): the target distributions are
    single atoms, so the cross-entropy can fall to 0 (with bootstrapped targets it falls only
    to their entropy; the tests by hand below cover those)."""
    returns = np.round(batch.returns * 2).clip(-5, 5).astype(np.float32)
    return dataclasses.replace(batch, returns=returns, discounts=np.zeros_like(batch.discounts))


def learner_for(name, precision="fp32", seed=0):
    head, loss = CASES[name]
    torch.manual_seed(seed)
    net = build_q_network((4,), 1, 2, head=head)
    return DQNLearner(
        net, lr=3e-3, adam_eps=1e-8, grad_clip=10, target_update_period=10**9, loss_spec=loss, precision=precision
    )


@pytest.mark.parametrize("name", list(CASES))
def test_one_update_per_head_gives_finite_loss_and_priorities_and_learns_a_fixed_batch(name):
    learner = learner_for(name)
    batch = on_the_atoms(fixed_batch()) if name.startswith("c51") else fixed_batch()
    losses = []
    for step in range(50):
        out = learner.update(batch)
        assert np.isfinite(out["loss"]) and np.isfinite(out["mean_q"])
        p = out["priorities"]
        assert p.shape == (32,) and p.dtype == np.float32
        assert np.all(np.isfinite(p)) and np.all(p >= 0)
        assert out["handoff"][0][2] is p or np.array_equal(out["handoff"][0][2], p)
        losses.append(out["loss"])
    # the sampled heads (iqn, noisy) give noisy losses: compare the averages of five updates
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    assert last < 0.5 * first, (name, losses[:5], losses[-5:])  # measured: 0.3 or less over 4 seeds


@pytest.mark.parametrize("name", ["c51", "qr", "iqn+munchausen", "expected+noisy"])
def test_bf16_autocast_updates_are_finite(name):
    learner = learner_for(name, precision="bf16")
    out = learner.update(fixed_batch(b=8))
    assert np.isfinite(out["loss"]) and np.all(np.isfinite(out["priorities"])) and np.all(out["priorities"] >= 0)


def test_noisy_learner_draws_new_independent_noise_for_both_networks_each_update():
    learner = learner_for("expected+noisy")
    layer = lambda net: next(m for m in net.modules() if hasattr(m, "eps_in"))  # noqa: E731
    learner.update(fixed_batch(b=8))
    online, target = layer(learner.online).eps_in.clone(), layer(learner.target).eps_in.clone()
    assert not torch.equal(online, target)  # independent draws
    assert online.abs().sum() > 0
    learner.update(fixed_batch(b=8))
    assert not torch.equal(layer(learner.online).eps_in, online)
    # the noise is not part of what the actors receive
    assert not any(k.endswith(("eps_in", "eps_out")) for k in learner.weights_numpy())


# --------------------------------------------------------------------------- the targets, written out


def nets(head: HeadSpec, seed=2):  # a seed where online and target prefer different actions at s'
    torch.manual_seed(seed)
    online = build_q_network((4,), 1, 3, head=head)
    target = build_q_network((4,), 1, 3, head=head)  # other weights: online and target disagree
    return online, target


def tensors(b=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    obs, next_obs = torch.randn(b, 1, 4, generator=g), torch.randn(b, 1, 4, generator=g)
    actions = torch.randint(0, 3, (b,), generator=g)
    returns = torch.randn(b, generator=g) * 2
    discounts = torch.where(torch.rand(b, generator=g) < 0.25, 0.0, 0.99**3)
    weights = torch.rand(b, generator=g) + 0.1
    return obs, next_obs, actions, returns, discounts, weights


@pytest.mark.parametrize("double_q", [True, False])
def test_c51_loss_by_hand(double_q):
    online, target = nets(HeadSpec(kind="c51", num_atoms=21, v_min=-4, v_max=4))
    obs, next_obs, actions, returns, discounts, weights = tensors()
    spec = LossSpec(kind="c51", double_q=double_q)
    loss, priorities, mean_q = batch_loss(
        online, target, obs, next_obs, actions, returns, discounts, weights, spec, NO_AMP
    )
    with torch.no_grad():
        rows = torch.arange(16)
        chooser = online if double_q else target
        best = chooser(next_obs).argmax(dim=1)  # the expected Q picks a* at s'
        boot = torch.softmax(target.outputs(next_obs)[rows, best], dim=1)
        projected = categorical_projection(boot, returns, discounts, online.atoms)
        log_p = torch.log_softmax(online.outputs(obs)[rows, actions], dim=1)
        per_item = -(projected * log_p).sum(dim=1)
    torch.testing.assert_close(priorities, per_item)  # Rainbow: the priority is the item's loss
    torch.testing.assert_close(loss, (weights * per_item).mean())
    torch.testing.assert_close(mean_q, online(obs).mean())
    assert loss.requires_grad and priorities.shape == (16,)


@pytest.mark.parametrize(
    "head", [HeadSpec(kind="c51", num_atoms=21, v_min=-4, v_max=4), HeadSpec(kind="qr", num_quantiles=8, dueling=False)]
)
def test_double_q_and_plain_q_pick_different_bootstraps_here(head):
    online, target = nets(head)
    args = tensors()
    with torch.no_grad():
        disagree = (online(args[1]).argmax(1) != target(args[1]).argmax(1)).sum().item()
    assert 0 < disagree < 16  # else the tests by hand could not tell double from plain Q
    double = batch_loss(online, target, *args, LossSpec(kind=head.kind), NO_AMP)[1]
    plain = batch_loss(online, target, *args, LossSpec(kind=head.kind, double_q=False), NO_AMP)[1]
    assert not torch.allclose(double, plain)


def test_priorities_do_not_depend_on_the_importance_weights():
    online, target = nets(HeadSpec(kind="qr", num_quantiles=8))
    obs, next_obs, actions, returns, discounts, weights = tensors()
    spec = LossSpec(kind="qr")
    a = batch_loss(online, target, obs, next_obs, actions, returns, discounts, weights, spec, NO_AMP)
    b = batch_loss(online, target, obs, next_obs, actions, returns, discounts, torch.ones(16), spec, NO_AMP)
    torch.testing.assert_close(a[1], b[1])
    torch.testing.assert_close(a[0], (weights * b[1]).mean())


@pytest.mark.parametrize("kappa", [1.0, 0.0])
def test_qr_loss_by_hand(kappa):
    online, target = nets(HeadSpec(kind="qr", num_quantiles=8, dueling=False))
    obs, next_obs, actions, returns, discounts, weights = tensors()
    spec = LossSpec(kind="qr", kappa=kappa)
    loss, priorities, _ = batch_loss(online, target, obs, next_obs, actions, returns, discounts, weights, spec, NO_AMP)
    with torch.no_grad():
        rows = torch.arange(16)
        best = online(next_obs).argmax(dim=1)
        samples = returns[:, None] + discounts[:, None] * target.outputs(next_obs)[rows, best]  # [B, 8]
        taken = online.outputs(obs)[rows, actions]
        per_item = quantile_huber_loss(taken, qr_fractions(8), samples, kappa)
    torch.testing.assert_close(priorities, per_item)
    torch.testing.assert_close(loss, (weights * per_item).mean())
    # a terminal item's targets are all its return
    terminal = int(torch.nonzero(discounts == 0)[0])
    u = returns[terminal] - taken[terminal]
    tau = qr_fractions(8)
    huber = torch.where(u.abs() <= 1, 0.5 * u**2, u.abs() - 0.5) if kappa else u.abs()
    by_hand = ((tau - (u < 0).float()).abs() * huber).sum()
    assert priorities[terminal].item() == pytest.approx(by_hand.item(), rel=1e-5)


def test_expected_munchausen_target_by_hand():
    online, target = nets(HeadSpec())
    obs, next_obs, actions, returns, discounts, weights = tensors()
    tau, alpha, l0 = MUNCHAUSEN
    spec = LossSpec(munchausen=MUNCHAUSEN)
    loss, priorities, _ = batch_loss(online, target, obs, next_obs, actions, returns, discounts, weights, spec, NO_AMP)
    with torch.no_grad():
        q_t, q_next = target(obs), target(next_obs)
        log_pi = torch.log_softmax(q_t / tau, dim=1)
        bonus = alpha * (tau * log_pi[torch.arange(16), actions]).clamp(l0, 0)
        pi_next = torch.softmax(q_next / tau, dim=1)
        soft = (pi_next * (q_next - tau * torch.log_softmax(q_next / tau, dim=1))).sum(dim=1)
        y = returns + bonus + discounts * soft
        td = y - online(obs)[torch.arange(16), actions]
    torch.testing.assert_close(priorities, td.abs())
    torch.testing.assert_close(bonus, munchausen_bonus(q_t, actions, tau, alpha, l0))
    torch.testing.assert_close(soft, soft_bootstrap(q_next, q_next, tau))
    huber = torch.where(td.abs() <= 1, 0.5 * td**2, td.abs() - 0.5)
    torch.testing.assert_close(loss, (weights * huber).mean())
    # Munchausen's target differs from the double-DQN one it replaces
    plain = batch_loss(online, target, obs, next_obs, actions, returns, discounts, weights, LossSpec(), NO_AMP)[1]
    assert not torch.allclose(plain, priorities)


def test_iqn_loss_on_terminal_items_is_the_quantile_loss_against_the_return():
    """With discount 0 every target sample is R, whatever fractions were drawn for s', so the
    item's loss is the quantile Huber loss of the predicted quantiles at their fractions
    against R alone; the predicted fractions are the first draw of torch's generator."""
    online, target = nets(HeadSpec(kind="iqn", embedding_dim=8, acting_samples=4))
    obs, next_obs, actions, returns, _, weights = tensors()
    zeros = torch.zeros(16)
    spec = LossSpec(kind="iqn", tau_samples=5, target_samples=7)
    torch.manual_seed(9)
    _, priorities, _ = batch_loss(online, target, obs, next_obs, actions, returns, zeros, weights, spec, NO_AMP)
    torch.manual_seed(9)
    taus = torch.rand(16, 5)
    with torch.no_grad():
        taken = online.outputs(obs, taus)[torch.arange(16), actions]
    by_hand = quantile_huber_loss(taken, taus, returns[:, None].expand(16, 7), 1.0)
    torch.testing.assert_close(priorities, by_hand)


def test_loss_specs_refuse_what_they_cannot_do():
    for kind in ("c51", "qr"):
        with pytest.raises(ValueError, match="Munchausen"):
            LossSpec(kind=kind, munchausen=MUNCHAUSEN)
    with pytest.raises(ValueError, match="loss"):
        LossSpec(loss="l1")
    with pytest.raises(ValueError, match="c51"):
        DQNLearner(
            build_q_network((4,), 1, 2), 1e-3, 1e-8, 10, 100, loss_spec=LossSpec(kind="c51")
        )  # an expected-Q network
