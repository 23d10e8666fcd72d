"""EC2 Query requests → member-keyed dicts, driven by botocore's bundled EC2 model.

The exact inverse of botocore's `EC2Serializer`: a member's wire name is its `queryName`,
else its `locationName` with the first letter upper-cased, else the member name; lists are
flattened with 1-based indices (`Filter.1.Value.2`), structures nest with dots
(`Placement.AvailabilityZone`). Each structure shape compiles once, on first use, into a
table from wire name to member, so parsing is a few dict look-ups per parameter.

    parse(operation("DescribeInstances"),
          [("InstanceId.1", "i-1"), ("Filter.1.Name", "tag:Name"), ("Filter.1.Value.1", "web")])
    == {"InstanceIds": ["i-1"], "Filters": [{"Name": "tag:Name", "Values": ["web"]}]}
"""

from __future__ import annotations

import base64
import binascii
import functools
import os
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import botocore
from botocore.loaders import Loader
from botocore.model import OperationModel, OperationNotFoundError, ServiceModel, Shape

from apis.ec2.errors import Ec2Error, invalid_value, missing_parameter, unknown_parameter

API_VERSION = "2016-11-15"

# Request parameters that are not operation input: the caller strips them before parse().
ENVELOPE = frozenset({
    "Action", "Version",
    "AWSAccessKeyId", "Signature", "SignatureMethod", "SignatureVersion", "Timestamp", "Expires",
    "SecurityToken",
    "X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires", "X-Amz-Signature",
    "X-Amz-SignedHeaders", "X-Amz-Security-Token",
})


@functools.cache
def service_model() -> ServiceModel:
    """The EC2 model bundled with the pinned botocore (never ~/.aws/models)."""
    data_path = os.path.join(os.path.dirname(botocore.__file__), "data")
    loader = Loader(extra_search_paths=[data_path], include_default_search_paths=False)
    return ServiceModel(loader.load_service_model("ec2", "service-2", API_VERSION), "ec2")


def operation(name: str) -> OperationModel:
    """The model of one action (botocore caches it per name)."""
    try:
        return service_model().operation_model(name)
    except OperationNotFoundError:
        raise Ec2Error("InvalidAction", f"The action {name} is not valid for this web service.",
                       400) from None


# ---- scalar converters: (wire value, wire key) -> typed value -------------------------------

Convert = Callable[[str, str], Any]

_INTEGER = re.compile(r"[+-]?[0-9]+\Z")
_FLOAT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*(?:[eE][+-]?[0-9]+)?|\.[0-9]+(?:[eE][+-]?[0-9]+)?"
                    r"|Infinity|NaN|inf|nan)\Z")


def _string(value: str, key: str) -> str:
    return value


def _integer(value: str, key: str) -> int:
    if _INTEGER.match(value) is None:
        raise invalid_value(key, value, "expected an integer")
    return int(value)


def _float(value: str, key: str) -> float:
    if _FLOAT.match(value) is None:
        raise invalid_value(key, value, "expected a number")
    return float(value)


def _boolean(value: str, key: str) -> bool:
    lowered = value.lower()
    if lowered == "true":
        return True
    if lowered == "false":
        return False
    raise invalid_value(key, value, "expected true or false")


def _timestamp(value: str, key: str) -> datetime:
    try:
        if _FLOAT.match(value) is not None:
            return datetime.fromtimestamp(float(value), UTC)
        parsed = datetime.fromisoformat(value)
    except (ValueError, OverflowError, OSError):
        raise invalid_value(key, value, "expected an ISO 8601 timestamp") from None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _blob(value: str, key: str) -> bytes:
    try:  # whitespace is tolerated: some older tools wrap base64 at 76 columns
        return base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError):
        raise invalid_value(key, value, "expected base64") from None


_CONVERTERS: dict[str, Convert] = {
    "string": _string, "character": _string,
    "integer": _integer, "long": _integer,
    "float": _float, "double": _float,
    "boolean": _boolean,
    "timestamp": _timestamp,
    "blob": _blob,
}


# ---- the compiled tree --------------------------------------------------------------------

_SCALAR, _STRUCT, _LIST = 0, 1, 2


class _Slot:
    """What one wire segment leads to: a scalar, a structure or a list."""

    __slots__ = ("kind", "convert", "shape", "element", "_struct")

    def __init__(self, shape: Shape) -> None:
        self.shape = shape
        self.convert: Convert = _string
        self.element: _Slot | None = None
        self._struct: _Struct | None = None
        kind = shape.type_name
        if kind == "structure":
            self.kind = _STRUCT
        elif kind == "list":
            self.kind = _LIST
            self.element = _Slot(shape.member)
        elif kind in _CONVERTERS:
            self.kind = _SCALAR
            self.convert = _CONVERTERS[kind]
        else:  # the 2016-11-15 model has no maps (tests/apis/ec2/test_query.py checks)
            raise NotImplementedError(f"EC2 query parameters of type {kind} ({shape.name})")

    @property
    def struct(self) -> _Struct:
        if self._struct is None:
            self._struct = _struct(self.shape)
        return self._struct


class _Struct:
    """One structure shape: wire name → (member name, slot), and its required members."""

    __slots__ = ("fields", "members", "required")

    def __init__(self, shape: Shape) -> None:
        self.fields: dict[str, tuple[str, _Slot]] = {}
        self.members: dict[str, tuple[str, _Slot]] = {}
        for name, member in shape.members.items():
            entry = (name, _Slot(member))
            wire = _wire_name(member, name)
            self.fields[wire] = entry
            self.members[name] = (wire, entry[1])
        self.required: tuple[str, ...] = tuple(shape.required_members)


def _wire_name(member: Shape, name: str) -> str:
    serialization = member.serialization
    if "queryName" in serialization:
        return str(serialization["queryName"])
    if "name" in serialization:
        located = str(serialization["name"])
        return located[:1].upper() + located[1:]
    return name


@functools.cache
def _struct_by_name(name: str) -> _Struct:
    return _Struct(service_model().shape_for(name))


def _struct(shape: Shape) -> _Struct:
    # Wire names live on the member references inside the structure, so the structure's
    # shape name is a sufficient cache key.
    return _struct_by_name(shape.name)


def _index(segment: str, key: str) -> int:
    if segment.isascii() and segment.isdigit():
        return int(segment)  # 1-based from botocore, 0-based from libcloud's tag calls
    raise invalid_value(key, segment, "a list index must be a whole number")


# ---- parsing -------------------------------------------------------------------------------

def parse(op: OperationModel, params: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """Decoded form pairs (envelope removed) → a dict keyed by the model's member names."""
    shape = op.input_shape
    if shape is None:
        if params:
            raise unknown_parameter(params[0][0])
        return {}
    root = _struct(shape)
    tree: dict[Any, Any] = {}
    for key, value in params:
        _place(root, tree, key, value)
    _finish(root, tree, "")
    return tree


def _place(root: _Struct, tree: dict[Any, Any], key: str, value: str) -> None:
    parts = key.split(".")
    last = len(parts) - 1
    container = tree
    struct: _Struct | None = root
    slot: _Slot | None = None
    i = 0
    while True:
        segment = parts[i]
        at: Any
        if struct is not None:
            entry = struct.fields.get(segment)
            if entry is None:
                raise unknown_parameter(key)
            at, child = entry
        else:
            assert slot is not None and slot.element is not None
            at, child = _index(segment, key), slot.element
        if i == last and child.kind == _LIST and child.element is not None \
                and child.element.kind == _SCALAR and struct is not None:
            # `KeyName=k1` for `KeyName.1=k1`: libcloud's get_key_pair sends that
            inner = container.setdefault(at, {})
            if 0 in inner:
                raise invalid_value(key, value, "the parameter is given more than once")
            inner[0] = child.element.convert(value, key)
            return
        if i == last:
            if child.kind != _SCALAR:
                raise unknown_parameter(key)
            if at in container:
                raise invalid_value(key, value, "the parameter is given more than once")
            container[at] = child.convert(value, key)
            return
        if child.kind == _SCALAR:
            raise unknown_parameter(key)
        inner = container.get(at)
        if inner is None:
            inner = container[at] = {}
        container = inner
        slot = child
        struct = child.struct if child.kind == _STRUCT else None
        i += 1


def _finish(struct: _Struct, data: dict[str, Any], prefix: str) -> None:
    """Turn index dicts into ordered lists and check required members, depth first."""
    members = struct.members
    for name, value in data.items():
        wire, slot = members[name]
        if slot.kind == _STRUCT:
            _finish(slot.struct, value, f"{prefix}{wire}.")
        elif slot.kind == _LIST:
            data[name] = _finish_list(slot, value, f"{prefix}{wire}.")
    for name in struct.required:
        if name not in data:
            raise missing_parameter(prefix + members[name][0])


def _finish_list(slot: _Slot, items: dict[int, Any], prefix: str) -> list[Any]:
    element = slot.element
    assert element is not None
    indices = sorted(items)
    if element.kind == _STRUCT:
        struct = element.struct
        for index in indices:
            _finish(struct, items[index], f"{prefix}{index}.")
    elif element.kind == _LIST:
        return [_finish_list(element, items[index], f"{prefix}{index}.") for index in indices]
    return [items[index] for index in indices]
