"""How a run's settings were resolved, recorded beside them in ``config.json``, and their
re-resolution when the run resumes on another machine.

``config.json`` holds resolved values (a run must be reproducible from it), so without more
a CPU run resumed on a GPU would keep its CPU batch, feed and fast paths. Under the key
:data:`RECORD_KEY` it also records which fields were auto when the run started, the
machine they were resolved for (CUDA or not, the cores, the device's free memory) and the
core plan. On ``--resume``, :func:`re_resolve` resolves those auto fields again, for the
saved machine and for this one: a field whose two values differ depends on the machine and
takes this machine's value; every other field keeps its saved value, and flags typed now
win. The replay's shards stay as saved: each shard's snapshot holds its layout. A
``config.json`` without the record (an earlier version's) resumes exactly as saved.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from common.config.fields import RECORD_KEY
from common.config.hardware import CorePlan
from common.config.schema import Config

#: The sections whose None or "auto" means "decide for me" (run's None means "not set").
AUTO_SECTIONS = ("env", "actors", "replay", "learner", "eval")
#: Kept as saved on resume whatever the machine: the replay's snapshots hold its layout.
KEPT_ON_RESUME = {"replay": ("replay_shards",)}


def _is_auto(value: Any) -> bool:
    return value is None or value == "auto"


def auto_fields(requested: Config) -> dict[str, list[str]]:
    """The fields left auto in a config before it is resolved, {section: [field, ...]}."""
    out = {}
    for section in AUTO_SECTIONS:
        names = [f.name for f in dataclasses.fields(getattr(requested, section))]
        auto = [n for n in names if _is_auto(getattr(getattr(requested, section), n))]
        if auto:
            out[section] = auto
    return out


@dataclasses.dataclass(frozen=True)
class Machine:
    """What resolution knows of a machine: the learner on CUDA or not, the cores Ray sees,
    the learner device's free memory (None on a CPU), one frame's bytes."""

    cuda: bool
    cores: int | None = None
    device_free_bytes: int | None = None
    frame_bytes: int | None = None

    def facts(self) -> dict:
        return {"frame_bytes": self.frame_bytes, "device_free_bytes": self.device_free_bytes, "cores": self.cores}

    def words(self) -> str:
        where = "a GPU" if self.cuda else "a CPU"
        return f"{where} with {self.cores} cores" if self.cores else where


def make_record(auto: dict[str, list[str]], machine: Machine, plan: CorePlan | None) -> dict:
    """The record written under RECORD_KEY."""
    return {
        "auto": {s: sorted(names) for s, names in auto.items()},
        "machine": dataclasses.asdict(machine),
        "core_plan": plan.to_dict() if plan is not None else None,
    }


def _reset(config: Config, fields: dict[str, list[str]]) -> Config:
    """``config`` with ``fields`` back to auto (None, or "auto" where that is the default)."""
    sections = {}
    for section, names in fields.items():
        sub = getattr(config, section)
        default = {f.name: f.default for f in dataclasses.fields(sub)}
        sections[section] = dataclasses.replace(sub, **{n: "auto" if default[n] == "auto" else None for n in names})
    return dataclasses.replace(config, **sections)


def re_resolve(
    saved: Config, record: dict | None, typed: dict[str, dict], atari: bool, now: Machine
) -> tuple[Config, list[str]]:
    """The saved run's config with its machine-dependent auto fields resolved for ``now``;
    also each change in words ('batch_size 64 -> 512'). ``typed``: the flags typed on this
    command line ({section: {field: value}}), which stay as typed. Without a record (an
    earlier version's config.json), the saved config and no change."""
    from common.config.resolve import resolve

    if not record or not isinstance(record.get("auto"), dict) or not isinstance(record.get("machine"), dict):
        return saved, []
    try:
        then = Machine(**record["machine"])
    except TypeError:  # a record edited by hand: resume as saved
        return saved, []
    kept = {s: set(typed.get(s, ())) | set(KEPT_ON_RESUME.get(s, ())) for s in AUTO_SECTIONS}
    fields = {s: [n for n in names if n not in kept.get(s, set())] for s, names in record["auto"].items()}
    fields = {s: names for s, names in fields.items() if s in AUTO_SECTIONS and names}
    reset = _reset(saved, fields)
    before, after = resolve(reset, atari, then.cuda, **then.facts()), resolve(reset, atari, now.cuda, **now.facts())
    moved, said = {}, []
    for section, names in fields.items():
        for name in names:
            old, new = getattr(getattr(before, section), name), getattr(getattr(after, section), name)
            if old != new:  # it depends on the machine: this machine's value
                moved.setdefault(section, {})[name] = new
                was = getattr(getattr(saved, section), name)
                if was != new:
                    said.append(f"{name} {_words(was)} -> {_words(new)}")
    sections = {s: dataclasses.replace(getattr(saved, s), **vals) for s, vals in moved.items()}
    return resolve(dataclasses.replace(saved, **sections), atari, now.cuda, **now.facts()), said


def _words(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"{value:g}" if isinstance(value, float) else str(value)


def record_of(saved_json: dict) -> dict | None:
    """The record in a loaded config.json, or None (an earlier version's)."""
    record = saved_json.get(RECORD_KEY) if isinstance(saved_json, dict) else None
    return record if isinstance(record, dict) else None


def carry_auto(record: dict | None, typed: dict[str, dict]) -> dict[str, list[str]]:
    """A resumed run's auto fields: the record's, less those typed now with a value, plus
    those typed now as auto (a typed --preset hands its fields back to the preset)."""
    auto = {s: set(names) for s, names in ((record or {}).get("auto") or {}).items() if s in AUTO_SECTIONS}
    for section, values in typed.items():
        if section not in AUTO_SECTIONS:
            continue
        for name, value in values.items():
            (auto.setdefault(section, set()).add if _is_auto(value) else auto.get(section, set()).discard)(name)
    return {s: sorted(names) for s, names in auto.items() if names}
