"""Tags: a user's key/value labels on its own objects."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import bindparam
from sqlmodel import Session, col, delete, select

from core import db
from core.errors import InvalidRequest
from core.models import VM, Address, Image, KeyPair, SecurityGroup, Tag
from core.service.access import fetch
from core.service.context import Caller, Cloud

KINDS: dict[str, type] = {"vm": VM, "image": Image, "keypair": KeyPair,
                          "secgroup": SecurityGroup, "address": Address}
MAX_KEY, MAX_VALUE = 128, 256


def _check(kind: str, tags: Mapping[str, str | None]) -> None:
    if kind not in KINDS:
        raise InvalidRequest(f"objects of kind {kind!r} cannot be tagged")
    for key, value in tags.items():
        if not key or len(key) > MAX_KEY:
            raise InvalidRequest(f"a tag key must have 1 to {MAX_KEY} characters: {key!r}")
        if value is not None and len(value) > MAX_VALUE:
            raise InvalidRequest(f"tag {key}: a value has at most {MAX_VALUE} characters")


def set_tags(cloud: Cloud, caller: Caller, *, kind: str, ids: Iterable[int],
             tags: Mapping[str, str]) -> None:
    """Add or overwrite tags on each object (all or nothing)."""
    _check(kind, tags)
    with cloud.session() as s:
        for object_id in ids:
            owner: Any = fetch(s, KINDS[kind], object_id, caller, kind)
            existing = {t.key: t for t in s.exec(select(Tag).where(
                Tag.kind == kind, Tag.object_id == object_id))}
            for key, value in tags.items():
                row = existing.get(key) or Tag(kind=kind, object_id=object_id,
                                               uid=owner.uid, key=key)
                row.value = value
                s.add(row)


def delete_tags(cloud: Cloud, caller: Caller, *, kind: str, ids: Iterable[int],
                tags: Mapping[str, str | None]) -> None:
    """Remove tags; a None value removes the key whatever its value, no keys removes all."""
    _check(kind, tags)
    with cloud.session() as s:
        for object_id in ids:
            fetch(s, KINDS[kind], object_id, caller, kind)
            query = delete(Tag).where(col(Tag.kind) == kind, col(Tag.object_id) == object_id)
            if not tags:
                s.execute(query)
            for key, value in tags.items():
                one = query.where(col(Tag.key) == key)
                s.execute(one if value is None else one.where(col(Tag.value) == value))


def list_tags(cloud: Cloud, caller: Caller, *, kind: str | None = None) -> list[Tag]:
    with cloud.session() as s:
        query = select(Tag).order_by(col(Tag.kind), col(Tag.object_id), col(Tag.key))
        if kind is not None:
            query = query.where(Tag.kind == kind)
        if not caller.admin:
            query = query.where(Tag.uid == caller.uid)
        return list(s.exec(query))


def tags_of(session: Session, kind: str, ids: Iterable[int]) -> dict[int, dict[str, str]]:
    """object id -> {key: value}, for rendering objects with their tags."""
    wanted = list(ids)
    found: dict[int, dict[str, str]] = {}
    if not wanted:
        return found
    query = _TAGS_OF if len(wanted) <= 500 else _TAGS_OF_KIND
    for tag in db.rows(session, query, {"kind": kind, "ids": wanted}):  # rows suffice
        found.setdefault(tag.object_id, {})[tag.key] = tag.value
    return found


# Built once (front doors render tags on every listing): building costs more than running
_TAGS_OF_KIND = select(Tag.object_id, Tag.key, Tag.value).where(Tag.kind == bindparam("kind"))
_TAGS_OF = _TAGS_OF_KIND.where(col(Tag.object_id).in_(bindparam("ids", expanding=True)))
