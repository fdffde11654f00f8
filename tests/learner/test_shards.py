"""A replay shard's settings come from the config in one place (learner/shards.py)."""

from common.config import Config, ReplayConfig, resolve
from learner.shards import shard_capacity, shard_settings, snapshot_path
from replay_server.remote import ReplayServer


def config(**replay):
    return resolve(Config(replay=ReplayConfig(**replay)), atari=True, cuda=False)


def test_each_shard_holds_its_share_and_applies_the_ratio_to_it():
    cfg = config(replay_capacity=1001, replay_shards=4, learning_starts=101, replay_ratio=8.0)
    first, last = shard_settings(cfg, 4, 0), shard_settings(cfg, 4, 3)
    assert first["capacity"] == last["capacity"] == shard_capacity(cfg) == 251  # 4 x 251 >= 1001
    assert first["min_size"] == 26 and first["samples_per_insert"] == 8.0
    assert first["tolerance"] == cfg.replay.replay_ratio_tolerance / 4
    assert first["seed"] != last["seed"] and first["stack_size"] == 4
    whole = shard_settings(cfg, 4, shards=1)  # the fake fleet's one in-process replay
    assert whole["capacity"] == 1001 and whole["min_size"] == 101
    assert ReplayServer(**first).buffer.capacity == 251


def test_no_ratio_means_no_limiter_and_snapshots_are_named_per_shard(tmp_path):
    assert shard_settings(config(replay_ratio=0.0), 1)["samples_per_insert"] is None
    assert snapshot_path(tmp_path, 2) == tmp_path / "replay-2.snapshot"
