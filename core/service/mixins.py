"""User-defined mixins (OCCI's tags): a user's named categories and the VMs, images and
networks tagged with them. Each user has their own: names, locations and members never
cross users."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, delete, select

from core.errors import Conflict, Forbidden, InvalidRequest, NotFound
from core.models import VM, Image, MixinMember, UserMixin, VNet
from core.service.access import fetch
from core.service.context import Caller, Cloud

KINDS: dict[str, type] = {"vm": VM, "image": Image, "vnet": VNet}


def list_mixins(cloud: Cloud, caller: Caller) -> list[UserMixin]:
    with cloud.session() as s:
        return list(s.exec(select(UserMixin).where(UserMixin.uid == caller.uid)
                           .order_by(col(UserMixin.id))))


def create_mixin(cloud: Cloud, caller: Caller, *, term: str, scheme: str, location: str,
                 title: str = "") -> int:
    location = location.strip("/") + "/"
    if location == "/":
        raise InvalidRequest("a mixin needs a location of its own")
    try:
        with cloud.session() as s:
            row = UserMixin(uid=caller.uid, gid=caller.gid, term=term, scheme=scheme,
                            title=title, location=location)
            s.add(row)
            s.flush()
            assert row.id is not None
            return row.id
    except IntegrityError:
        raise Conflict(f"you already have the mixin {scheme}{term} or the location "
                       f"/{location}") from None


def delete_mixin(cloud: Cloud, caller: Caller, *, mixin_id: int) -> None:
    with cloud.session() as s:
        row = _own(s, caller, mixin_id)
        s.execute(delete(MixinMember).where(col(MixinMember.mixin_id) == mixin_id))
        s.delete(row)


def _own(s: Session, caller: Caller, mixin_id: int) -> UserMixin:
    row = s.get(UserMixin, mixin_id)
    if row is None or row.uid != caller.uid:
        raise NotFound("mixin", mixin_id)
    return row


def members(cloud: Cloud, caller: Caller, *, mixin_id: int) -> list[tuple[str, int]]:
    """(kind, object id) of each member, in the order they were added."""
    with cloud.session() as s:
        _own(s, caller, mixin_id)
        rows = s.exec(select(MixinMember).where(MixinMember.mixin_id == mixin_id)
                      .order_by(col(MixinMember.id)))
        return [(m.kind, m.object_id) for m in rows]


def memberships(cloud: Cloud, caller: Caller, kind: str) -> dict[int, list[int]]:
    """object id -> the caller's mixin ids it belongs to, for one kind of object."""
    with cloud.session() as s:
        rows = s.exec(select(MixinMember.object_id, MixinMember.mixin_id)
                      .join(UserMixin, col(UserMixin.id) == col(MixinMember.mixin_id))
                      .where(UserMixin.uid == caller.uid, MixinMember.kind == kind))
        found: dict[int, list[int]] = {}
        for object_id, mixin_id in rows:
            found.setdefault(object_id, []).append(mixin_id)
        return found


def set_members(cloud: Cloud, caller: Caller, *, mixin_id: int,
                add: Iterable[tuple[str, int]] = (), remove: Iterable[tuple[str, int]] = (),
                replace: bool = False) -> None:
    """Tag (`add`) and untag (`remove`) objects; `replace` untags everything else first.
    Only objects the caller owns can be tagged."""
    with cloud.session() as s:
        _own(s, caller, mixin_id)
        if replace:
            s.execute(delete(MixinMember).where(col(MixinMember.mixin_id) == mixin_id))
        have = {(m.kind, m.object_id) for m in s.exec(
            select(MixinMember).where(MixinMember.mixin_id == mixin_id))}
        for kind, object_id in add:
            if kind not in KINDS:
                raise InvalidRequest(f"a {kind} cannot carry a mixin")
            try:
                fetch(s, KINDS[kind], object_id, caller, kind)
            except Forbidden:
                raise NotFound(kind, object_id) from None
            if (kind, object_id) not in have:
                s.add(MixinMember(mixin_id=mixin_id, kind=kind, object_id=object_id))
                have.add((kind, object_id))
        for kind, object_id in remove:
            s.execute(delete(MixinMember).where(
                col(MixinMember.mixin_id) == mixin_id, col(MixinMember.kind) == kind,
                col(MixinMember.object_id) == object_id))


def forget(cloud: Cloud, kind: str, object_id: int) -> None:
    """An object is gone: it belongs to no mixin any more."""
    with cloud.session() as s:
        s.execute(delete(MixinMember).where(col(MixinMember.kind) == kind,
                                            col(MixinMember.object_id) == object_id))
