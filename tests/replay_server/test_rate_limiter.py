import math

import pytest

from replay_server.rate_limiter import RateLimiter


def test_off_means_free_running_after_min_size():
    rl = RateLimiter(None, min_size=10, tolerance=0)
    assert rl.insert_allowance() == math.inf
    assert not rl.can_sample(4, sampleable=9)
    assert rl.can_sample(4, sampleable=10)
    assert not rl.can_sample(16, sampleable=12)  # never more than what is stored


def test_inserts_fill_to_min_size_then_wait_for_samples():
    rl = RateLimiter(4.0, min_size=100, tolerance=40)
    assert rl.insert_allowance() == 110  # min_size plus tolerance / spi
    rl.on_insert(110)
    assert rl.insert_allowance() == 0
    assert rl.can_sample(32, sampleable=110)
    rl.on_sample(32)
    assert rl.insert_allowance() == 8  # 32 samples pay for 8 inserts at 4 per insert


def test_sampler_waits_when_ahead():
    rl = RateLimiter(2.0, min_size=10, tolerance=8)
    rl.on_insert(10)
    n = 0
    while rl.can_sample(1, sampleable=10):
        rl.on_sample(1)
        n += 1
    assert n == 8  # the tolerance, then the learner must wait for inserts
    rl.on_insert(1)
    assert rl.can_sample(2, sampleable=11) and not rl.can_sample(3, sampleable=11)


def test_long_run_ratio_converges_with_greedy_sides():
    """Both sides as fast as the limiter lets them: the ratio lands on spi."""
    rl = RateLimiter(8.0, min_size=500, tolerance=2_000)
    for _ in range(3_000):
        k = min(int(rl.insert_allowance()), 64)
        rl.on_insert(k)
        while rl.can_sample(64, sampleable=rl.inserts):
            rl.on_sample(64)
    ratio = rl.samples / (rl.inserts - 500)
    assert abs(ratio - 8.0) < 0.05
    assert abs(rl.diff - 8.0 * 500) <= 2_000


def test_tolerance_below_spi_is_refused():
    with pytest.raises(ValueError, match="tolerance"):
        RateLimiter(8.0, min_size=10, tolerance=4)
