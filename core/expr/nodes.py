"""The AST of REQUIREMENTS and RANK expressions: nodes that evaluate themselves
against a variable lookup and say how their result can move (Trend)."""

from __future__ import annotations

import enum
import functools
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from core.errors import InvalidRequest

Value = str | float
Lookup = Callable[[str], Value | None]


class ExpressionError(InvalidRequest):
    """A REQUIREMENTS or RANK expression that does not parse; `column` is 1-based."""

    def __init__(self, kind: str, column: int, message: str) -> None:
        super().__init__(f"{kind}: column {column}: {message}")
        self.kind = kind
        self.column = column
        self.message = message


class Trend(enum.Enum):
    """How a value can move while the scheduler keeps placing VMs on a host."""

    CONST = "const"
    UP = "up"  # never decreases (for a boolean: false may become true, never the reverse)
    DOWN = "down"  # never increases (for a boolean: true may become false, never the reverse)
    UNKNOWN = "unknown"

    def flip(self) -> Trend:
        return _FLIP[self]

    def combine(self, other: Trend) -> Trend:
        if self is Trend.CONST or self is other:
            return other
        if other is Trend.CONST:
            return self
        return Trend.UNKNOWN


_FLIP = {Trend.CONST: Trend.CONST, Trend.UP: Trend.DOWN, Trend.DOWN: Trend.UP,
         Trend.UNKNOWN: Trend.UNKNOWN}

_NUMBER = re.compile(r"\s*[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?\s*\Z")


@functools.lru_cache(maxsize=8192)
def _parse_number(text: str) -> float | None:
    return float(text) if _NUMBER.match(text) else None


def as_number(value: Value) -> float | None:
    """The numeric reading of a variable's value, or None when it is not a number."""
    if isinstance(value, str):
        return _parse_number(value)
    return float(value)


def as_text(value: Value) -> str:
    """The string a glob sees for a variable's value (numbers print without '.0')."""
    if isinstance(value, str):
        return value
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


# --------------------------------------------------------------------------- AST: boolean


@dataclass(frozen=True, slots=True)
class Always:
    """The empty REQUIREMENTS expression."""

    def test(self, lookup: Lookup) -> bool:
        return True

    def trend(self, trends: Mapping[str, Trend]) -> Trend:
        return Trend.CONST


@dataclass(frozen=True, slots=True)
class NumberCompare:
    name: str
    op: str  # '=', '!=', '>', '<'
    number: float
    fn: Callable[[float, float], bool] = field(repr=False, compare=False)

    def test(self, lookup: Lookup) -> bool:
        value = lookup(self.name)
        if value is None:
            return False
        number = as_number(value)
        return number is not None and self.fn(number, self.number)

    def trend(self, trends: Mapping[str, Trend]) -> Trend:
        var = trends.get(self.name, Trend.CONST)
        if var is Trend.CONST:
            return Trend.CONST
        if self.op == ">":
            return var
        if self.op == "<":
            return var.flip()
        return Trend.UNKNOWN


@dataclass(frozen=True, slots=True)
class GlobCompare:
    name: str
    pattern: str
    negate: bool  # '!=' rather than '='
    regex: re.Pattern[str] = field(repr=False, compare=False)

    def test(self, lookup: Lookup) -> bool:
        value = lookup(self.name)
        if value is None:
            return False
        return (self.regex.match(as_text(value)) is not None) is not self.negate

    def trend(self, trends: Mapping[str, Trend]) -> Trend:
        var = trends.get(self.name, Trend.CONST)
        return Trend.CONST if var is Trend.CONST else Trend.UNKNOWN


@dataclass(frozen=True, slots=True)
class Not:
    operand: BoolNode

    def test(self, lookup: Lookup) -> bool:
        return not self.operand.test(lookup)

    def trend(self, trends: Mapping[str, Trend]) -> Trend:
        return self.operand.trend(trends).flip()


@dataclass(frozen=True, slots=True)
class And:
    operands: tuple[BoolNode, ...]

    def test(self, lookup: Lookup) -> bool:
        for operand in self.operands:
            if not operand.test(lookup):
                return False
        return True

    def trend(self, trends: Mapping[str, Trend]) -> Trend:
        return _combine(operand.trend(trends) for operand in self.operands)


@dataclass(frozen=True, slots=True)
class Or:
    operands: tuple[BoolNode, ...]

    def test(self, lookup: Lookup) -> bool:
        for operand in self.operands:
            if operand.test(lookup):
                return True
        return False

    def trend(self, trends: Mapping[str, Trend]) -> Trend:
        return _combine(operand.trend(trends) for operand in self.operands)


BoolNode = Always | NumberCompare | GlobCompare | Not | And | Or


def _combine(trends: Iterable[Trend]) -> Trend:
    result = Trend.CONST
    for item in trends:
        result = result.combine(item)
    return result


# ------------------------------------------------------------------------ AST: arithmetic


@dataclass(frozen=True, slots=True)
class Number:
    value: float

    def eval(self, lookup: Lookup) -> float:
        return self.value

    def constant(self) -> float | None:
        return self.value

    def trend(self, trends: Mapping[str, Trend]) -> Trend:
        return Trend.CONST


@dataclass(frozen=True, slots=True)
class Variable:
    name: str

    def eval(self, lookup: Lookup) -> float:
        value = lookup(self.name)
        if value is None:
            return 0.0
        number = as_number(value)
        return 0.0 if number is None else number

    def constant(self) -> float | None:
        return None

    def trend(self, trends: Mapping[str, Trend]) -> Trend:
        return trends.get(self.name, Trend.CONST)


@dataclass(frozen=True, slots=True)
class Negate:
    operand: ArithNode

    def eval(self, lookup: Lookup) -> float:
        return -self.operand.eval(lookup)

    def constant(self) -> float | None:
        value = self.operand.constant()
        return None if value is None else -value

    def trend(self, trends: Mapping[str, Trend]) -> Trend:
        return self.operand.trend(trends).flip()


@dataclass(frozen=True, slots=True)
class Binary:
    op: str  # '+', '-', '*', '/'
    left: ArithNode
    right: ArithNode

    def eval(self, lookup: Lookup) -> float:
        a = self.left.eval(lookup)
        b = self.right.eval(lookup)
        op = self.op
        if op == "+":
            return a + b
        if op == "-":
            return a - b
        if op == "*":
            return a * b
        return a / b if b != 0 else 0.0

    def constant(self) -> float | None:
        if self.left.constant() is None or self.right.constant() is None:
            return None
        return self.eval(_nothing)

    def trend(self, trends: Mapping[str, Trend]) -> Trend:
        left = self.left.trend(trends)
        right = self.right.trend(trends)
        if self.op == "+":
            return left.combine(right)
        if self.op == "-":
            return left.combine(right.flip())
        if left is Trend.CONST and right is Trend.CONST:
            return Trend.CONST
        divisor = self.right.constant()
        if self.op == "/":
            return _scale(left, divisor) if divisor is not None else Trend.UNKNOWN
        factor = self.left.constant()
        if factor is not None:
            return _scale(right, factor)
        return _scale(left, divisor) if divisor is not None else Trend.UNKNOWN


ArithNode = Number | Variable | Negate | Binary


def _nothing(name: str) -> Value | None:
    return None


def _scale(trend: Trend, factor: float) -> Trend:
    if factor == 0:
        return Trend.CONST
    return trend if factor > 0 else trend.flip()
