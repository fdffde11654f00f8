"""The config on the command line and on disk: flags from the schema, and back to a Config.

:func:`build_arg_parser` makes one flag per field (its help from the field's metadata, its
choices from the schema's constants, and, where a preset fills the field, each preset's
values rendered from ``PRESETS`` so the help cannot drift from the table).
:func:`config_from_args` turns parsed flags into a Config, :func:`explicit_overrides`
tells which settings were typed (a resumed run keeps the rest), :func:`dumps` writes
``config.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any, get_type_hints

from common.config.fields import RECORD_KEY
from common.config.presets import PRESETS, describe_auto
from common.config.schema import SECTIONS, Config


def _flag(field: dataclasses.Field) -> str:
    return field.metadata.get("flag") or "--" + field.name.replace("_", "-")


def _parse_bool(text: str) -> bool:
    low = text.lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def _parse_optional(inner):
    def parse(text: str):
        return None if text.lower() in ("none", "auto") else inner(text)

    parse.__name__ = inner.__name__
    return parse


_SCALARS = {"int": int, "float": float, "str": str, "bool": _parse_bool}


def _field_parser(field: dataclasses.Field, hint) -> Any:
    name = getattr(hint, "__name__", None)
    if name in _SCALARS:
        return _SCALARS[name]
    # Optional[X]
    args = [a for a in getattr(hint, "__args__", ()) if a is not type(None)]
    if len(args) == 1 and args[0] is str:
        return str  # "auto" is a real value for strings (e.g. --address auto)
    if len(args) == 1 and args[0].__name__ in _SCALARS:
        return _parse_optional(_SCALARS[args[0].__name__])
    raise TypeError(f"no parser for field {field.name}: {hint}")


def field_help(section: str, field: dataclasses.Field) -> str:
    """A field's help, with the presets' values where a preset fills it."""
    text = field.metadata["help"]
    auto = describe_auto(section, field.name)
    return f"{text} (auto: {auto})" if auto else text


def build_arg_parser(
    prog: str = "python -m learner.main", description: str = "", parser_class=argparse.ArgumentParser
) -> argparse.ArgumentParser:
    parser = parser_class(
        prog=prog, description=description, allow_abbrev=False, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    for section, cls in get_type_hints(Config).items():
        group = parser.add_argument_group(section)
        hints = get_type_hints(cls)
        for f in dataclasses.fields(cls):
            kwargs = dict(
                dest=f"{section}.{f.name}",
                type=_field_parser(f, hints[f.name]),
                default=f.default,
                help=field_help(section, f),
                metavar=_flag(f)[2:].replace("-", "_").upper(),
            )
            if f.metadata.get("choices"):
                kwargs["choices"] = f.metadata["choices"]
                kwargs["metavar"] = "{" + ",".join(f.metadata["choices"]) + "}"
            group.add_argument(_flag(f), **kwargs)
    return parser


def config_from_args(ns: argparse.Namespace) -> Config:
    """Build a Config from parsed flags (ConfigError if a value is out of range)."""
    sections: dict[str, dict] = {s: {} for s in SECTIONS}
    for key, value in vars(ns).items():
        section, _, name = key.partition(".")
        if section in sections:
            sections[section][name] = value
    return Config(**{s: get_type_hints(Config)[s](**kw) for s, kw in sections.items()})


def explicit_overrides(parser: argparse.ArgumentParser, argv: list[str], ns: argparse.Namespace) -> dict[str, dict]:
    """The settings typed on the command line (not defaults), as {section: {field: value}}.

    A typed ``--preset`` also returns every field that preset fills and that was not typed
    as None (auto), so that a saved run's resolved values make way for the new preset's."""
    given = {a.split("=", 1)[0] for a in argv if a.startswith("--")}
    out: dict[str, dict] = {}
    for action in parser._actions:
        if "." in action.dest and any(o in given for o in action.option_strings):
            section, name = action.dest.split(".", 1)
            out.setdefault(section, {})[name] = getattr(ns, action.dest)
    if "preset" in out.get("run", {}):
        for section, fields in PRESETS[out["run"]["preset"]].items():
            for name in fields:
                out.setdefault(section, {}).setdefault(name, None)
    return out


def dumps(config: Config, record: dict | None = None) -> str:
    """config.json's text: the settings, and how they were resolved (``record.make_record``)."""
    return json.dumps({**config.to_dict(), **({RECORD_KEY: record} if record else {})}, indent=2, sort_keys=True)
