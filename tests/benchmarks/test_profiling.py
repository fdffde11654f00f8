"""benchmarks.profiling: time is charged by module, to the innermost listed one, so that
renaming a function cannot move it between categories."""

from __future__ import annotations

import json

from benchmarks.profiling import (
    ACTOR_CATEGORIES,
    ACTOR_KEEP,
    DRIVER_CATEGORIES,
    DRIVER_KEEP,
    ThreadSampler,
    frame_path,
    in_module,
    stack_shares,
)


def test_modules_match_whole_path_components():
    assert in_module("common/envs.py", "common/envs.py")
    assert in_module("/work/main/common/envs.py", "common/envs.py")
    assert in_module("torch/nn/modules/conv.py", "torch/")
    assert in_module("/venv/lib/python3.11/site-packages/ray/_private/worker.py", "ray/")
    assert not in_module("numpy/xray/thing.py", "ray/")
    assert not in_module("mycommon/envs.py", "common/envs.py")
    assert in_module("threading.py", "threading.py") and not in_module("mythreading.py", "threading.py")
    assert frame_path("ActorCore._q_values (actors/actor.py)") == "actors/actor.py"
    assert frame_path("<module> (<string>)") == "<string>" and frame_path("no file") == ""


def test_samples_go_to_the_innermost_listed_module():
    run = "run (actors/remote.py)"
    stacks = [
        (
            [run, "step (actors/actor.py)", "step (common/envs/ale.py)", "resize (numpy/core/x.py)"],
            5,
        ),  # numpy: its caller's
        (
            [
                run,
                "step (actors/actor.py)",
                "_q_values (actors/actor.py)",
                "_call_impl (torch/nn/modules/module.py)",
                "forward (common/networks.py)",
                "_conv_forward (torch/nn/modules/conv.py)",
            ],
            3,
        ),
        ([run, "set_weights (actors/actor.py)", "load_state_dict (torch/nn/modules/module.py)"], 1),  # a weight swap
        ([run, "_send (actors/remote.py)", "remote (ray/actor.py)"], 2),
        (["main_loop (ray/_private/worker.py)"], 100),  # Ray's idle thread: not the actor's
    ]
    shares, n = stack_shares(stacks, ACTOR_KEEP, ACTOR_CATEGORIES)
    assert n == 11
    by_module = {label.rsplit("(", 1)[-1].rstrip(")"): s for label, s in shares.items()}
    forward = next(share for label, share in shares.items() if label.startswith("forward pass"))
    assert by_module["common/envs/"] == 5 / 11 and forward == 3 / 11
    assert by_module["ray/"] == 2 / 11 and by_module["actors/"] == 1 / 11
    # The same stacks with every function renamed: the same shares.
    renamed = [([f"f{k} ({frame_path(f)})" for k, f in enumerate(frames)], c) for frames, c in stacks]
    assert stack_shares(renamed, ACTOR_KEEP, ACTOR_CATEGORIES) == (shares, n)


def test_driver_keeps_only_the_main_thread_and_charges_torch_to_its_caller():
    main = "<module> (learner/main.py)"
    stacks = [
        ([main, "update (learner/dqn.py)", "backward (torch/_tensor.py)"], 6),
        ([main, "save (learner/checkpoint.py)", "save (torch/serialization.py)"], 1),
        ([main, "step (learner/trainer.py)", "get (ray/_private/worker.py)"], 2),
        ([main, "step (learner/trainer.py)"], 1),
        (["_bootstrap (threading.py)", "run (tensorboardX/event_file_writer.py)"], 50),
    ]
    shares, n = stack_shares(stacks, DRIVER_KEEP, DRIVER_CATEGORIES)
    assert n == 10
    assert [round(s * 10) for s in shares.values()] == [6, 1, 2, 1, 0]


def _work():
    json.dumps(list(range(200_000)))  # the json package's Python code, then C
    return sum(i * i for i in range(200_000))  # a builtin and a generator


def test_thread_sampler_sees_this_thread_and_charges_unlisted_code_to_its_caller():
    with ThreadSampler(interval=0.001) as sampler:
        for _ in range(10):
            _work()
    this = "tests/benchmarks/test_profiling.py"
    assert sum(n for _, n in sampler.stacks) > 20
    only_here, _ = stack_shares(sampler.stacks, this, [("here", (this,))])
    assert only_here["here"] > 0.95  # json, sum() and the generator are all charged to their caller here
    split, _ = stack_shares(sampler.stacks, this, [("json", ("json/",)), ("here", (this,))])
    assert split["json"] > 0.05 and split["here"] > 0.05
