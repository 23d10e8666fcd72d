"""`Filter.N.Name` / `Filter.N.Value.M`: values OR-ed within a filter, filters AND-ed;
`*`, `?` and `\\` escapes in values; `tag:<key>`, `tag-key`, `tag-value` everywhere.
An unknown filter name is a 400 InvalidParameterValue, never a 500."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from apis.ec2.errors import Ec2Error

Item = Mapping[str, Any]
Extractor = Callable[[Item], list[str]]


def field(*path: str) -> Extractor:
    """Values found at a member path; lists along the way are walked."""

    def extract(item: Item) -> list[str]:
        found: list[Any] = [item]
        for name in path:
            nxt: list[Any] = []
            for value in found:
                value = value.get(name) if isinstance(value, Mapping) else None
                if isinstance(value, list):
                    nxt.extend(value)
                elif value is not None:
                    nxt.append(value)
            found = nxt
        return [_text(v) for v in found]

    return extract


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if hasattr(value, "strftime"):
        return str(value.strftime("%Y-%m-%dT%H:%M:%S.000Z"))
    return str(value)


@functools.lru_cache(maxsize=4096)
def _pattern(value: str) -> re.Pattern[str]:
    out, i = [], 0
    while i < len(value):
        c = value[i]
        if c == "\\" and i + 1 < len(value):
            out.append(re.escape(value[i + 1]))
            i += 2
            continue
        out.append(".*" if c == "*" else "." if c == "?" else re.escape(c))
        i += 1
    return re.compile("".join(out) + r"\Z", re.S)


def _tags(item: Item) -> list[Mapping[str, str]]:
    tags = item.get("Tags", [])
    return tags if isinstance(tags, list) else []


def compile_filters(filters: Sequence[Mapping[str, Any]],
                    known: Mapping[str, Extractor]) -> Callable[[Item], bool]:
    """A predicate for the request's filters over items of one resource kind."""
    tests: list[tuple[Extractor, list[re.Pattern[str]]]] = []
    for f in filters:
        name = str(f.get("Name") or "")
        values = [str(v) for v in f.get("Values", [])]
        if name.startswith("tag:"):
            key = name[4:]

            def by_key(item: Item, key: str = key) -> list[str]:
                return [t["Value"] for t in _tags(item) if t["Key"] == key]

            extractor: Extractor = by_key
        elif name == "tag-key":
            extractor = lambda item: [t["Key"] for t in _tags(item)]  # noqa: E731
        elif name == "tag-value":
            extractor = lambda item: [t["Value"] for t in _tags(item)]  # noqa: E731
        elif name in known:
            extractor = known[name]
        else:
            raise Ec2Error("InvalidParameterValue",
                           f"The filter '{name}' is invalid; valid filters: "
                           f"{', '.join(sorted(known))}, tag:<key>, tag-key, tag-value")
        if not values:
            raise Ec2Error("InvalidParameterValue", f"The filter '{name}' needs a value")
        tests.append((extractor, [_pattern(v) for v in values]))

    def matches(item: Item) -> bool:
        for extractor, patterns in tests:
            found = extractor(item)
            if not any(p.match(v) for p in patterns for v in found):
                return False
        return True

    return matches
