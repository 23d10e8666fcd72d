"""HTTP Basic as ONE's occi-server checked it: `user:` and the hex SHA1 of the password
(libcloud's default), or `user:` and the password itself (libcloud's `plain_auth=True`).

The database keeps the SHA1 hex of each password (OpenNebula's core driver), so the first
form compares the given hash with the stored one and the second hashes the password first.
Both comparisons run every time, in constant time, also for an unknown user.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

from sqlmodel import select

from core.errors import Unauthorized
from core.models import User
from core.service.context import Caller, Cloud

_NOBODY = hashlib.sha1(b"no such user").hexdigest()  # compared against when the user is unknown


def credentials(header: str) -> tuple[str, str]:
    """User name and secret from an `Authorization: Basic ...` header."""
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic" or not encoded:
        raise Unauthorized("this service needs HTTP Basic authentication")
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise Unauthorized("the Basic credentials are not valid base64 UTF-8") from None
    name, sep, secret = decoded.partition(":")
    if not sep or not name:
        raise Unauthorized("the Basic credentials must be user:password")
    return name, secret


def authenticate(cloud: Cloud, header: str) -> Caller:
    """The caller named by the header, if its secret matches; Unauthorized otherwise."""
    name, secret = credentials(header)
    with cloud.session() as s:
        user = s.exec(select(User).where(User.name == name)).first()
    stored = user.password_hash if user is not None else _NOBODY
    hashed = hmac.compare_digest(secret.encode(), stored.encode())
    plain = hmac.compare_digest(hashlib.sha1(secret.encode()).hexdigest().encode(), stored.encode())
    if user is None or not (hashed or plain):
        raise Unauthorized("authentication failed: wrong user name or password")
    if not user.enabled:
        raise Unauthorized(f"user {name} is disabled")
    assert user.id is not None
    return Caller(uid=user.id, gid=user.gid, name=user.name)
