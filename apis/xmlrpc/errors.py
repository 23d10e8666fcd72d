"""Domain errors as OpenNebula's XML-RPC error codes (reference §9), in one table."""

from __future__ import annotations

from core.errors import (
    CapacityExceeded,
    CloudError,
    Conflict,
    DriverFailed,
    Forbidden,
    InvalidRequest,
    InvalidState,
    NotFound,
    Unauthorized,
)

AUTHENTICATION = 0x100
AUTHORIZATION = 0x200
NO_EXISTS = 0x400
ACTION = 0x800
XML_RPC_API = 0x1000
INTERNAL = 0x2000

CODES: dict[type[CloudError], int] = {
    Unauthorized: AUTHENTICATION,
    Forbidden: AUTHORIZATION,
    NotFound: NO_EXISTS,
    InvalidState: ACTION,
    InvalidRequest: ACTION,
    Conflict: ACTION,
    CapacityExceeded: ACTION,
    DriverFailed: INTERNAL,
}


def code_for(exc: CloudError) -> int:
    for kind in type(exc).__mro__:
        if issubclass(kind, CloudError) and kind in CODES:
            return CODES[kind]
    return INTERNAL


class BadCall(Exception):
    """Wrong argument count or types for a method: the XML_RPC_API error."""
