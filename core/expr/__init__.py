"""OpenNebula 3.4's REQUIREMENTS and RANK expressions, parsed to an AST and never eval()ed.

REQUIREMENTS is boolean (src/xml/expr_bool.y)::

    expr     := not ( ('&' | '|') not )*  one precedence, left to right: A | B & C = (A | B) & C
    not      := '!' not | '(' expr ')' | NAME op value   ('!' applies to what follows it)
    op       := '=' | '!=' | '>' | '<'    (there is no '>=' nor '<=')
    value    := ['-'] NUMBER | "quoted" | BARE_WORD

As in OpenNebula's lexer, a bare word on the right of an operator is a string literal, not
a variable: ``ARCH = x86_64`` means ``ARCH = "x86_64"``. Strings compare with ``=``/``!=``
as whole-string globs (``*``, ``?``, ``[...]``); numbers compare numerically, and a value
that is not a number never matches a number. A missing variable makes its comparison
false (so ``X != 1`` is false too when X is missing). An empty expression is true.

RANK is arithmetic (src/xml/expr_arith.y): ``+ - * /``, unary minus, parentheses, numbers
and variables. A missing or non-numeric variable is 0, a division by zero is 0, and the
result is truncated to an integer.

Both expose ``.variables`` (the names read) and ``.trend()``, which tells how the result can
move when some variables only grow or only shrink; the scheduler uses it to skip work.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

from core.expr.nodes import (
    ArithNode,
    BoolNode,
    ExpressionError,
    Lookup,
    Trend,
    Value,
    as_number,
    as_text,
)
from core.expr.parser import _Fail, _Parser

__all__ = [
    "ExpressionError", "Lookup", "Rank", "Requirement", "Trend", "Value", "as_number",
    "as_text", "clear_caches", "parse_rank", "parse_requirements",
]


# ------------------------------------------------------------------------ public objects


@dataclass(frozen=True, slots=True)
class Requirement:
    """A parsed REQUIREMENTS expression; call it (or .matches) with a variable lookup."""

    text: str
    root: BoolNode
    variables: frozenset[str]

    def matches(self, lookup: Lookup) -> bool:
        return self.root.test(lookup)

    __call__ = matches

    def trend(self, trends: Mapping[str, Trend]) -> Trend:
        return self.root.trend(trends)


@dataclass(frozen=True, slots=True)
class Rank:
    """A parsed RANK expression; .value(lookup) is the truncated integer rank."""

    text: str
    root: ArithNode | None  # None: the empty expression, rank 0
    variables: frozenset[str]

    def value(self, lookup: Lookup) -> int:
        if self.root is None:
            return 0
        result = self.root.eval(lookup)
        return int(result) if math.isfinite(result) else 0

    def trend(self, trends: Mapping[str, Trend]) -> Trend:
        return Trend.CONST if self.root is None else self.root.trend(trends)


def parse_requirements(text: str) -> Requirement:
    """Parse REQUIREMENTS; raises ExpressionError. Cached by text."""
    parsed = _requirements(text)
    if isinstance(parsed, _Failure):
        raise ExpressionError("REQUIREMENTS", parsed.column, parsed.message)
    return parsed


def parse_rank(text: str) -> Rank:
    """Parse RANK; raises ExpressionError. Cached by text."""
    parsed = _rank(text)
    if isinstance(parsed, _Failure):
        raise ExpressionError("RANK", parsed.column, parsed.message)
    return parsed


def clear_caches() -> None:
    """Forget every parsed expression (the next parse starts from the text again)."""
    _requirements.cache_clear()
    _rank.cache_clear()


class _Failure(NamedTuple):
    column: int
    message: str


@functools.lru_cache(maxsize=1024)
def _requirements(text: str) -> Requirement | _Failure:
    parser = _Parser(text)
    try:
        root = parser.requirements()
    except _Fail as fail:
        return _Failure(fail.column, fail.message)
    return Requirement(text, root, frozenset(parser.names))


@functools.lru_cache(maxsize=1024)
def _rank(text: str) -> Rank | _Failure:
    parser = _Parser(text)
    try:
        root = parser.rank()
    except _Fail as fail:
        return _Failure(fail.column, fail.message)
    return Rank(text, root, frozenset(parser.names))
