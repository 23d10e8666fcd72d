"""What the CLI prints: padded tables, `NAME : value` sections, human units, JSON."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Row = Mapping[str, Any]


@dataclass(frozen=True)
class Column:
    header: str
    value: Callable[[Row], str]
    right: bool = False  # numbers are right-aligned


def table(columns: Sequence[Column], rows: Iterable[Row]) -> str:
    """A header line and one padded line per row; just the header when there are none."""
    cells = [[c.value(r) for c in columns] for r in rows]
    widths = [max([len(c.header), *(len(line[i]) for line in cells)])
              for i, c in enumerate(columns)]

    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if c.right else v.ljust(w)
                 for c, v, w in zip(columns, values, widths, strict=True)]
        return "  ".join(parts).rstrip()

    return "\n".join([line([c.header for c in columns]), *(line(v) for v in cells)])


def section(title: str, fields: Sequence[tuple[str, object]]) -> str:
    """`TITLE` then `NAME       : value` lines."""
    width = max((len(name) for name, _ in fields), default=0)
    lines = [title] + [f"{name.ljust(width)} : {value}" for name, value in fields]
    return "\n".join(lines)


def human_kb(kb: float) -> str:
    """1024 K -> 1M, 16777216 K -> 16G, 1536 M -> 1.5G."""
    value = float(kb)
    units = "KMGTP"
    i = 0
    while abs(value) >= 1024 and i < len(units) - 1:
        value /= 1024
        i += 1
    if value.is_integer():
        return f"{int(value)}{units[i]}"
    return f"{value:.1f}{units[i]}"


def human_mb(mb: float) -> str:
    return human_kb(mb * 1024)


def duration(seconds: float) -> str:
    """`0d 00:01:23`."""
    s = max(0, int(seconds))
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    return f"{days}d {hours:02d}:{minutes:02d}:{s:02d}"


def date(epoch: float) -> str:
    """Local time, or `-` for 0 (not yet happened)."""
    if not epoch:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def log_time(epoch: float) -> str:
    """OpenNebula's log format: `Tue Nov 24 15:52:00 2026`."""
    return time.strftime("%a %b %d %H:%M:%S %Y", time.localtime(epoch))


def percent(part: float, whole: float) -> int:
    return int(part * 100 // whole) if whole > 0 else 0


def template_text(attrs: Mapping[str, Any]) -> str:
    """A template view (name -> value, vector or list of them) in the attribute language."""
    lines: list[str] = []
    for name, value in attrs.items():
        for one in value if isinstance(value, list) else [value]:
            if isinstance(one, dict):
                pairs = ",\n  ".join(f"{k}={quote(str(v))}" for k, v in one.items())
                lines.append(f"{name}=[\n  {pairs} ]" if pairs else f"{name}=[ ]")
            else:
                lines.append(f"{name}={quote(str(one))}")
    return "\n".join(lines)


def quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def arrow() -> str:
    """`→` where the terminal's encoding has it, else `->`."""
    encoding = getattr(sys.stdout, "encoding", None) or "ascii"
    try:
        "→".encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return "->"
    return "→"


def error(message: str) -> None:
    """The one line a failure prints."""
    sys.stdout.flush()
    sys.stderr.write(f"nubo: error: {message}\n")
    sys.stderr.flush()


def emit(text: str) -> None:
    print(text, flush=True)


def emit_json(value: object) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False), flush=True)


def emit_id(object_id: int, as_json: bool) -> int:
    """What every create command prints: `ID: n`, or {"id": n}."""
    if as_json:
        emit_json({"id": object_id})
    else:
        emit(f"ID: {object_id}")
    return 0


def emit_rows(columns: Sequence[Column], rows: Sequence[Row], as_json: bool) -> int:
    """What every list command prints: a table, or the rows as JSON."""
    if as_json:
        emit_json(rows)
    else:
        emit(table(columns, rows))
    return 0
