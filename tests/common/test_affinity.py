"""--pin-cpus: the learner's cores and the workers', and the pinning itself (Linux)."""

import os
import threading

import pytest

from common import affinity
from common.affinity import format_cpus, split_cpus

linux = pytest.mark.skipif(not affinity.can_pin(), reason="no sched_setaffinity here")


def test_the_learner_takes_one_core_per_thread_the_workers_the_rest():
    assert split_cpus([0, 1], 1) == ([0], [1])
    assert split_cpus(range(16), 2) == ([0, 1], list(range(2, 16)))
    assert split_cpus([3, 1, 2], 1) == ([1], [2, 3])  # an affinity mask that is not 0..N-1
    assert split_cpus([0, 1], 2) is None  # no core left for the workers: nothing pinned
    assert split_cpus([0], 1) is None
    assert split_cpus([0, 1], 0) is None


def test_cpu_lists_print_as_ranges():
    assert format_cpus([0]) == "0"
    assert format_cpus([1, 2, 3, 7]) == "1-3,7"
    assert format_cpus([5, 4, 9, 10]) == "4-5,9-10"


@linux
def test_a_thread_and_a_worker_process_are_pinned(monkeypatch):
    cpus = affinity.available_cpus()
    if len(cpus) < 2:
        pytest.skip("one core: nothing to split")
    tid = threading.get_native_id()
    try:
        affinity.pin_thread([cpus[0]])
        assert os.sched_getaffinity(tid) == {cpus[0]}
        affinity.pin_thread(cpus)
        # A worker: ENV names its cores; the driver that set it is never pinned as a worker.
        monkeypatch.setenv(affinity.ENV, f"{cpus[-1]},999")  # a core this process cannot use is ignored
        monkeypatch.setenv(affinity.DRIVER_ENV, str(os.getpid()))
        assert affinity.pin_worker_from_env() is None
        monkeypatch.setenv(affinity.DRIVER_ENV, "1")
        assert affinity.pin_worker_from_env() == [cpus[-1]]
        assert os.sched_getaffinity(tid) == {cpus[-1]}
        monkeypatch.setenv(affinity.ENV, "not,cores")
        assert affinity.pin_worker_from_env() is None
    finally:
        affinity.pin_process(cpus)
    assert os.sched_getaffinity(0) == set(cpus)


def test_the_plan_needs_on_a_local_cpu_learner_and_a_spare_core():
    from common.config import Config, RunConfig, resolve
    from learner.trainer import cpu_plan

    def cfg(**run):
        return resolve(Config.from_dict({"env": {"env_id": "CartPole-v1"}, "run": run}), atari=False, cuda=False)

    assert cpu_plan(cfg()) is None  # off by default
    assert cpu_plan(cfg(pin_cpus="on", address="auto")) is None  # a cluster: never
    plan = cpu_plan(cfg(pin_cpus="on"))
    if affinity.can_pin() and len(affinity.available_cpus()) > 1:
        learner, workers = plan
        assert learner and workers and not set(learner) & set(workers)
    assert RunConfig().pin_cpus == "off"
