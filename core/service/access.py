"""Who may see and touch what: the owner, or anyone in group oneadmin."""

from __future__ import annotations

from typing import Any, TypeVar

from sqlmodel import Session, SQLModel
from sqlmodel.sql.expression import SelectOfScalar

from core.errors import Forbidden, InvalidRequest, NotFound
from core.service.context import Caller

T = TypeVar("T", bound=SQLModel)

# OpenNebula pool filter flags
ALL = -2
MINE = -3
MINE_AND_GROUP = -1


def fetch(session: Session, model: type[T], ident: int, caller: Caller, kind: str, *,
          lock: bool = False) -> T:
    """The row, if it exists and the caller may act on it; `lock` holds it (FOR UPDATE)
    until the transaction ends, for read-modify-write."""
    row: Any = session.get(model, ident, with_for_update=lock)
    if row is None:
        raise NotFound(kind, ident)
    if not caller.owns(row.uid):
        raise Forbidden(f"user {caller.name} is not authorized to use {kind} {ident}")
    found: T = row
    return found


def restrict(query: SelectOfScalar[Any], model: Any, caller: Caller,
             flag: int = ALL) -> SelectOfScalar[Any]:
    """Apply a pool filter flag (-2 all visible, -3 mine, -1 mine and group's, >=0 a uid)."""
    uid_col: Any = model.uid
    gid_col: Any = model.gid
    if flag < -3:
        raise InvalidRequest(f"invalid pool filter {flag}")
    if flag == MINE:
        return query.where(uid_col == caller.uid)
    if flag == MINE_AND_GROUP:
        if caller.admin:
            return query.where((uid_col == caller.uid) | (gid_col == caller.gid))
        return query.where(uid_col == caller.uid)
    if flag >= 0:
        if not caller.admin and flag != caller.uid:
            return query.where(uid_col == -1000)  # nothing: not the caller's to see
        return query.where(uid_col == flag)
    if caller.admin:
        return query
    return query.where(uid_col == caller.uid)


def id_range(query: SelectOfScalar[Any], model: Any, start: int,
             end: int) -> SelectOfScalar[Any]:
    """OpenNebula's start/end id range; -1 as end means no upper bound."""
    id_col: Any = model.id
    if start >= 0:
        query = query.where(id_col >= start)
    if end >= 0:
        query = query.where(id_col <= end)
    return query
