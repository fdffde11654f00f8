import numpy as np
import pytest
import torch

from common.messages import SampleBatch
from common.networks import build_q_network
from learner.dqn import DQNLearner
from learner.losses import double_dqn_targets, td_loss


def test_double_dqn_target_hand_example():
    # online picks a'=1 for sample 0 and a'=0 for sample 1; the target net values them.
    q_next_online = torch.tensor([[1.0, 3.0], [2.0, 0.0]])
    q_next_target = torch.tensor([[10.0, 20.0], [30.0, 40.0]])
    y = double_dqn_targets(q_next_online, q_next_target, torch.tensor([1.0, 2.0]), torch.tensor([0.5, 0.0]))
    assert y.tolist() == [11.0, 2.0]  # 1 + 0.5*20 ; terminal: 2 + 0*30


def test_huber_td_loss_hand_example():
    q = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    loss, td = td_loss(q, torch.tensor([1, 0]), torch.tensor([2.5, 6.0]), torch.tensor([1.0, 0.5]))
    assert td.tolist() == [0.5, 3.0]
    # Huber: 0.5*0.5^2 = 0.125 ; 3 - 0.5 = 2.5 ; weighted mean (0.125*1 + 2.5*0.5) / 2
    assert loss.item() == pytest.approx(0.6875)


def random_batch(rng, b=8, d=4):
    return SampleBatch(
        ids=np.arange(b),
        obs=rng.normal(size=(b, 1, d)).astype(np.float32),
        actions=rng.integers(0, 2, b),
        returns=rng.normal(size=b).astype(np.float32),
        discounts=np.full(b, 0.9, np.float32),
        next_obs=rng.normal(size=(b, 1, d)).astype(np.float32),
        weights=np.ones(b, np.float32),
    )


def nets_equal(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_target_syncs_exactly_every_period():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    learner = DQNLearner(build_q_network((4,), 1, 2), lr=1e-2, adam_eps=1e-8, grad_clip=10, target_update_period=3)
    assert nets_equal(learner.online, learner.target)
    seen = []
    for _ in range(7):
        learner.update(random_batch(rng))
        seen.append(nets_equal(learner.online, learner.target))
    assert seen == [False, False, True, False, False, True, False]
    assert learner.learner_steps == 7


def test_update_returns_priorities_and_reduces_loss_on_a_fixed_batch():
    torch.manual_seed(1)
    rng = np.random.default_rng(1)
    learner = DQNLearner(build_q_network((4,), 1, 2), lr=1e-2, adam_eps=1e-8, grad_clip=10, target_update_period=10**9)
    batch = random_batch(rng, b=32)
    first = learner.update(batch)
    assert first["priorities"].shape == (32,) and np.all(first["priorities"] >= 0)
    for _ in range(200):
        last = learner.update(batch)
    assert last["loss"] < first["loss"] * 0.2


def test_atari_network_takes_uint8_stacks():
    net = build_q_network((84, 84), 4, 6)
    q = net(torch.zeros(2, 4, 84, 84, dtype=torch.uint8))
    assert q.shape == (2, 6) and q.dtype == torch.float32
    with pytest.raises(ValueError):
        build_q_network((3, 84, 84), 4, 6)
