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

import enum
import fnmatch
import functools
import math
import operator
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from core.errors import InvalidRequest

Value = str | float
Lookup = Callable[[str], Value | None]

MAX_DEPTH = 64  # nested '(' / '!' / unary '-' before the parser gives up


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


# ------------------------------------------------------------------------ tokenizer


class _Token(NamedTuple):
    kind: str  # number, name, string, op, bad, end
    text: str
    column: int


_TOKENS = re.compile(
    r"""
    (?P<space>\s+)
    | (?P<number>\d+(?:\.\d+)?)
    | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<string>"[^"]*")
    | (?P<op>!=|>=|<=|=>|=<|==|&&|\|\||[=!<>&|()+\-*/])
    | (?P<bad>"[^"]*\Z|.)
    """,
    re.VERBOSE | re.DOTALL,
)


def _tokenize(text: str) -> list[_Token]:
    tokens = []
    for match in _TOKENS.finditer(text):
        kind = match.lastgroup
        assert kind is not None
        if kind != "space":
            tokens.append(_Token(kind, match.group(), match.start() + 1))
    tokens.append(_Token("end", "", len(text) + 1))
    return tokens


# ------------------------------------------------------------------------ parser


class _Fail(Exception):
    def __init__(self, column: int, message: str) -> None:
        super().__init__(message)
        self.column = column
        self.message = message


_COMPARE: dict[str, Callable[[float, float], bool]] = {
    "=": operator.eq, "!=": operator.ne, ">": operator.gt, "<": operator.lt,
}
_NOT_OPERATORS = {
    ">=": "'>=' is not an operator; use '>' or '=' joined with '|'",
    "=>": "'=>' is not an operator; use '>' or '=' joined with '|'",
    "<=": "'<=' is not an operator; use '<' or '=' joined with '|'",
    "=<": "'=<' is not an operator; use '<' or '=' joined with '|'",
    "==": "'==' is not an operator; use '='",
    "&&": "'&&' is not an operator; use '&'",
    "||": "'||' is not an operator; use '|'",
}


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.pos = 0
        self.depth = 0
        self.names: set[str] = set()

    # -- helpers

    def peek(self) -> _Token:
        return self.tokens[self.pos]

    def take(self) -> _Token:
        token = self.tokens[self.pos]
        if token.kind != "end":
            self.pos += 1
        return token

    def fail(self, token: _Token, message: str) -> _Fail:
        return _Fail(token.column, message)

    def unexpected(self, token: _Token, expected: str) -> _Fail:
        if token.kind == "end":
            return self.fail(token, f"the expression ends early; expected {expected}")
        if token.text in _NOT_OPERATORS:
            return self.fail(token, _NOT_OPERATORS[token.text])
        if token.kind == "bad":
            if token.text.startswith('"'):
                return self.fail(token, "this string has no closing '\"'")
            return self.fail(token, f"unexpected character {token.text!r}; expected {expected}")
        return self.fail(token, f"unexpected {token.text!r}; expected {expected}")

    def nest(self, token: _Token) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.fail(token, f"nested more than {MAX_DEPTH} levels deep")

    def finish(self, expected: str) -> None:
        token = self.peek()
        if token.kind != "end":
            raise self.unexpected(token, expected)

    # -- REQUIREMENTS

    def requirements(self) -> BoolNode:
        if self.peek().kind == "end":
            return Always()
        root = self.chain()
        self.finish("'&', '|' or the end of the expression")
        return root

    def chain(self) -> BoolNode:
        """`&` and `|` share one precedence and group left to right, as in OpenNebula's
        expr_bool.y (`%left '!' '&' '|'`): `A | B & C` is `(A | B) & C`."""
        node = self.negation()
        while self.peek().text in ("&", "|"):
            op = self.take().text
            right = self.negation()
            kind = And if op == "&" else Or
            if isinstance(node, kind):  # keep long chains flat: a & b & c is one node
                node = kind((*node.operands, right))
            else:
                node = kind((node, right))
        return node

    def negation(self) -> BoolNode:
        token = self.peek()
        if token.text == "!":
            self.take()
            self.nest(token)
            node: BoolNode = Not(self.negation())
            self.depth -= 1
            return node
        if token.text == "(":
            self.take()
            self.nest(token)
            node = self.chain()
            if self.peek().text != ")":
                raise self.unexpected(self.peek(), f"')' to close the '(' at column {token.column}")
            self.take()
            self.depth -= 1
            return node
        return self.comparison()

    def comparison(self) -> BoolNode:
        token = self.take()
        if token.kind in ("number", "string"):
            raise self.fail(token, f"a comparison starts with an attribute name, "
                                   f"e.g. FREE_CPU > 100, not with {token.text}")
        if token.kind != "name":
            raise self.unexpected(token, "an attribute name, '!' or '('")
        name = token.text
        self.names.add(name)
        op = self.take()
        if op.text in _NOT_OPERATORS and op.text[0] in "<>=" and op.text != "==":
            raise self.fail(op, self.no_such_comparison(name, op.text))
        if op.text not in _COMPARE:
            raise self.unexpected(op, f"'=', '!=', '>' or '<' after {name}")
        return self.compared_value(name, op)

    def compared_value(self, name: str, op: _Token) -> BoolNode:
        token = self.take()
        if token.text == "-" and self.peek().kind == "number":
            number = self.take()
            return NumberCompare(name, op.text, -float(number.text), _COMPARE[op.text])
        if token.kind == "number":
            return NumberCompare(name, op.text, float(token.text), _COMPARE[op.text])
        if token.kind not in ("string", "name"):
            raise self.unexpected(token, f"a number or a \"quoted string\" after '{op.text}'")
        pattern = token.text[1:-1] if token.kind == "string" else token.text
        if op.text in (">", "<"):
            raise self.fail(op, f"'{op.text}' compares numbers, and {token.text} is a string")
        if token.kind == "name" and self.peek().text[:1] in ("*", "?", "["):
            word = self.text[token.column - 1:].split(None, 1)[0]
            raise self.fail(token, f'quote glob patterns: {name} {op.text} "{word}"')
        regex = re.compile(fnmatch.translate(pattern))
        return GlobCompare(name, pattern, op.text == "!=", regex)

    def no_such_comparison(self, name: str, op: str) -> str:
        strict = ">" if ">" in op else "<"
        message = f"'{op}' is not an operator; use '{strict}' or '=' joined with '|'"
        value = self.peek()
        if value.kind in ("number", "string", "name"):
            text = value.text
            message += f", e.g. ({name} {strict} {text} | {name} = {text})"
        return message

    # -- RANK

    def rank(self) -> ArithNode | None:
        if self.peek().kind == "end":
            return None
        root = self.sum()
        self.finish("an operator (+ - * /) or the end of the expression")
        return root

    def sum(self) -> ArithNode:
        node = self.product()
        while self.peek().text in ("+", "-"):
            op = self.take().text
            node = Binary(op, node, self.product())
        return node

    def product(self) -> ArithNode:
        node = self.unary()
        while self.peek().text in ("*", "/"):
            op = self.take().text
            node = Binary(op, node, self.unary())
        return node

    def unary(self) -> ArithNode:
        token = self.take()
        if token.text == "-":
            self.nest(token)
            node: ArithNode = Negate(self.unary())
            self.depth -= 1
            return node
        if token.text == "(":
            self.nest(token)
            node = self.sum()
            if self.peek().text != ")":
                raise self.unexpected(self.peek(), f"')' to close the '(' at column {token.column}")
            self.take()
            self.depth -= 1
            return node
        if token.kind == "number":
            return Number(float(token.text))
        if token.kind == "name":
            self.names.add(token.text)
            return Variable(token.text)
        if token.kind == "string":
            raise self.fail(token, f"a string has no numeric value; write the attribute name "
                                   f"without quotes ({token.text[1:-1]})")
        raise self.unexpected(token, "a number, an attribute name, '-' or '('")
