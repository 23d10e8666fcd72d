"""What a handler gets (an authenticated request) and gives back (a status and a body)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from core.errors import Forbidden, NotFound
from core.service.context import Caller, Cloud

# the core's name of each kind of object this dialect shows
CORE_KIND = {"compute": "VM", "storage": "image", "network": "virtual network"}


@dataclass(frozen=True)
class Call:
    cloud: Cloud
    caller: Caller
    base: str  # scheme://host:port the client used, for hrefs
    ident: str  # the id in the path ("" for a collection)
    body: bytes
    query: Mapping[str, str]
    content_type: str


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes = b""  # an XML document, or nothing
    location: str = ""


@contextmanager
def hidden(kind: str, ident: int) -> Iterator[None]:
    """Another user's object is answered exactly as a missing one, in this dialect's words
    (`compute 5 does not exist`): nobody learns what others own."""
    try:
        yield
    except Forbidden:
        raise NotFound(kind, ident) from None
    except NotFound as exc:
        if exc.kind == CORE_KIND[kind] and exc.ident == ident:
            raise NotFound(kind, ident) from None
        raise
