"""Checkpoints and the network's kind: the signature records head, atoms or quantiles, noisy
and torso; loading into another kind of network is refused in one line naming both; a
checkpoint written before these settings existed still loads as the expected-Q head."""

import numpy as np
import pytest
import torch

from common.heads import HeadSpec
from common.networks import build_q_network, network_signature
from learner.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from learner.dqn import DQNLearner
from learner.losses import LossSpec

CONFIG = {"env": {"env_id": "CartPole-v1"}}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def save(path, signature, learner_state=None):
    save_checkpoint(path, learner_state or {}, {"learner_steps": 0}, signature, CONFIG)
    return path


def refusal(tmp_path, saved: dict, here: dict) -> str:
    path = save(tmp_path / "checkpoint.pt", saved)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path, here)
    message = str(err.value)
    assert "\n" not in message and str(path) in message
    return message


def test_a_c51_checkpoint_is_refused_by_an_expected_network_naming_both(tmp_path):
    c51 = network_signature((4,), 1, 2, head=HeadSpec(kind="c51"))
    expected = network_signature((4,), 1, 2)
    message = refusal(tmp_path, c51, expected)
    assert "head 'c51' there, 'expected' here" in message
    assert "CartPole-v1" in message
    # and the other way round
    assert "head 'expected' there, 'c51' here" in refusal(tmp_path, expected, c51)


@pytest.mark.parametrize(
    "saved,here,needle",
    [
        (HeadSpec(kind="c51", num_atoms=51), HeadSpec(kind="c51", num_atoms=21), "num_atoms 51 there, 21 here"),
        (HeadSpec(kind="c51", v_max=10.0), HeadSpec(kind="c51", v_max=100.0), "v_max 10.0 there, 100.0 here"),
        (HeadSpec(kind="qr", num_quantiles=200), HeadSpec(kind="qr", num_quantiles=32), "num_quantiles 200 there"),
        (HeadSpec(kind="iqn"), HeadSpec(kind="qr"), "head 'iqn' there, 'qr' here"),
        (HeadSpec(noisy=True), HeadSpec(noisy=False), "noisy True there, False here"),
        (HeadSpec(dueling=False), HeadSpec(dueling=True), "dueling False there, True here"),
    ],
)
def test_other_kinds_of_head_are_refused(tmp_path, saved, here, needle):
    message = refusal(tmp_path, network_signature((4,), 1, 2, head=saved), network_signature((4,), 1, 2, head=here))
    assert needle in message


def test_torsos_are_part_of_the_signature(tmp_path):
    nature = network_signature((84, 84), 4, 6)
    impala = network_signature((84, 84), 4, 6, torso="impala", width=2, spectral_norm=True)
    assert (impala["torso"], impala["width"], impala["spectral_norm"]) == ("impala", 2, True)
    assert "torso 'nature' there, 'impala' here" in refusal(tmp_path, nature, impala)
    narrow = network_signature((84, 84), 4, 6, torso="impala", width=1, spectral_norm=True)
    assert "width 1 there, 2 here" in refusal(tmp_path, narrow, impala)
    assert network_signature((4, 10, 10), 1, 6)["torso"] == "minatar"
    assert network_signature((4,), 1, 2)["torso"] == "mlp"


@pytest.mark.parametrize(
    "old,shape",
    [
        ({"frame_shape": [4], "stack_size": 1, "num_actions": 2, "dueling": True}, (4,)),
        ({"frame_shape": [4], "stack_size": 1, "num_actions": 2}, (4,)),  # before the dueling key too
        ({"frame_shape": [84, 84], "stack_size": 4, "num_actions": 6, "dueling": True}, (84, 84)),
        ({"frame_shape": [4, 10, 10], "stack_size": 1, "num_actions": 6, "dueling": True}, (4, 10, 10)),
    ],
)
def test_old_signatures_load_as_the_expected_head(tmp_path, old, shape):
    here = network_signature(shape, old["stack_size"], old["num_actions"])
    payload = load_checkpoint(save(tmp_path / "checkpoint.pt", old), here)
    assert payload["signature"] == old  # as written; only the comparison fills the defaults
    # ... and only as the expected head, plain layers, the family's own torso
    for other in (
        network_signature(shape, old["stack_size"], old["num_actions"], head=HeadSpec(kind="c51")),
        network_signature(shape, old["stack_size"], old["num_actions"], head=HeadSpec(noisy=True)),
    ):
        with pytest.raises(CheckpointError):
            load_checkpoint(tmp_path / "checkpoint.pt", other)
    if shape == (84, 84):
        with pytest.raises(CheckpointError, match="torso 'nature' there, 'impala' here"):
            load_checkpoint(tmp_path / "checkpoint.pt", network_signature(shape, 4, 6, torso="impala"))


def test_a_noisy_c51_learner_round_trips_through_a_checkpoint(tmp_path):
    torch.manual_seed(0)
    head = HeadSpec(kind="c51", num_atoms=11, v_min=-5, v_max=5, noisy=True)

    def learner():
        return DQNLearner(build_q_network((4,), 1, 2, head=head), 1e-3, 1e-8, 10, 100, loss_spec=LossSpec(kind="c51"))

    a = learner()
    rng = np.random.default_rng(0)
    from common.messages import SampleBatch

    batch = SampleBatch(
        ids=np.arange(8),
        obs=rng.normal(size=(8, 1, 4)).astype(np.float32),
        actions=rng.integers(0, 2, 8),
        returns=rng.normal(size=8).astype(np.float32),
        discounts=np.full(8, 0.9, np.float32),
        next_obs=rng.normal(size=(8, 1, 4)).astype(np.float32),
        weights=np.ones(8, np.float32),
    )
    for _ in range(3):
        a.update(batch)
    sig = network_signature((4,), 1, 2, head=head)
    path = save(tmp_path / "checkpoint.pt", sig, a.state_dict())
    b = learner()
    b.load_state_dict(load_checkpoint(path, sig)["learner"])
    assert b.learner_steps == 3
    for x, y in zip(a.online.state_dict().values(), b.online.state_dict().values()):
        assert torch.equal(x, y)
    assert not any("eps_" in k for k in a.online.state_dict())  # the noise is never saved
