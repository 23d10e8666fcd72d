"""Error answers: a status and a plain-text message (never XML: libcloud reads a failed
answer's body as text and puts it in the exception it raises).

In this dialect every refused operation is a 400 (ONE's occi-server answered 400 for
whatever OpenNebula refused, and libcloud documents 400 as the failure of a state change),
so InvalidState is a 400 too; other users' objects are answered exactly like missing ones.
"""

from __future__ import annotations

from core.errors import (
    CapacityExceeded,
    CloudError,
    Conflict,
    Forbidden,
    InvalidRequest,
    InvalidState,
    NotFound,
    Unauthorized,
)

REALM = 'Basic realm="Nubo OCCI-XML"'

STATUS: dict[type[CloudError], int] = {
    NotFound: 404,
    InvalidState: 400,
    InvalidRequest: 400,
    Conflict: 409,
    Unauthorized: 401,
    Forbidden: 403,
    CapacityExceeded: 503,
}


def status_of(exc: CloudError) -> int:
    """The HTTP status of a domain error (500 for one this table does not know)."""
    for kind in type(exc).__mro__:
        if kind in STATUS:
            return STATUS[kind]
    return 500
