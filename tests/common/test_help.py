"""--help: what a setting means, and the presets' values rendered from PRESETS itself."""

import re

from common.config import PRESETS, build_arg_parser
from common.config import presets as presets_module


def help_of(flag: str) -> str:
    action = next(a for a in build_arg_parser()._actions if flag in a.option_strings)
    return " ".join(action.help.split())


def test_the_auto_values_come_from_the_table(monkeypatch):
    assert "apex preset 512 on a GPU, 64 on a CPU" in help_of("--batch-size")
    assert "2,500 for Atari, 1,000 for MinAtar, 200 otherwise" in help_of("--target-update-period")
    table = {name: {s: dict(f) for s, f in t.items()} for name, t in PRESETS.items()}
    table["nature"]["learner"]["batch_size"] = 77
    monkeypatch.setattr(presets_module, "PRESETS", table)
    assert "nature preset 77" in help_of("--batch-size")


def test_no_help_quotes_a_measurement():
    for action in build_arg_parser()._actions:
        text = action.help or ""
        for figure in ("measured", "updates/s", "%", "x faster"):
            assert figure not in text, (action.option_strings, figure)
        assert not re.search(r"\d\s?ms\b", text), action.option_strings  # a timing
