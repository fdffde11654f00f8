"""The Ray shell's plain class, called directly (no Ray cluster)."""

import logging

import numpy as np

from common.messages import SampleBatch, encode_step_batch
from replay_server.remote import ReplayServer
from tests.support.fakes import step_batch


def encoded_batch(stream, t, first=True, seq=0):
    return encode_step_batch(step_batch(stream, [(1, 1.0, False, False, first and i == 0) for i in range(t)], seq=seq))


def test_shell_adds_samples_and_rejects_bad_batches(caplog):
    server = ReplayServer(capacity=100, stack_size=4, n_step=3, gamma=0.9, seed=0)
    assert server.add(encoded_batch(0, 5))  # items 0, 1 complete
    assert server.sample(4) is None  # fewer than 4 sampleable
    with caplog.at_level(logging.WARNING, logger="replay_server.remote"):
        assert server.add(b"not msgpack") is False
        assert server.add(encoded_batch(1, 5, first=False)) is False  # unseen stream without first
        assert server.add("not bytes") is False
    assert len(caplog.records) == 3 and all("rejected step batch" in r.getMessage() for r in caplog.records)
    assert "never seen" in caplog.records[1].getMessage()
    assert server.add(encoded_batch(0, 5, first=False, seq=5))
    sb = server.sample(4, beta=0.5)
    assert isinstance(sb, SampleBatch) and sb.obs.shape == (4, 4, 2, 2)
    assert server.update_priorities(sb.ids, np.full(4, 2.0)) == 4
    stats = server.stats()
    assert stats["rejected"] == 3 and stats["batches_added"] == 2
    assert stats["records_added"] == 10 and stats["items_sampleable"] == 7 and stats["streams"] == 1


def test_stats_gives_freed_heap_pages_back_once_a_minute():
    from common.memory import Trimmer

    now = [0.0]
    server = ReplayServer(capacity=100, stack_size=4, n_step=3, gamma=0.9, seed=0)
    assert server.trimmer.period_s == 60.0
    server.trimmer = Trimmer(period_s=60.0, clock=lambda: now[0])
    assert server.stats()["heap_trims"] == 0
    now[0] = 61.0
    assert server.stats()["heap_trims"] == 1
    now[0] = 100.0
    assert server.stats()["heap_trims"] == 1


def test_a_snapshot_gives_its_freed_pages_back_at_once(tmp_path):
    server = ReplayServer(capacity=100, stack_size=4, n_step=3, gamma=0.9, seed=0)
    server.add(encoded_batch(0, 5))
    trims = server.stats()["heap_trims"]
    server.save_snapshot(str(tmp_path / "replay.snapshot"))
    assert server.stats()["heap_trims"] == trims + 1
