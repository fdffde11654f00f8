"""'auto' settings are resolved again when a run resumes on another machine; typed ones stay."""

import dataclasses
import json

from common.config import (
    RECORD_KEY,
    Config,
    LearnerConfig,
    Machine,
    auto_fields,
    core_plan,
    dumps,
    make_record,
    re_resolve,
    record_of,
    resolve,
)
from common.config.record import carry_auto

FRAME = 84 * 84
LAPTOP = Machine(cuda=False, cores=2, frame_bytes=FRAME)
H100 = Machine(cuda=True, cores=16, device_free_bytes=78 * 2**30, frame_bytes=FRAME)


def cpu_run(requested: Config = Config()) -> dict:
    """config.json of a run started on the laptop."""
    cfg = resolve(requested, atari=True, cuda=False, **LAPTOP.facts())
    record = make_record(auto_fields(requested), LAPTOP, core_plan(cfg, False, 2))
    return json.loads(dumps(cfg, record))


def test_config_json_records_the_auto_fields_the_machine_and_the_plan():
    saved = cpu_run()
    record = saved[RECORD_KEY]
    assert "batch_size" in record["auto"]["learner"] and "envs_per_actor" in record["auto"]["env"]
    assert "num_actors" not in record["auto"].get("actors", [])  # a default value, not auto
    assert record["machine"] == {"cuda": False, "cores": 2, "device_free_bytes": None, "frame_bytes": FRAME}
    assert record["core_plan"]["cores"] == 2
    assert Config.from_dict(saved) == resolve(Config(), atari=True, cuda=False, **LAPTOP.facts())  # still loads


def test_a_cpu_run_resumed_on_a_gpu_gets_the_gpu_settings():
    saved = cpu_run()
    cfg, changes = re_resolve(Config.from_dict(saved), record_of(saved), {}, atari=True, now=H100)
    lc = cfg.learner
    assert (lc.batch_size, lc.feed, lc.compile, lc.tf32, lc.channels_last) == (512, "mirror", True, True, True)
    assert lc.stats_period == lc.publish_period and cfg.replay.replay_ratio == 0.0  # Ape-X's free-running actors
    assert "batch_size 64 -> 512" in changes and "feed stacked -> mirror" in changes and "compile off -> on" in changes
    assert cfg.replay.replay_shards == 1  # its snapshots hold the replay's layout
    assert cfg.learner.lr == Config.from_dict(saved).learner.lr  # not the machine's to decide: as saved


def test_typed_flags_and_settings_the_machine_does_not_decide_stay():
    saved = cpu_run()
    saved["learner"]["lr"] = 3e-4  # e.g. a preset's value changed since: the run keeps its own
    typed = {"learner": {"batch_size": 64}}
    saved["learner"]["batch_size"] = 64
    cfg, changes = re_resolve(Config.from_dict(saved), record_of(saved), typed, atari=True, now=H100)
    assert cfg.learner.batch_size == 64 and cfg.learner.lr == 3e-4
    assert not any(c.startswith("batch_size") for c in changes) and cfg.learner.compile is True


def test_typed_at_the_start_is_never_resolved_again():
    saved = cpu_run(Config(learner=LearnerConfig(batch_size=32, compile=False)))
    cfg, changes = re_resolve(Config.from_dict(saved), record_of(saved), {}, atari=True, now=H100)
    assert cfg.learner.batch_size == 32 and cfg.learner.compile is False and cfg.learner.feed == "mirror"


def test_the_same_machine_changes_nothing():
    saved = cpu_run()
    cfg, changes = re_resolve(Config.from_dict(saved), record_of(saved), {}, atari=True, now=LAPTOP)
    assert changes == [] and cfg == Config.from_dict(saved)


def test_an_earlier_config_json_resumes_exactly_as_saved():
    saved = cpu_run()
    del saved[RECORD_KEY]
    assert record_of(saved) is None
    cfg, changes = re_resolve(Config.from_dict(saved), record_of(saved), {}, atari=True, now=H100)
    assert changes == [] and cfg == Config.from_dict(saved)
    broken = dict(cpu_run()[RECORD_KEY], machine={"gpus": 8})  # edited by hand
    assert re_resolve(Config.from_dict(saved), broken, {}, atari=True, now=H100) == (Config.from_dict(saved), [])


def test_the_resumed_runs_auto_fields_follow_what_is_typed_now():
    record = {"auto": {"learner": ["batch_size", "compile"], "replay": ["n_step"]}}
    typed = {"learner": {"batch_size": 64}, "replay": {"prioritized": None}, "run": {"time_limit": 5.0}}
    assert carry_auto(record, typed) == {"learner": ["compile"], "replay": ["n_step", "prioritized"]}
    assert carry_auto(None, {}) == {}


def test_the_entry_point_says_what_changed_and_records_the_new_machine(monkeypatch, tmp_path):
    from common.envs import describe_env
    from learner import main as learner_main

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps(cpu_run()))
    cfg, resume_dir, record, typed = learner_main.parse_resume(["--resume", str(run_dir)])
    monkeypatch.setattr(learner_main, "is_cuda", lambda device: True)
    monkeypatch.setattr(learner_main, "device_facts", lambda device, spec, cuda: H100.facts())
    spec = describe_env("ALE/Breakout-v5")
    cfg, new_record, lines = learner_main.resolve_here(cfg, spec, resume_dir, record, typed)
    assert cfg.learner.batch_size == 512 and new_record["machine"]["cuda"] is True
    assert new_record["auto"] == record["auto"]
    said = [line for line in lines if line.startswith("resumed on a GPU with 16 cores")]
    assert len(said) == 1 and "batch_size 64 -> 512" in said[0]
    assert dataclasses.replace(cfg, run=Config().run).run.preset == "apex"
