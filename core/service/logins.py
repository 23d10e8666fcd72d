"""Login tokens (OpenNebula 4's one.user.login): a secret that stands in for a user's
password until it expires, for clients that should not hold the password (OCCI's
X-Auth-Token). Only the token's SHA-256 digest is stored; a disabled user's tokens stop
working at once."""

from __future__ import annotations

import hashlib
import secrets

from sqlmodel import col, delete, select

from core.errors import Forbidden, InvalidRequest, NotFound, Unauthorized
from core.models import LoginToken, User, now
from core.service.context import Caller, Cloud

DEFAULT_TTL = 3600
MAX_TTL = 30 * 24 * 3600


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def login(cloud: Cloud, caller: Caller, *, name: str = "", ttl: int = DEFAULT_TTL) -> str:
    """A new token for `name` (the caller itself unless an admin names another user),
    valid `ttl` seconds. A `ttl` of 0 or less revokes all the user's tokens instead and
    returns ""."""
    if ttl > MAX_TTL:
        raise InvalidRequest(f"a token lives at most {MAX_TTL} seconds")
    with cloud.session() as s:
        user = s.exec(select(User).where(User.name == (name or caller.name))).first()
        if user is None or user.id is None:
            raise NotFound("user", name)
        if user.id != caller.uid and not caller.admin:
            raise Forbidden(f"user {caller.name} may not log in as {user.name}")
        s.execute(delete(LoginToken).where(col(LoginToken.expires) < now()))
        if ttl <= 0:
            s.execute(delete(LoginToken).where(col(LoginToken.uid) == user.id))
            return ""
        token = secrets.token_urlsafe(32)
        s.add(LoginToken(uid=user.id, digest=_digest(token), expires=now() + ttl))
        return token


def caller_by_token(cloud: Cloud, token: str) -> Caller:
    with cloud.session() as s:
        row = s.exec(select(LoginToken).where(LoginToken.digest == _digest(token))).first()
        user = s.get(User, row.uid) if row is not None and row.expires >= now() else None
    if user is None or user.id is None:
        raise Unauthorized("the token is unknown or expired")
    if not user.enabled:
        raise Unauthorized(f"user {user.name} is disabled")
    return Caller(uid=user.id, gid=user.gid, name=user.name)
