import numpy as np
import pytest

from common.schedules import apex_epsilons, beta_schedule, linear_epsilon


def test_apex_epsilons_endpoints_and_formula():
    eps = apex_epsilons(8)
    assert eps[0] == pytest.approx(0.4)
    assert eps[-1] == pytest.approx(0.4**8)
    i = 3
    assert eps[i] == pytest.approx(0.4 ** (1 + 7 * i / 7))
    assert np.all(np.diff(eps) < 0)


def test_apex_epsilons_single_stream_and_bad_count():
    assert apex_epsilons(1).tolist() == [0.4]
    with pytest.raises(ValueError):
        apex_epsilons(0)


@pytest.mark.parametrize("step,expected", [(0, 1.0), (50, 0.505), (100, 0.01), (1000, 0.01), (-5, 1.0)])
def test_linear_epsilon(step, expected):
    assert linear_epsilon(step, 100, 1.0, 0.01) == pytest.approx(expected)


def test_beta_anneals_to_one():
    assert beta_schedule(0.0, 0.4) == pytest.approx(0.4)
    assert beta_schedule(0.5, 0.4) == pytest.approx(0.7)
    assert beta_schedule(2.0, 0.4) == pytest.approx(1.0)
