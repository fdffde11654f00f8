"""Each part of the algorithm as a setting: target, loss, optimizer and head, on hand examples."""

import logging

import numpy as np
import pytest
import torch
from torch import nn

from common.config import Config, RunConfig, resolve
from common.env_spec import EnvSpec
from common.messages import SampleBatch
from common.networks import NatureCNN, build_q_network, network_signature, q_network_for, signature_for
from learner.dqn import DQNLearner, build_learner
from learner.losses import double_dqn_targets, dqn_targets, td_loss
from learner.optimizers import CentredRMSProp


def test_plain_max_target_hand_example():
    # the same numbers as the double-DQN test: the target net's own max, not the online argmax
    q_next_target = torch.tensor([[10.0, 20.0], [30.0, 40.0]])
    y = dqn_targets(q_next_target, torch.tensor([1.0, 2.0]), torch.tensor([0.5, 0.0]))
    assert y.tolist() == [11.0, 2.0]  # 1 + 0.5*max(10, 20) ; terminal: 2
    y = dqn_targets(torch.tensor([[5.0, -1.0]]), torch.tensor([0.0]), torch.tensor([0.5]))
    double = double_dqn_targets(
        torch.tensor([[0.0, 1.0]]), torch.tensor([[5.0, -1.0]]), torch.tensor([0.0]), torch.tensor([0.5])
    )
    assert y.tolist() == [2.5] and double.tolist() == [-0.5]  # max picks 5; online's argmax picks -1


def test_mse_loss_hand_example():
    q = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    loss, td = td_loss(q, torch.tensor([1, 0]), torch.tensor([2.5, 6.0]), torch.tensor([1.0, 0.5]), loss="mse")
    assert td.tolist() == [0.5, 3.0]
    # td^2/2: 0.125 and 4.5 ; weighted mean (0.125*1 + 4.5*0.5) / 2
    assert loss.item() == pytest.approx(1.1875)
    with pytest.raises(ValueError, match="loss"):
        td_loss(q, torch.tensor([1, 0]), torch.tensor([2.5, 6.0]), torch.tensor([1.0, 0.5]), loss="l1")


def test_huber_and_mse_share_the_gradient_inside_the_clip():
    for target, huber_grad, mse_grad in ((1.5, -0.5, -0.5), (5.0, -1.0, -4.0)):
        grads = []
        for kind in ("huber", "mse"):
            q = torch.tensor([[1.0]], requires_grad=True)
            td_loss(q, torch.tensor([0]), torch.tensor([target]), torch.tensor([1.0]), loss=kind)[0].backward()
            grads.append(q.grad.item())
        assert grads == [huber_grad, mse_grad]


def test_centred_rmsprop_matches_a_hand_computation():
    # one weight w, loss = w * x so the gradient is x: two steps by hand
    w = nn.Parameter(torch.tensor([1.0]))
    opt = CentredRMSProp([w], lr=0.1, decay=0.9, eps=0.01)
    expected = 1.0
    m = v = 0.0
    for g in (2.0, -1.0):
        opt.zero_grad()
        (w * g).sum().backward()
        opt.step()
        m = 0.9 * m + 0.1 * g
        v = 0.9 * v + 0.1 * g * g
        expected -= 0.1 * g / np.sqrt(v - m * m + 0.01)
        assert w.item() == pytest.approx(expected, rel=1e-6)
    # step 1: m 0.2, v 0.4 -> 1 - 0.2 / sqrt(0.37); step 2: m 0.08, v 0.46
    assert expected == pytest.approx(1 - 0.2 / np.sqrt(0.37) + 0.1 / np.sqrt(0.46 - 0.0064 + 0.01), rel=1e-9)


def test_torch_centred_rmsprop_adds_eps_outside_the_root():
    # why CentredRMSProp exists: torch's eps cannot express Nature's "min squared gradient"
    w = nn.Parameter(torch.tensor([1.0]))
    opt = torch.optim.RMSprop([w], lr=0.1, alpha=0.9, eps=0.01, centered=True)
    (w * 2.0).sum().backward()
    opt.step()
    assert w.item() == pytest.approx(1 - 0.2 / (np.sqrt(0.4 - 0.04) + 0.01), rel=1e-6)
    assert w.item() != pytest.approx(1 - 0.2 / np.sqrt(0.4 - 0.04 + 0.01), rel=1e-3)


def test_plain_head_is_natures():
    net = build_q_network((84, 84), 4, 6, dueling=False)
    assert isinstance(net, NatureCNN)
    linears = [m for m in net.head if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(3136, 512), (512, 6)]
    assert net(torch.zeros(2, 4, 84, 84, dtype=torch.uint8)).shape == (2, 6)
    assert build_q_network((4,), 1, 2, dueling=False)(torch.zeros(3, 1, 4)).shape == (3, 2)
    dueling = build_q_network((84, 84), 4, 6)
    assert {k for k in dueling.state_dict() if k.startswith("head.")} >= {
        "head.value.0.weight",
        "head.advantage.2.bias",
    }
    assert network_signature((84, 84), 4, 6, dueling=False) != network_signature((84, 84), 4, 6)


SPEC = EnvSpec(
    env_id="CartPole-v1",
    frame_shape=(4,),
    frame_dtype="float32",
    stack_size=1,
    num_actions=2,
    frames_per_step=1,
    codec="raw",
    clip_rewards=False,
    atari=False,
)


def batch(rng, b=8):
    return SampleBatch(
        ids=np.arange(b),
        obs=rng.normal(size=(b, 1, 4)).astype(np.float32),
        actions=rng.integers(0, 2, b),
        returns=rng.normal(size=b).astype(np.float32),
        discounts=np.full(b, 0.9, np.float32),
        next_obs=rng.normal(size=(b, 1, 4)).astype(np.float32),
        weights=np.ones(b, np.float32),
    )


@pytest.mark.parametrize("double_q", [True, False])
def test_learner_uses_the_chosen_target(double_q):
    torch.manual_seed(0)
    learner = DQNLearner(build_q_network((4,), 1, 2), 1e-3, 1e-8, 10, 100, double_q=double_q)
    with torch.no_grad():  # make the online and target nets disagree
        for p in learner.target.parameters():
            p.add_(torch.randn_like(p))
    b = batch(np.random.default_rng(0))
    obs, nxt = torch.from_numpy(b.obs), torch.from_numpy(b.next_obs)
    with torch.no_grad():
        q_t, q_o = learner.target(nxt), learner.online(nxt)
        best = q_o.argmax(1) if double_q else q_t.argmax(1)
        y = torch.from_numpy(b.returns) + torch.from_numpy(b.discounts) * q_t.gather(1, best[:, None]).squeeze(1)
        td = y - learner.online(obs).gather(1, torch.from_numpy(b.actions)[:, None]).squeeze(1)
    np.testing.assert_allclose(learner.update(b)["priorities"], td.abs().numpy(), rtol=1e-5)


def test_nature_learner_from_the_config_and_its_checkpoint_state(caplog):
    cfg = resolve(Config(run=RunConfig(preset="nature")), atari=False, cuda=False)
    learner = build_learner(cfg, SPEC, "cpu")
    assert isinstance(learner.optimizer, CentredRMSProp) and learner.optimizer.defaults["eps"] == 0.01 / 32**2
    assert learner.double_q is False and learner.loss == "huber" and learner.grad_clip == 0.0
    assert not any("value" in k for k in learner.online.state_dict())  # the plain head
    assert signature_for(SPEC, cfg.learner)["dueling"] is False
    assert type(q_network_for(SPEC, cfg.learner)) is type(learner.online)
    rng = np.random.default_rng(1)
    for _ in range(3):
        learner.update(batch(rng))
    state = learner.state_dict()
    again = build_learner(cfg, SPEC, "cpu")
    again.load_state_dict(state)
    assert again.optimizer.state_dict()["state"][0]["square_avg"].abs().sum() > 0
    b = batch(rng)
    assert np.allclose(learner.update(b)["priorities"], again.update(b)["priorities"])
    # a checkpoint of an Adam run resumed with RMSProp: the networks load, RMSProp starts fresh
    adam = DQNLearner(build_q_network((4,), 1, 2, dueling=False), 1e-3, 1e-8, 10, 100)
    adam.update(batch(rng))
    with caplog.at_level(logging.WARNING):
        again.load_state_dict(adam.state_dict())
    assert "starting rmsprop's state fresh" in caplog.text and again.optimizer.state_dict()["state"] == {}
    old = adam.state_dict()
    del old["optimizer_name"]  # a checkpoint from before the setting holds Adam's state
    adam.load_state_dict(old)
    assert adam.optimizer.state_dict()["state"]


def test_natures_summed_gradient_is_our_mean_with_eps_over_batch_squared():
    # Nature's Lua code steps on the batch's summed gradient with eps 0.01; we average, so
    # the same steps need eps 0.01 / B^2 (RMSProp is scale-free but for eps).
    torch.manual_seed(3)
    x, y = torch.randn(32, 3), torch.randn(32)
    nets = [nn.Linear(3, 1) for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    summed = CentredRMSProp(nets[0].parameters(), lr=0.01, decay=0.95, eps=0.01)
    mean = CentredRMSProp(nets[1].parameters(), lr=0.01, decay=0.95, eps=0.01 / 32**2)
    for _ in range(5):
        for net, opt, reduce in ((nets[0], summed, torch.sum), (nets[1], mean, torch.mean)):
            opt.zero_grad()
            reduce((net(x).squeeze(1) - y) ** 2).backward()
            opt.step()
    for a, b in zip(nets[0].parameters(), nets[1].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
