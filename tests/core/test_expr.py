"""REQUIREMENTS and RANK expressions: grammar, evaluation, errors with columns, trends."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from core.errors import InvalidRequest
from core.expr import (
    ExpressionError,
    Lookup,
    Trend,
    Value,
    as_number,
    as_text,
    parse_rank,
    parse_requirements,
)

HOST: dict[str, Value] = {
    "ARCH": "x86_64", "HYPERVISOR": "kvm", "HOSTNAME": "node07.example.com",
    "FREE_CPU": 350, "FREE_MEM": 2048.0, "RUNNING_VMS": 3, "ID": 7, "NAME": "node07",
    "SPEED": "2.5", "MODEL": "Xeon E5 [v2]", "EMPTY": "", "WORD": "fast", "NEG": "-4",
}


def lookup(variables: dict[str, Value] = HOST) -> Lookup:
    return variables.get


def req(text: str, variables: dict[str, Value] = HOST) -> bool:
    return parse_requirements(text).matches(lookup(variables))


def rank(text: str, variables: dict[str, Value] = HOST) -> int:
    return parse_rank(text).value(lookup(variables))


def error(parse: Callable[[str], object], text: str) -> ExpressionError:
    with pytest.raises(ExpressionError) as info:
        parse(text)
    return info.value


# ----------------------------------------------------------------- REQUIREMENTS: operators


@pytest.mark.parametrize(("text", "expected"), [
    ("FREE_CPU = 350", True), ("FREE_CPU = 351", False),
    ("FREE_CPU != 351", True), ("FREE_CPU != 350", False),
    ("FREE_CPU > 349", True), ("FREE_CPU > 350", False),
    ("FREE_CPU < 351", True), ("FREE_CPU < 350", False),
    ("FREE_MEM = 2048", True), ("FREE_MEM > 2047.5", True), ("FREE_MEM < 2048.25", True),
    ("SPEED = 2.5", True), ("SPEED > 2", True), ("SPEED < 2.49", False),
    ("NEG = -4", True), ("NEG < -3", True), ("NEG > -4", False),
    ("ID = 7", True), ("RUNNING_VMS < 4", True),
])
def test_numeric_comparisons(text: str, expected: bool) -> None:
    assert req(text) is expected


@pytest.mark.parametrize(("text", "expected"), [
    ('ARCH = "x86_64"', True), ('ARCH = "x86"', False), ('ARCH != "x86_64"', False),
    ('ARCH != "i686"', True),
    ('HOSTNAME = "node*"', True), ('HOSTNAME = "*.example.com"', True),
    ('HOSTNAME = "node0?.example.com"', True), ('HOSTNAME = "node?.example.com"', False),
    ('HOSTNAME = "node0[0-7]*"', True), ('HOSTNAME = "node0[!7]*"', False),
    ('HOSTNAME != "node*"', False), ('HOSTNAME = "NODE*"', False),  # case-sensitive
    ('HOSTNAME = "node07"', False),  # a glob matches the whole string
    ('MODEL = "Xeon E5 [[]v2]"', True), ('MODEL = "*v2*"', True),
    ('EMPTY = ""', True), ('EMPTY != ""', False), ('ARCH = ""', False),
    ('FREE_CPU = "3*"', True), ('ID = "7"', True), ('FREE_MEM = "2048"', True),
    ("ARCH = x86_64", True), ("HYPERVISOR = xen", False),  # a bare word is a literal
    ("HYPERVISOR != xen", True),
])
def test_string_comparisons_are_globs(text: str, expected: bool) -> None:
    assert req(text) is expected


def test_bare_word_on_the_right_is_a_literal_not_a_variable() -> None:
    assert req("ARCH = HYPERVISOR") is False
    assert req("ARCH = ARCH", {"ARCH": "ARCH"}) is True
    assert parse_requirements("ARCH = HYPERVISOR").variables == {"ARCH"}


def test_numbers_against_non_numeric_values_never_match() -> None:
    for text in ("WORD = 1", "WORD != 1", "WORD > 0", "WORD < 0", "EMPTY = 0"):
        assert req(text) is False, text
    assert req("!(WORD = 1)") is True


@pytest.mark.parametrize("op", ["=", "!=", ">", "<"])
def test_missing_variable_makes_the_comparison_false(op: str) -> None:
    assert req(f"MISSING {op} 1") is False
    if op in ("=", "!="):
        assert req(f'MISSING {op} "*"') is False
    assert req(f"!(MISSING {op} 1)") is True


@pytest.mark.parametrize("text", ["", "   ", "\t\n "])
def test_empty_requirements_are_true(text: str) -> None:
    requirement = parse_requirements(text)
    assert requirement.matches(lookup({})) is True
    assert requirement.variables == frozenset()


def test_combinators() -> None:
    assert req('ARCH = "x86_64" & FREE_CPU > 100') is True
    assert req('ARCH = "x86_64" & FREE_CPU > 1000') is False
    assert req('ARCH = "i686" | FREE_CPU > 100') is True
    assert req('ARCH = "i686" | FREE_CPU > 1000') is False
    assert req('!ARCH = "i686"') is True
    assert req('!!ARCH = "i686"') is False
    assert req('!(ARCH = "i686")') is True
    assert req("((((ID = 7))))") is True


def test_and_or_group_left_to_right_like_opennebula() -> None:
    """expr_bool.y declares `%left '!' '&' '|'`: one precedence level, left to right."""
    # a | b & c == (a | b) & c  (not a | (b & c) as in C)
    assert req("ID = 7 | ID = 1 & ID = 2") is False
    assert req("ID = 7 | (ID = 1 & ID = 2)") is True
    # a & b | c == (a & b) | c
    assert req("ID = 1 & ID = 2 | ID = 7") is True
    assert req("ID = 1 & (ID = 2 | ID = 7)") is False
    # ! applies to the comparison or parenthesis right after it
    assert req("!ID = 1 & ID = 7") is True
    assert req("!(ID = 1 & ID = 7)") is True
    assert req("!ID = 7 | ID = 7") is True
    assert req("!(ID = 7 | ID = 7)") is False
    assert req("ID = 7 & !ID = 1 | ID = 3") is True


def test_requirement_object() -> None:
    requirement = parse_requirements('ARCH = "x86*" & (FREE_CPU > 100 | !NAME = "a")')
    assert requirement(lookup()) is True  # callable
    assert requirement.variables == {"ARCH", "FREE_CPU", "NAME"}
    assert parse_requirements('ARCH = "x86*" & (FREE_CPU > 100 | !NAME = "a")') is requirement


def test_no_eval_anywhere() -> None:
    # a Python expression is not a REQUIREMENTS expression
    with pytest.raises(ExpressionError):
        parse_requirements("__import__('os').system('true')")
    with pytest.raises(ExpressionError):
        parse_rank("__import__('os')")


# ----------------------------------------------------------------- REQUIREMENTS: errors


@pytest.mark.parametrize(("text", "column", "fragment"), [
    ("FREE_CPU >= 100", 10, "'>=' is not an operator; use '>' or '=' joined with '|', "
                            "e.g. (FREE_CPU > 100 | FREE_CPU = 100)"),
    ("FREE_CPU<=100", 9, "'<=' is not an operator; use '<' or '='"),
    ("A => 1", 3, "'=>' is not an operator"),
    ("A == 1", 3, "'==' is not an operator; use '='"),
    ("A = 1 && B = 2", 7, "'&&' is not an operator; use '&'"),
    ("A = 1 || B = 2", 7, "'||' is not an operator; use '|'"),
    ('A > "x"', 3, "'>' compares numbers, and \"x\" is a string"),
    ("A < b", 3, "'<' compares numbers"),
    ("HOSTNAME = node*", 12, 'quote glob patterns: HOSTNAME = "node*"'),
    ('A = "abc', 5, "this string has no closing '\"'"),
    ("(A = 1", 7, "ends early; expected ')' to close the '(' at column 1"),
    ("A = 1)", 6, "unexpected ')'"),
    ("A = 1 B = 2", 7, "unexpected 'B'; expected '&', '|' or the end"),
    ("5 > A", 1, "a comparison starts with an attribute name"),
    ('"A" = 1', 1, "a comparison starts with an attribute name"),
    ("A", 2, "ends early; expected '=', '!=', '>' or '<' after A"),
    ("A =", 4, "ends early; expected a number or a \"quoted string\""),
    ("A = 1 &", 8, "ends early; expected an attribute name"),
    ("A ~ 1", 3, "unexpected character '~'"),
    ("A = 1 & | B = 2", 9, "unexpected '|'"),
    ("A = + 1", 5, "unexpected '+'"),
    ("A = 1.", 6, "unexpected character '.'"),
])
def test_requirement_errors_have_columns(text: str, column: int, fragment: str) -> None:
    err = error(parse_requirements, text)
    assert err.kind == "REQUIREMENTS"
    assert err.column == column
    assert fragment in err.message
    assert str(err) == f"REQUIREMENTS: column {column}: {err.message}"
    assert isinstance(err, InvalidRequest)


def test_errors_are_raised_fresh_every_time() -> None:
    first = error(parse_requirements, "A >= 1")
    second = error(parse_requirements, "A >= 1")
    assert first is not second and str(first) == str(second)


def test_deep_nesting_is_an_error_not_a_crash() -> None:
    err = error(parse_requirements, "(" * 5000 + "A = 1" + ")" * 5000)
    assert "nested more than" in err.message
    err = error(parse_requirements, "!" * 5000 + "A = 1")
    assert "nested more than" in err.message
    err = error(parse_rank, "-" * 5000 + "1")
    assert "nested more than" in err.message
    assert req("(" * 30 + "ID = 7" + ")" * 30) is True


def test_long_flat_expressions_are_fine() -> None:
    text = " | ".join(f"ID = {i}" for i in range(3000))
    assert req(text) is True
    assert len(parse_requirements(text).variables) == 1


# ----------------------------------------------------------------- RANK


@pytest.mark.parametrize(("text", "expected"), [
    ("", 0), ("  ", 0), ("42", 42), ("2.9", 2), ("-2.9", -2),  # truncation toward zero
    ("FREE_CPU", 350), ("- RUNNING_VMS", -3), ("-RUNNING_VMS", -3), ("--RUNNING_VMS", 3),
    ("FREE_MEM / 1024 + FREE_CPU", 352), ("FREE_CPU - RUNNING_VMS * 100", 50),
    ("(FREE_CPU - RUNNING_VMS) * 100", 34700), ("10 - 4 - 3", 3), ("24 / 4 / 2", 3),
    ("2 + 3 * 4", 14), ("(2 + 3) * 4", 20), ("-2 * -3", 6), ("1 - -1", 2), ("3 -5", -2),
    ("7 / 2", 3), ("-7 / 2", -3), ("SPEED * 10", 25), ("SPEED", 2),
    ("MISSING", 0), ("MISSING + 5", 5), ("WORD + 1", 1), ("EMPTY + 1", 1),  # not numbers: 0
    ("NAME", 0), ("ID * 2", 14), ("NEG", -4),
    ("FREE_CPU / 0", 0), ("FREE_CPU / MISSING + 1", 1), ("1 / (RUNNING_VMS - 3)", 0),
    ("FREE_CPU / 1000", 0), ("FREE_CPU / -1000", 0),
])
def test_rank_values(text: str, expected: int) -> None:
    assert rank(text) == expected


def test_rank_is_an_int() -> None:
    assert type(rank("FREE_MEM / 3")) is int
    assert rank("FREE_MEM / 3") == 682


def test_rank_overflow_is_zero() -> None:
    big = " * ".join(["1000000000"] * 40)
    assert rank(big) == 0
    assert rank(f"{big} - {big}") == 0


def test_rank_object() -> None:
    parsed = parse_rank("FREE_MEM / 1024 + FREE_CPU")
    assert parsed.variables == {"FREE_MEM", "FREE_CPU"}
    assert parse_rank("FREE_MEM / 1024 + FREE_CPU") is parsed
    assert parse_rank("").variables == frozenset()


@pytest.mark.parametrize(("text", "column", "fragment"), [
    ("FREE_CPU +", 11, "ends early; expected a number, an attribute name, '-' or '('"),
    ("(FREE_CPU", 10, "expected ')' to close the '(' at column 1"),
    ("FREE_CPU FREE_MEM", 10, "unexpected 'FREE_MEM'; expected an operator"),
    ('"FREE_CPU"', 1, "a string has no numeric value"),
    ("FREE_CPU > 1", 10, "unexpected '>'"),
    ("FREE_CPU % 2", 10, "unexpected character '%'"),
    ("* 2", 1, "unexpected '*'"),
    ("+2", 1, "unexpected '+'"),
])
def test_rank_errors_have_columns(text: str, column: int, fragment: str) -> None:
    err = error(parse_rank, text)
    assert err.kind == "RANK"
    assert err.column == column
    assert fragment in err.message
    assert str(err).startswith(f"RANK: column {column}: ")


# ----------------------------------------------------------------- values and trends


def test_number_reading() -> None:
    assert as_number("12") == 12.0 and as_number(" 1.5 ") == 1.5 and as_number("-3") == -3
    assert as_number("1e3") == 1000.0 and as_number(7) == 7.0
    for text in ("", "abc", "nan", "inf", "1_000", "0x10", "1.2.3"):
        assert as_number(text) is None, text
    assert as_text(3) == "3" and as_text(3.0) == "3" and as_text(2.5) == "2.5"


SHARE = {"RUNNING_VMS": Trend.UP, "FREE_CPU": Trend.DOWN, "FREE_MEM": Trend.DOWN}


@pytest.mark.parametrize(("text", "trend"), [
    ("", Trend.CONST), ('ARCH = "x86_64"', Trend.CONST), ("MAX_CPU > 100", Trend.CONST),
    ("FREE_CPU > 100", Trend.DOWN), ("FREE_CPU < 100", Trend.UP),
    ("RUNNING_VMS < 5", Trend.DOWN), ("RUNNING_VMS > 5", Trend.UP),
    ("!RUNNING_VMS < 5", Trend.UP), ("RUNNING_VMS = 5", Trend.UNKNOWN),
    ('FREE_CPU = "1*"', Trend.UNKNOWN), ('ARCH = "x" & FREE_CPU > 1', Trend.DOWN),
    ("FREE_CPU > 1 | RUNNING_VMS < 3", Trend.DOWN),
    ("FREE_CPU > 1 & RUNNING_VMS > 3", Trend.UNKNOWN),
])
def test_requirement_trends(text: str, trend: Trend) -> None:
    assert parse_requirements(text).trend(SHARE) is trend


@pytest.mark.parametrize(("text", "trend"), [
    ("", Trend.CONST), ("SPEED * 3", Trend.CONST), ("RUNNING_VMS", Trend.UP),
    ("- RUNNING_VMS", Trend.DOWN), ("FREE_CPU", Trend.DOWN),
    ("FREE_MEM / 1024 + FREE_CPU", Trend.DOWN), ("FREE_CPU - RUNNING_VMS", Trend.DOWN),
    ("FREE_CPU + RUNNING_VMS", Trend.UNKNOWN), ("FREE_CPU * -2", Trend.UP),
    ("(1 - 3) * FREE_CPU", Trend.UP), ("FREE_CPU * 0", Trend.CONST),
    ("FREE_CPU / 0", Trend.CONST), ("FREE_CPU / -2", Trend.UP),
    ("1 / FREE_CPU", Trend.UNKNOWN), ("FREE_CPU * SPEED", Trend.UNKNOWN),
    ("SPEED / RUNNING_VMS", Trend.UNKNOWN), ("SPEED / 2 + 1", Trend.CONST),
])
def test_rank_trends(text: str, trend: Trend) -> None:
    assert parse_rank(text).trend(SHARE) is trend
