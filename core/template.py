"""OpenNebula 3.4's attribute language: VM templates, host templates and nubo.conf.

    # a comment runs to the end of the line
    NAME   = value                 unquoted: no blanks, = # , [ ] or "
    MEMORY = "512"                 quoted: \\" and \\\\ are escapes, may span lines
    EMPTY  =                       nothing before the newline: empty value
    DISK   = [ IMAGE = "Ubuntu",   a vector; newlines and comments may sit
               TARGET = hda ]      between its tokens
    DISK   = [ IMAGE = data ]      a repeated name keeps every copy, in order

Names are ``[A-Za-z0-9_]+`` and are upper-cased, keys inside vectors too; values keep
their case. One attribute per line. The XML form OpenNebula also accepts
(``<TEMPLATE><NAME>v</NAME><DISK><IMAGE>x</IMAGE></DISK></TEMPLATE>``, any root tag)
is recognised by its leading ``<``.

The parser is a hand-written recursive-descent scanner. Its regular expressions are
token-sized (a name and its '=', a run of value characters, the end of a line), which
keeps the per-character work in C: a 20-attribute template parses in a few microseconds.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator
from xml.parsers.expat import ErrorString

from core.errors import InvalidRequest

Vector = dict[str, str]
Value = str | Vector

__all__ = ["Template", "TemplateError", "Value", "Vector", "dumps", "parse"]

# Token patterns: each matches one token with the blanks around it; the possessive
# quantifiers (*+, ++) keep a failed match from backtracking through comments.
_BLANK = r"[ \t\r\f\v]"
_GAP = r"(?:[ \t\r\n\f\v]|#[^\n]*+)*+"  # blanks, newlines and comments
_NAME = re.compile(r"[A-Za-z0-9_]+")
_BARE = r'[^ \t\r\n\f\v=#,\[\]"]*+'  # an unquoted value, possibly empty
_ASSIGN = re.compile(rf"([A-Za-z0-9_]++){_BLANK}*+={_BLANK}*+({_BARE})")  # NAME = bare
_KEY = re.compile(rf"([A-Za-z0-9_]++){_GAP}={_GAP}({_BARE})")  # KEY = bare, in a vector
_LINE_END = re.compile(rf"{_BLANK}*+(?:#[^\n]*+)?(?:\n{_GAP}|\Z)")  # after a value
_SEPARATOR = re.compile(rf"{_GAP}(?:(\])|,{_GAP})")  # group 1 is set at the closing ']'
_CLOSE = re.compile(rf"{_GAP}\]")
_BLANKS = re.compile(rf"{_BLANK}*+")
_GAPS = re.compile(_GAP)
_END_OF_LINE = ("", "\n", "#")


def _skip(pattern: re.Pattern[str], text: str, pos: int) -> int:
    """The position after ``pattern`` (one that matches the empty string) at ``pos``."""
    m = pattern.match(text, pos)
    return m.end() if m else pos


class TemplateError(InvalidRequest):
    """A template that does not parse; ``line`` and ``column`` are 1-based."""

    def __init__(self, reason: str, line: int, column: int) -> None:
        super().__init__(f"line {line}, column {column}: {reason}")
        self.reason = reason
        self.line = line
        self.column = column


def _error(text: str, pos: int, reason: str) -> TemplateError:
    line = text.count("\n", 0, pos) + 1
    column = pos - text.rfind("\n", 0, pos)
    return TemplateError(reason, line, column)


def _check_name(name: str) -> str:
    if not isinstance(name, str) or _NAME.fullmatch(name) is None:
        raise InvalidRequest(f"invalid attribute name {name!r}: use letters, digits and _")
    return name.upper()


def _normalize(name: str, value: Value) -> tuple[str, Value]:
    if isinstance(value, str):
        return _check_name(name), value
    if not isinstance(value, dict):
        raise TypeError(f"{name}: a value is a str or a dict[str, str], not {type(value)}")
    vector: Vector = {}
    for key, item in value.items():
        if not isinstance(item, str):
            raise TypeError(f"{name}/{key}: a vector value is a str, not {type(item)}")
        vector.setdefault(_check_name(key), item)
    return _check_name(name), vector


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Template:
    """An ordered list of attributes; a name may repeat (several DISK, NIC)."""

    __slots__ = ("attrs",)

    def __init__(self, attrs: Iterable[tuple[str, Value]] = ()) -> None:
        self.attrs: list[tuple[str, Value]] = [_normalize(n, v) for n, v in attrs]

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first scalar value of ``name`` (any case), or ``default``."""
        name = name.upper()
        for n, v in self.attrs:
            if n == name and isinstance(v, str):
                return v
        return default

    def vector(self, name: str) -> Vector | None:
        """The first vector value of ``name`` (any case), or None."""
        name = name.upper()
        for n, v in self.attrs:
            if n == name and isinstance(v, dict):
                return v
        return None

    def all(self, name: str) -> list[Value]:
        name = name.upper()
        return [v for n, v in self.attrs if n == name]

    def vectors(self, name: str) -> list[Vector]:
        name = name.upper()
        return [v for n, v in self.attrs if n == name and isinstance(v, dict)]

    def set(self, name: str, value: Value) -> None:
        """Replace every copy of ``name`` with one, at the first copy's place or at the end."""
        self._replace(name, [_normalize(name, value)])

    def add(self, name: str, value: Value) -> None:
        self.attrs.append(_normalize(name, value))

    def remove(self, name: str) -> None:
        name = name.upper()
        self.attrs = [(n, v) for n, v in self.attrs if n != name]

    def merge(self, other: Template) -> None:
        """OpenNebula's update in merge mode: each name of ``other`` replaces all copies here."""
        for name in other.names():
            self._replace(name, [(n, _copy(v)) for n, v in other.attrs if n == name])

    def _replace(self, name: str, new: list[tuple[str, Value]]) -> None:
        name = name.upper()
        kept: list[tuple[str, Value]] = []
        at = -1
        for n, v in self.attrs:
            if n == name:
                if at < 0:
                    at = len(kept)
            else:
                kept.append((n, v))
        if at < 0:
            at = len(kept)
        kept[at:at] = new
        self.attrs = kept

    def names(self) -> list[str]:
        """Distinct names, in order of first appearance."""
        return list(dict.fromkeys(n for n, _ in self.attrs))

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        name = name.upper()
        return any(n == name for n, _ in self.attrs)

    def __iter__(self) -> Iterator[tuple[str, Value]]:
        return iter(self.attrs)

    def __len__(self) -> int:
        return len(self.attrs)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Template):
            return NotImplemented
        return self.attrs == other.attrs

    def __repr__(self) -> str:
        return f"Template({self.attrs!r})"

    def dumps(self) -> str:
        """Canonical text: one ``NAME="value"`` per line, every value quoted."""
        lines: list[str] = []
        for name, value in self.attrs:
            if isinstance(value, str):
                lines.append(f"{name}={_quote(value)}\n")
            elif value:
                pairs = ",\n  ".join(f"{k}={_quote(v)}" for k, v in value.items())
                lines.append(f"{name}=[\n  {pairs} ]\n")
            else:
                lines.append(f"{name}=[ ]\n")
        return "".join(lines)

    def to_xml(self, root: str = "TEMPLATE") -> ET.Element:
        """``<ROOT><NAME>value</NAME><DISK><K>v</K></DISK></ROOT>``."""
        top = ET.Element(root)
        for name, value in self.attrs:
            element = ET.SubElement(top, name)
            if isinstance(value, str):
                element.text = value
            else:
                for key, item in value.items():
                    ET.SubElement(element, key).text = item
        return top


def updated(stored: str, new: Template, *, merge: bool) -> Template:
    """OpenNebula's update of an object's template: `new` replaces the `stored` one, or
    (merge) each of its names replaces that name's copies there."""
    if not merge:
        return new
    current = parse(stored)
    current.merge(new)
    return current


def required_name(t: Template, kind: str) -> str:
    """The NAME of a `kind` template (an image, a datastore, a VM template), stripped; an
    InvalidRequest without one."""
    name = (t.get("NAME") or "").strip()
    if not name:
        raise InvalidRequest(f"the {kind} template needs a NAME")
    return name


def _copy(value: Value) -> Value:
    return value if isinstance(value, str) else dict(value)


def dumps(t: Template) -> str:
    return t.dumps()


def strings(text: str) -> dict[str, str]:
    """The single-valued attributes of a template's text by name (vectors left out): what
    drivers and expressions read of a host."""
    return {name: value for name, value in parse(text) if isinstance(value, str)}


def parse(text: str) -> Template:
    """Parse the attribute language, or the XML form when the text starts with ``<``."""
    start = _skip(_GAPS, text, 1 if text.startswith("\ufeff") else 0)
    t = Template.__new__(Template)
    t.attrs = _parse_xml(text, start) if text.startswith("<", start) else _attributes(text, start)
    return t


def _attributes(text: str, pos: int) -> list[tuple[str, Value]]:
    """``NAME = value`` lines from ``pos``, which is at the first name."""
    attrs: list[tuple[str, Value]] = []
    n = len(text)
    while pos < n:
        m = _ASSIGN.match(text, pos)
        if m is None:
            raise _name_error(text, pos)
        name, pos = m.group(1), m.end()
        value: Value = m.group(2)
        if not value:
            ch = text[pos : pos + 1]
            if ch == '"':
                value, pos = _quoted(text, pos)
            elif ch == "[":
                value, pos = _vector(text, pos, name)
            elif ch not in _END_OF_LINE:
                raise _error(text, pos, f"expected a value for {name}, found {ch!r}")
        m = _LINE_END.match(text, pos)
        if m is None:
            pos = _skip(_BLANKS, text, pos)
            raise _error(text, pos, f"unexpected {text[pos]!r} after the value of {name}"
                         " (one attribute per line; quote values with blanks or"
                         ' = # , [ ] ")')
        pos = m.end()
        attrs.append((name.upper(), value))
    return attrs


def _vector(text: str, pos: int, name: str) -> tuple[Vector, int]:
    """``[ K = v, ... ]`` at ``pos``; return it and the position after ']'."""
    opening = pos
    vector: Vector = {}
    m = _CLOSE.match(text, pos + 1)
    if m is not None:
        return vector, m.end()
    pos = _skip(_GAPS, text, pos + 1)
    while True:
        m = _KEY.match(text, pos)
        if m is None:
            raise _name_error(text, pos, name, opening)
        key, value, pos = m.group(1), m.group(2), m.end()
        if not value:
            ch = text[pos : pos + 1]
            if ch == '"':
                value, pos = _quoted(text, pos)
            elif ch == "":
                raise _unterminated(text, opening, name)
            elif ch == "[":
                raise _error(text, pos, f"nested vectors are not allowed ({key} in vector {name})")
            elif ch != "," and ch != "]":
                raise _error(text, pos, f"expected a value for {key} in vector {name},"
                             f" found {ch!r}")
        vector.setdefault(key.upper(), value)  # OpenNebula keeps the first copy
        m = _SEPARATOR.match(text, pos)
        if m is None:
            pos = _skip(_GAPS, text, pos)
            if pos >= len(text):
                raise _unterminated(text, opening, name)
            raise _error(text, pos, f"expected ',' or ']' after {key} in vector {name},"
                         f" found {text[pos]!r}")
        pos = m.end()
        if m.group(1):
            return vector, pos
        if text.startswith("]", pos):  # a trailing comma is tolerated
            return vector, pos + 1


def _quoted(text: str, pos: int) -> tuple[str, int]:
    """The quoted string at ``pos``; return its value and the position after it."""
    begin = pos + 1
    close = text.find('"', begin)
    if close >= 0 and text.find("\\", begin, close) < 0:
        return text[begin:close], close + 1
    parts: list[str] = []
    while True:
        close = text.find('"', begin)
        if close < 0:
            raise _error(text, pos, "unterminated quoted value (no closing '\"')")
        slash = text.find("\\", begin, close)
        if slash < 0:
            parts.append(text[begin:close])
            return "".join(parts), close + 1
        parts.append(text[begin:slash])
        escaped = text[slash + 1 : slash + 2]
        if escaped == '"' or escaped == "\\":
            parts.append(escaped)
            begin = slash + 2
        else:  # a lone backslash is an ordinary character
            parts.append("\\")
            begin = slash + 1


def _name_error(text: str, pos: int, vector: str = "", opening: int = -1) -> TemplateError:
    """Explain why no ``NAME =`` (or ``KEY =`` inside ``vector``) starts at ``pos``."""
    where = f" in vector {vector}" if vector else ""
    m = _NAME.match(text, pos)
    if m is None:
        if pos >= len(text):
            return _unterminated(text, opening, vector)
        what = "a key" if vector else "an attribute name"
        return _error(text, pos, f"expected {what}{where}, found {text[pos]!r}")
    name, end = m.group(), m.end()
    pos = _skip(_GAPS if vector else _BLANKS, text, end)
    ch = text[pos : pos + 1]
    if vector and not ch:
        return _unterminated(text, opening, vector)
    if pos == end and ch not in _END_OF_LINE:
        return _error(text, pos, f"invalid character {ch!r} in name {name}{where}"
                      " (names use letters, digits and _)")
    return _error(text, pos, f"expected '=' after {name}{where}")


def _unterminated(text: str, opening: int, vector: str) -> TemplateError:
    return _error(text, opening, f"unterminated vector {vector} (no closing ']')")


def _parse_xml(text: str, start: int) -> list[tuple[str, Value]]:
    try:
        root = ET.fromstring(text[start:])
    except ET.ParseError as exc:
        line, offset = exc.position
        if line == 1:
            offset += start - (text.rfind("\n", 0, start) + 1)
        line += text.count("\n", 0, start)
        raise TemplateError(f"malformed XML template: {ErrorString(exc.code)}",
                            line, offset + 1) from None
    locate = _Locator(text, start)
    attrs: list[tuple[str, Value]] = []
    for child in root:
        name = locate.name(child)
        if len(child) == 0:
            attrs.append((name, child.text or ""))
            continue
        vector: Vector = {}
        for sub in child:
            key = locate.name(sub)
            if len(sub):
                raise locate.error(sub, f"nested vectors are not allowed ({key} in {name})")
            vector.setdefault(key, sub.text or "")
        attrs.append((name, vector))
    return attrs


class _Locator:
    """Checks XML element names; finds an element's start tag (roughly) for error positions."""

    def __init__(self, text: str, start: int) -> None:
        self.text = text
        self.cursor = start

    def name(self, element: ET.Element) -> str:
        tag = element.tag
        pos = self.text.find("<" + tag, self.cursor)
        if pos >= 0:
            self.cursor = pos + 1
        if _NAME.fullmatch(tag) is None:
            raise self.error(element, f"invalid attribute name {tag!r} in XML template"
                             " (names use letters, digits and _)")
        return tag.upper()

    def error(self, element: ET.Element, reason: str) -> TemplateError:
        pos = self.text.find("<" + element.tag, self.cursor - 1)
        return _error(self.text, pos if pos >= 0 else self.cursor, reason)
