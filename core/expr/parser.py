"""Tokenizer and recursive-descent parser for REQUIREMENTS and RANK (no eval)."""

from __future__ import annotations

import fnmatch
import operator
import re
from collections.abc import Callable
from typing import NamedTuple

from core.expr.nodes import (
    Always,
    And,
    ArithNode,
    Binary,
    BoolNode,
    GlobCompare,
    Negate,
    Not,
    Number,
    NumberCompare,
    Or,
    Variable,
)

MAX_DEPTH = 64  # nested '(' / '!' / unary '-' before the parser gives up


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
