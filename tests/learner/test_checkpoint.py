import pytest

from common.networks import build_q_network, network_signature
from learner.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from learner.dqn import DQNLearner


def make_checkpoint(path):
    learner = DQNLearner(build_q_network((4,), 1, 2), 1e-3, 1e-8, 10, 5)
    sig = network_signature((4,), 1, 2)
    save_checkpoint(path, learner.state_dict(), {"env_frames": 10}, sig, {"env": {}})
    return sig


def test_round_trip(tmp_path):
    sig = make_checkpoint(tmp_path / "c.pt")
    payload = load_checkpoint(tmp_path / "c.pt", sig)
    assert payload["counters"]["env_frames"] == 10
    assert not list(tmp_path.glob("*.tmp"))  # no temporary file left behind


def test_truncated_file_is_refused_with_its_name(tmp_path):
    make_checkpoint(tmp_path / "c.pt")
    data = (tmp_path / "c.pt").read_bytes()
    (tmp_path / "c.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="c.pt"):
        load_checkpoint(tmp_path / "c.pt")


def test_garbage_missing_and_mismatched(tmp_path):
    (tmp_path / "g.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="unreadable"):
        load_checkpoint(tmp_path / "g.pt")
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")
    make_checkpoint(tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match="trained on"):
        load_checkpoint(tmp_path / "c.pt", network_signature((84, 84), 4, 6))


def test_checkpoint_with_code_is_not_executed(tmp_path):
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (tmp_path / "e.pt").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "e.pt")


def test_head_is_part_of_the_signature_and_old_checkpoints_were_dueling(tmp_path):
    learner = DQNLearner(build_q_network((4,), 1, 2), 1e-3, 1e-8, 10, 5)
    old = {k: v for k, v in network_signature((4,), 1, 2).items() if k != "dueling"}  # before the setting
    save_checkpoint(tmp_path / "old.pt", learner.state_dict(), {}, old, {"env": {}})
    assert load_checkpoint(tmp_path / "old.pt", network_signature((4,), 1, 2, dueling=True))
    with pytest.raises(CheckpointError, match="dueling True there, False here"):
        load_checkpoint(tmp_path / "old.pt", network_signature((4,), 1, 2, dueling=False))
    plain = DQNLearner(build_q_network((4,), 1, 2, dueling=False), 1e-3, 1e-8, 10, 5)
    save_checkpoint(
        tmp_path / "plain.pt", plain.state_dict(), {}, network_signature((4,), 1, 2, dueling=False), {"env": {}}
    )
    with pytest.raises(CheckpointError, match="trained on"):
        load_checkpoint(tmp_path / "plain.pt", network_signature((4,), 1, 2))
