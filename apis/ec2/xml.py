"""Member-keyed result dicts → EC2 Query XML, driven by the operation's output shape.

What botocore's `EC2QueryParser` reads back: elements named by `locationName` (else the
member name), one `<item>` (or the list member's own `locationName`) per list entry, every
list container present even when empty (`<reservationSet/>` parses to `[]`, a missing one
to a `KeyError` in the caller's code), lower-case booleans, UTC timestamps with
milliseconds. The model lacks the rest, which is added here: the namespace with its
trailing slash, `requestId`, `<return>true</return>` on actions that answer nothing else,
and the `Response/Errors/Error` envelope.

Each structure shape compiles once into a table of member writers that append strings to
one list; the bytes are a single join. Keys that are not members, and values of the wrong
type, raise `ShapeMismatch` naming the path: handler bugs, never client errors.
"""

from __future__ import annotations

import base64
import math
import re
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from botocore.model import OperationModel, Shape

NAMESPACE = "http://ec2.amazonaws.com/doc/{version}/"
DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>\n'

Out = list[str]
Writer = Callable[[Any, Out], None]
Format = Callable[[Any], str]


class ShapeMismatch(ValueError):
    """A result that does not fit the output shape; `path` locates the offending value."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem
        self.steps: list[str] = []

    @property
    def path(self) -> str:
        return "".join(reversed(self.steps)).lstrip(".")

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


# ---- text ----------------------------------------------------------------------------------

# Characters to escape, plus those XML 1.0 cannot carry at all (dropped).
_SPECIAL = re.compile("[&<>\r\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_special = _SPECIAL.search


def escape(text: str) -> str:
    if _special(text) is None:
        return text
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _ILLEGAL.sub("", text.replace("\r", "&#13;"))


def _attribute(text: str) -> str:
    return escape(text).replace('"', "&quot;")


# ---- scalars: value → text -----------------------------------------------------------------

def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise ShapeMismatch(f"expected a string, got {type(value).__name__}")
    if _special(value) is None:
        return value
    return escape(value)


def _integer(value: Any) -> str:
    if type(value) is int:
        return str(value)
    if isinstance(value, int) and not isinstance(value, bool):  # IntEnum
        return str(int(value))
    raise ShapeMismatch(f"expected an integer, got {type(value).__name__}")


def _float(value: Any) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
        if math.isfinite(number):
            return repr(number)
        if math.isnan(number):
            return "NaN"
        return "Infinity" if number > 0 else "-Infinity"
    raise ShapeMismatch(f"expected a number, got {type(value).__name__}")


def _boolean(value: Any) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    raise ShapeMismatch(f"expected a bool, got {type(value).__name__}")


def _timestamp(value: Any) -> str:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ShapeMismatch("expected an aware datetime, got a naive one")
        moment = value.astimezone(UTC)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        try:
            moment = datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            raise ShapeMismatch(f"epoch seconds out of range: {value}") from None
    else:
        raise ShapeMismatch(f"expected a datetime, got {type(value).__name__}")
    return moment.isoformat(timespec="milliseconds")[:-6] + "Z"


def _blob(value: Any) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(value).decode("ascii")
    raise ShapeMismatch(f"expected bytes, got {type(value).__name__}")


_FORMATS: dict[str, Format] = {
    "string": _string, "character": _string,
    "integer": _integer, "long": _integer,
    "float": _float, "double": _float,
    "boolean": _boolean,
    "timestamp": _timestamp,
    "blob": _blob,
}


# ---- compiled shapes -----------------------------------------------------------------------

# A member is written inline (text, other scalars) or by a container writer (lists, structures).
_TEXT, _SCALAR, _CONTAINER = 0, 1, 2
Field = tuple[int, str, str, Format, Writer | None]


class _Struct:
    """One structure shape: member name → how to write it, and the lists always emitted."""

    __slots__ = ("name", "fields", "containers")

    def __init__(self, name: str) -> None:
        self.name = name
        self.fields: dict[str, Field] = {}
        self.containers: tuple[tuple[str, str], ...] = ()


_STRUCTS: dict[str, _Struct] = {}


def _struct(shape: Shape) -> _Struct:
    # Element names live on the member references inside the structure, so the shape name
    # is a sufficient key. The entry goes in before its members compile (recursive shapes).
    plan = _STRUCTS.get(shape.name)
    if plan is None:
        plan = _STRUCTS[shape.name] = _Struct(shape.name)
        containers = []
        for name, member in shape.members.items():
            tag = member.serialization.get("name") or name
            plan.fields[name] = _field(member, tag)
            if member.type_name == "list":
                containers.append((name, f"<{tag}/>"))
        plan.containers = tuple(containers)
    return plan


def _field(shape: Shape, tag: str) -> Field:
    open_, close = f"<{tag}>", f"</{tag}>"
    fmt = _FORMATS.get(shape.type_name)
    if fmt is _string:
        return (_TEXT, open_, close, fmt, None)
    if fmt is not None:
        return (_SCALAR, open_, close, fmt, None)
    return (_CONTAINER, open_, close, _string, _container(shape, open_, close, f"<{tag}/>"))


def _write_struct(plan: _Struct, value: Any, out: Out) -> None:
    if type(value) is not dict and not isinstance(value, Mapping):
        raise ShapeMismatch(f"expected a mapping for {plan.name}, got {type(value).__name__}")
    fields = plan.fields
    append = out.append
    for key, item in value.items():
        field = fields.get(key)
        if field is None:
            error = ShapeMismatch(f"{key!r} is not a member of {plan.name}")
            error.steps.append(f".{key}")
            raise error
        if item is None:
            continue
        kind, open_, close, fmt, writer = field
        try:
            if kind == _TEXT and type(item) is str and _special(item) is None:
                append(open_ + item + close)
            elif writer is None:
                append(open_ + fmt(item) + close)
            else:
                writer(item, out)
        except ShapeMismatch as error:
            error.steps.append(f".{key}")
            raise
    for key, empty in plan.containers:
        if value.get(key) is None:
            append(empty)


def _container(shape: Shape, open_: str, close: str, empty: str) -> Writer:
    """The writer of a structure or list value under `open_`/`close`."""
    kind = shape.type_name
    if kind == "structure":
        plan = _struct(shape)

        def structure(value: Any, out: Out) -> None:
            out.append(open_)
            _write_struct(plan, value, out)
            out.append(close)

        return structure
    if kind == "list":
        return _list(shape, open_, close, empty)
    raise NotImplementedError(f"EC2 output of type {kind} ({shape.name})")  # no maps in the model


def _list(shape: Shape, open_: str, close: str, empty: str) -> Writer:
    member = shape.member
    tag = member.serialization.get("name") or "item"
    if member.type_name in _FORMATS:
        fmt = _FORMATS[member.type_name]
        item_open, item_close = f"<{tag}>", f"</{tag}>"

        def scalars(value: Any, out: Out) -> None:
            if not isinstance(value, list | tuple):
                raise ShapeMismatch(f"expected a list, got {type(value).__name__}")
            if not value:
                out.append(empty)
                return
            out.append(open_)
            for index, item in enumerate(value):
                try:
                    out.append(item_open + fmt(item) + item_close)
                except ShapeMismatch as error:
                    error.steps.append(f"[{index}]")
                    raise
            out.append(close)

        return scalars
    element = _container(member, f"<{tag}>", f"</{tag}>", f"<{tag}/>")

    def items(value: Any, out: Out) -> None:
        if not isinstance(value, list | tuple):
            raise ShapeMismatch(f"expected a list, got {type(value).__name__}")
        if not value:
            out.append(empty)
            return
        out.append(open_)
        for index, item in enumerate(value):
            try:
                element(item, out)
            except ShapeMismatch as error:
                error.steps.append(f"[{index}]")
                raise
        out.append(close)

    return items


# ---- documents -----------------------------------------------------------------------------

class _Response:
    __slots__ = ("name", "plan", "default")

    def __init__(self, op: OperationModel) -> None:
        self.name = f"{op.name}Response"
        shape = op.output_shape
        self.plan = _struct(shape) if shape is not None else None
        # AWS answers `<return>true</return>` where nothing else is said; libcloud reads it.
        self.default: tuple[str, str] | None = ("", "<return>true</return>")
        if shape is not None:
            self.default = None
            for name, member in shape.members.items():
                if member.serialization.get("name") == "return":
                    self.default = (name, "<return>true</return>")


_RESPONSES: dict[str, _Response] = {}
# Structures enter _STRUCTS before their members compile; a response is published only once
# everything under it is complete, so compiling holds the lock and rendering never does.
_COMPILING = threading.Lock()


def _response(op: OperationModel) -> _Response:
    with _COMPILING:
        response = _RESPONSES.get(op.name)
        if response is None:
            response = _RESPONSES[op.name] = _Response(op)
        return response


def render(op: OperationModel, result: Mapping[str, Any], *, request_id: str, version: str) -> bytes:
    response = _RESPONSES.get(op.name) or _response(op)
    out = [DECLARATION, "<", response.name, ' xmlns="', NAMESPACE.format(version=_attribute(version)),
           '"><requestId>', escape(request_id), "</requestId>"]
    if response.plan is not None:
        try:
            _write_struct(response.plan, result, out)
        except ShapeMismatch as error:
            error.steps.append(response.plan.name)
            raise
    elif result:
        raise ShapeMismatch(f"{op.name} has no output members, got {sorted(result)}")
    if response.default is not None and result.get(response.default[0]) is None:
        out.append(response.default[1])
    out += ("</", response.name, ">")
    return "".join(out).encode()


def render_error(code: str, message: str, *, request_id: str) -> bytes:
    return (f"{DECLARATION}<Response><Errors><Error><Code>{escape(code)}</Code>"
            f"<Message>{escape(message)}</Message></Error></Errors>"
            f"<RequestID>{escape(request_id)}</RequestID></Response>").encode()
