"""OCCI's four header structures (Category, Link, X-OCCI-Attribute, X-OCCI-Location), read
from and written to HTTP headers (text/occi) or body lines (text/plain).

One quote-aware splitter serves both renderings. Input is read liberally, as real clients
send it (reference §3.3, §4.7): comma-joined or repeated headers, a stray or trailing
`;`, an unquoted or missing class, bare attribute values, CRLF, LF or LFCR line ends.
Output is strict: the spec's parameter order, one space after each `;`, no spaces
around `=`, so clients that match strings still find what they look for.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from core.errors import InvalidRequest

Value = str | int | float | bool

FIELDS = ("category", "link", "x-occi-attribute", "x-occi-location")
_TERM = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*\Z")
_ATTR_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_\-]*(\.[A-Za-z0-9_\-]+)*\Z")
_NUMBER = re.compile(r"-?\d+(\.\d+)?([eE][-+]?\d+)?\Z")


class OcciSyntaxError(InvalidRequest):
    """A request whose OCCI rendering cannot be read: answered 400."""


@dataclass
class Category:
    term: str
    scheme: str
    cls: str = ""  # kind, mixin, action; "" when the client left it out
    title: str = ""
    rel: str = ""
    location: str = ""
    attributes: str = ""
    actions: str = ""

    @property
    def type_id(self) -> str:
        return self.scheme + self.term


@dataclass
class Link:
    target: str
    rel: str = ""
    self_: str = ""
    categories: list[str] = field(default_factory=list)
    attributes: dict[str, Value] = field(default_factory=dict)


@dataclass
class Message:
    """Everything an OCCI request (or response) carries, whatever its rendering."""

    categories: list[Category] = field(default_factory=list)
    links: list[Link] = field(default_factory=list)
    attributes: dict[str, Value] = field(default_factory=dict)
    locations: list[str] = field(default_factory=list)


# --- splitting ---

def split(text: str, sep: str) -> list[str]:
    """Split on `sep` outside double quotes (backslash escapes inside quotes)."""
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for ch in text:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\" and quoted:
            current.append(ch)
            escaped = True
        elif ch == '"':
            current.append(ch)
            quoted = not quoted
        elif ch == sep and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    if quoted:
        raise OcciSyntaxError(f"unterminated quoted string in {text!r}")
    parts.append("".join(current))
    return [p.strip() for p in parts]


def unquote(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return re.sub(r"\\(.)", r"\1", text[1:-1])
    return text


def quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _params(parts: Iterable[str], what: str) -> list[tuple[str, str, bool]]:
    """`name=value` parameters: (lower-case name, unquoted value, was it quoted)."""
    found = []
    for part in parts:
        if not part:
            continue  # a stray or trailing `;`
        name, sep, value = part.partition("=")
        if not sep or not name.strip():
            raise OcciSyntaxError(f"{what}: expected name=value, not {part!r}")
        value = value.strip()
        found.append((name.strip().lower(), unquote(value), value.startswith('"')))
    return found


# --- reading ---

def parse_category(text: str) -> Category:
    parts = split(text, ";")
    term = unquote(parts[0])
    if not _TERM.match(term):
        raise OcciSyntaxError(f"Category: {term!r} is not a valid term")
    known = {name: value for name, value, _ in _params(parts[1:], "Category")}
    scheme = known.get("scheme", "")
    if not scheme:
        raise OcciSyntaxError(f"Category {term}: the scheme is missing")
    if scheme.endswith("#" + term):  # some clients append the term to the scheme
        scheme = scheme[: -len(term)]
    if not scheme.endswith("#"):
        raise OcciSyntaxError(f"Category {term}: a scheme ends with '#' ({scheme!r})")
    cls = known.get("class", "").lower()
    if cls not in ("", "kind", "mixin", "action"):
        raise OcciSyntaxError(f"Category {term}: class must be kind, mixin or action")
    return Category(term, scheme, cls, known.get("title", ""), known.get("rel", ""),
                    known.get("location", ""), known.get("attributes", ""),
                    known.get("actions", ""))


def parse_value(raw: str, quoted: bool) -> Value:
    """An attribute value: quoted strings stay strings; bare numbers and booleans are
    typed; any other bare token is a string (occi-os sent `1.0` with spaces)."""
    if quoted:
        return raw
    if raw in ("true", "false"):
        return raw == "true"
    if _NUMBER.match(raw):
        return float(raw) if any(c in raw for c in ".eE") else int(raw)
    return raw


def parse_attribute(text: str) -> tuple[str, Value]:
    name, sep, value = text.partition("=")
    name = name.strip()
    if not sep or not _ATTR_NAME.match(name):
        raise OcciSyntaxError(f"X-OCCI-Attribute: expected name=value, not {text!r}")
    value = value.strip()
    if value.startswith('"') and (len(value) < 2 or not value.endswith('"')):
        raise OcciSyntaxError(f"X-OCCI-Attribute {name}: unterminated quoted value")
    return name, parse_value(unquote(value), value.startswith('"'))


def parse_link(text: str) -> Link:
    parts = split(text, ";")
    target = parts[0].strip()
    if not (target.startswith("<") and target.endswith(">")) or len(target) < 3:
        raise OcciSyntaxError(f"Link: expected <target>, not {parts[0]!r}")
    link = Link(target[1:-1].strip())
    for name, value, quoted in _params(parts[1:], "Link"):
        if name == "rel":
            link.rel = value
        elif name == "self":
            link.self_ = value
        elif name == "category":
            link.categories = value.split()
        else:
            if not _ATTR_NAME.match(name):
                raise OcciSyntaxError(f"Link: {name!r} is not an attribute name")
            link.attributes[name] = parse_value(value, quoted)
    return link


def parse(fields: Sequence[tuple[str, str]]) -> Message:
    """A Message from (field name, value) pairs: the request headers under text/occi,
    the body lines under text/plain. Repeated fields and comma-joined values both count."""
    message = Message()
    for name, value in fields:
        name = name.strip().lower()
        if name not in FIELDS:
            continue
        for item in split(value, ","):
            if not item:
                continue
            if name == "category":
                message.categories.append(parse_category(item))
            elif name == "link":
                message.links.append(parse_link(item))
            elif name == "x-occi-attribute":
                key, parsed = parse_attribute(item)
                message.attributes[key] = parsed
            else:
                message.locations.append(unquote(item))
    return message


def body_fields(body: str) -> list[tuple[str, str]]:
    """text/plain: one `Name: value` per line; CRLF, LF and LFCR all end a line."""
    fields = []
    for line in re.split(r"\r\n|\n\r|\n|\r", body):
        if not line.strip() or line.strip() == "OK":
            continue
        name, sep, value = line.partition(":")
        if not sep or name.strip().lower() not in FIELDS:
            raise OcciSyntaxError(f"text/plain: expected Category:, Link:, X-OCCI-Attribute: "
                                  f"or X-OCCI-Location: lines, not {line[:80]!r}")
        fields.append((name, value))
    return fields


# --- writing ---

def render_category(c: Category) -> str:
    out = [c.term, f"scheme={quote(c.scheme)}", f"class={quote(c.cls)}"]
    for name, value in (("title", c.title), ("rel", c.rel), ("location", c.location),
                        ("attributes", c.attributes), ("actions", c.actions)):
        if value:
            out.append(f"{name}={quote(value)}")
    return "; ".join(out)


def render_value(value: Value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value) if isinstance(value, float) else str(value)
    return quote(value)


def render_attribute(name: str, value: Value) -> str:
    return f"{name}={render_value(value)}"


def render_link(link: Link) -> str:
    out = [f"<{link.target}>", f"rel={quote(link.rel)}"]
    if link.self_:
        out.append(f"self={quote(link.self_)}")
    if link.categories:
        out.append(f"category={quote(' '.join(link.categories))}")
    out += [render_attribute(k, v) for k, v in link.attributes.items()]
    return "; ".join(out)


def lines(message: Message) -> list[tuple[str, str]]:
    """The message as (field, value) pairs, one value each, in the usual order."""
    out = [("Category", render_category(c)) for c in message.categories]
    out += [("Link", render_link(link)) for link in message.links]
    out += [("X-OCCI-Attribute", render_attribute(k, v)) for k, v in message.attributes.items()]
    out += [("X-OCCI-Location", loc) for loc in message.locations]
    return out
