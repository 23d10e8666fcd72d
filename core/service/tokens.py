"""Idempotent creations: a client's token names one request, whatever the retries.

The first call records (user, token, fingerprint of what was asked) in the same
transaction as what it creates; a retry finds the record and gets the first result; a
retry asking something else is refused; a concurrent twin loses on the unique
(uid, token) constraint and then finds the winner's record. One token namespace per
user: the kind ("vm", "image") is part of the fingerprint, so a token reused for another
kind of creation is a mismatch, never a silent answer about something else.
"""

from __future__ import annotations

from sqlmodel import Session, select

from core.errors import IdempotencyMismatch
from core.models import RequestToken
from core.service.context import Caller, Cloud


def earlier(cloud: Cloud, caller: Caller, *, token: str, kind: str,
            fingerprint: str) -> RequestToken | None:
    """The recorded request with this token, if any (IdempotencyMismatch if it differs)."""
    with cloud.session() as s:
        found = s.exec(select(RequestToken).where(
            RequestToken.uid == caller.uid, RequestToken.token == token)).first()
    if found is None:
        return None
    if found.kind != kind or found.fingerprint != fingerprint:
        raise IdempotencyMismatch(f"the token {token!r} was already used for a different request")
    return found


def record(session: Session, caller: Caller, *, token: str, kind: str, fingerprint: str,
           count: int = 1) -> RequestToken:
    """Claim the token inside the creating transaction (flush: a concurrent twin fails here
    with IntegrityError); set `first_id` before the transaction ends."""
    row = RequestToken(uid=caller.uid, token=token, fingerprint=fingerprint, kind=kind,
                       count=count)
    session.add(row)
    session.flush()
    return row
