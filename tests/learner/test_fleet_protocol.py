"""The real fleet and the fake one both give the trainer what it needs of a fleet
(``learner.fleet_protocol.TrainerFleet``), with compatible signatures; and the trainer asks
for nothing else, so the fake that tests the loop cannot drift from the real fleet."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from common.config import Config
from common.envs import describe_env
from learner.fleet import Fleet
from learner.fleet_protocol import TrainerFleet
from tests.support.fake_fleet import FakeFleet

ROOT = Path(__file__).resolve().parents[2]
METHODS = sorted(
    name for name, value in vars(TrainerFleet).items() if inspect.isfunction(value) and not name.startswith("_")
)
PROPERTIES = sorted(name for name, value in vars(TrainerFleet).items() if isinstance(value, property))
ATTRIBUTES = sorted(TrainerFleet.__annotations__)


@pytest.fixture(params=["Fleet", "FakeFleet"])
def fleet(request, tmp_path):
    spec = describe_env("CartPole-v1")
    return Fleet(Config(), spec, tmp_path) if request.param == "Fleet" else FakeFleet(Config(), spec)


def test_the_protocol_names_what_the_trainer_uses():
    assert {"next_batch", "update_priorities", "poll", "publish", "start", "stop"} <= set(METHODS)
    assert {"started", "feed_stalled_s"} <= set(PROPERTIES) and "last_snapshot" in ATTRIBUTES
    used = set(re.findall(r"self\.fleet\.(\w+)", (ROOT / "learner" / "trainer.py").read_text()))
    assert used <= set(METHODS) | set(PROPERTIES) | set(ATTRIBUTES), used - set(METHODS + PROPERTIES + ATTRIBUTES)


def test_each_fleet_has_every_member(fleet):
    for name in PROPERTIES + ATTRIBUTES:
        assert hasattr(fleet, name), f"{type(fleet).__name__} lacks {name}"
    assert fleet.started is False and fleet.feed_stalled_s == 0.0
    assert isinstance(fleet, TrainerFleet)


@pytest.mark.parametrize("name", METHODS)
def test_each_method_takes_the_protocols_arguments(fleet, name):
    want = inspect.signature(getattr(TrainerFleet, name))
    got = inspect.signature(getattr(type(fleet), name))
    want_params = list(want.parameters.values())[1:]  # without self
    got_params = list(got.parameters.values())[1:]
    assert [p.name for p in got_params[: len(want_params)]] == [p.name for p in want_params], (name, got)
    for w, g in zip(want_params, got_params):
        assert g.kind == w.kind, (name, g)
        if w.default is not inspect.Parameter.empty:
            assert g.default == w.default, (name, g)
    extra = got_params[len(want_params) :]
    assert all(p.default is not inspect.Parameter.empty for p in extra), (name, got)
