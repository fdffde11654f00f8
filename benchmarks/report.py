"""How a benchmark prints what it measured: aligned tables for people, a verdict against
each target, and one JSON object as the last line for scripts."""

from __future__ import annotations

import json


def table(headers: list[str], rows: list[list], title: str | None = None) -> str:
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = [] if title is None else [title]
    for k, r in enumerate(cells):
        lines.append("  ".join(c.rjust(w) if k and _numeric(c) else c.ljust(w) for c, w in zip(r, widths)).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(c) -> str:
    if c is None:
        return "-"
    if isinstance(c, float):
        if c != c:
            return "nan"
        if abs(c) >= 100:
            return f"{c:,.0f}"
        if abs(c) >= 10:
            return f"{c:.1f}"
        return f"{c:.2f}" if abs(c) >= 1 else f"{c:.3f}"
    if isinstance(c, int):
        return f"{c:,}"
    return str(c)


def _numeric(s: str) -> bool:
    return s.replace(",", "").replace(".", "").replace("-", "").replace("x", "").replace("%", "").isdigit()


def final_json(obj: dict) -> None:
    """The last line a benchmark prints: everything it measured, as one JSON object."""
    print(json.dumps(obj, default=_jsonable, sort_keys=False), flush=True)


def _jsonable(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return str(x)


def verdict(value: float | None, target: float, higher_is_better: bool = True) -> str:
    if value is None:
        return "n/a"
    ok = value >= target if higher_is_better else value <= target
    return "MET" if ok else "missed"
