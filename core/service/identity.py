"""Users, groups and authentication."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

from sqlalchemy import bindparam
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, delete, select

from core import db
from core.errors import Conflict, Forbidden, InvalidRequest, NotFound, Unauthorized
from core.models import (
    ADMIN_GROUP_ID,
    ADMIN_USER_ID,
    USERS_GROUP_ID,
    VM,
    Address,
    Group,
    Image,
    KeyPair,
    LoginToken,
    MixinMember,
    RequestToken,
    SecurityGroup,
    Tag,
    User,
    UserMixin,
    VMTemplate,
    VNet,
)
from core.service.context import Caller, Cloud

AUTH_DRIVERS = ("core", "public")


def hash_password(password: str) -> str:
    """OpenNebula's core driver stores the SHA1 hex of the password."""
    return hashlib.sha1(password.encode()).hexdigest()


def new_ec2_keys() -> tuple[str, str]:
    access = "AKIA" + secrets.token_hex(8).upper()
    return access, secrets.token_urlsafe(30)


def authenticate(cloud: Cloud, session_string: str) -> Caller:
    """Check a `user:password` session string (XML-RPC, CLI)."""
    name, sep, password = session_string.partition(":")
    if not sep or not name:
        raise Unauthorized("session string must be user:password")
    return check_password(cloud, name=name, password=password)


def check_password(cloud: Cloud, *, name: str, password: str) -> Caller:
    with cloud.session() as s:
        user = s.exec(select(User).where(User.name == name)).first()
    given = hash_password(password)
    if user is None or not hmac.compare_digest(given, user.password_hash):
        raise Unauthorized("authentication failed: wrong user name or password")
    if not user.enabled:
        raise Unauthorized(f"user {name} is disabled")
    assert user.id is not None
    return Caller(uid=user.id, gid=user.gid, name=user.name)


_USERS = User.__table__.c  # type: ignore[attr-defined]  # SQLModel does not type __table__
# Built once: every EC2 request runs it, and building a statement costs more than running it
_BY_ACCESS_KEY = sa_select(_USERS.id, _USERS.gid, _USERS.name, _USERS.enabled,
                           _USERS.ec2_secret_key).where(_USERS.ec2_access_key == bindparam("key"))


def caller_by_access_key(cloud: Cloud, access_key: str) -> tuple[Caller, str]:
    """The caller owning an EC2 access key, and its secret (for signature checks).

    Read from the database on every call, never cached: a deleted or disabled user, or a
    rotated secret, is refused from the next request on."""
    with db.read_unit(cloud.engine) as s:
        found = db.rows(s, _BY_ACCESS_KEY, {"key": access_key})
    row = found[0] if found else None
    if row is None or not row.enabled:
        raise Unauthorized("unknown access key")
    return Caller(uid=row.id, gid=row.gid, name=row.name), str(row.ec2_secret_key)


def bootstrap(cloud: Cloud, *, admin_password: str) -> None:
    """Create the groups and the oneadmin user on an empty database."""
    with cloud.session() as s:
        if s.get(Group, ADMIN_GROUP_ID) is None:
            s.add(Group(id=ADMIN_GROUP_ID, name="oneadmin"))
            s.add(Group(id=USERS_GROUP_ID, name="users"))
            s.flush()
        admin = s.get(User, ADMIN_USER_ID)
        if admin is None:
            access, secret = new_ec2_keys()
            s.add(
                User(
                    id=ADMIN_USER_ID,
                    name="oneadmin",
                    gid=ADMIN_GROUP_ID,
                    password_hash=hash_password(admin_password),
                    ec2_access_key=access,
                    ec2_secret_key=secret,
                )
            )
        elif admin.password_hash != hash_password(admin_password):
            admin.password_hash = hash_password(admin_password)
            s.add(admin)


def _require_admin(caller: Caller, what: str) -> None:
    if not caller.admin:
        raise Forbidden(f"only members of group oneadmin may {what}")


def _validate_name(name: str, kind: str) -> str:
    name = name.strip()
    if not name or any(c in name for c in ":\n\r\t ") or len(name) > 128:
        raise InvalidRequest(f"invalid {kind} name {name!r}: no blanks or ':', 1-128 chars")
    return name


def create_user(
    cloud: Cloud, caller: Caller, *, name: str, password: str, driver: str = "core",
    gid: int = USERS_GROUP_ID,
) -> int:
    _require_admin(caller, "create users")
    name = _validate_name(name, "user")
    if not password:
        raise InvalidRequest("the password must not be empty")
    if driver not in AUTH_DRIVERS:
        raise InvalidRequest(f"unknown auth driver {driver!r}; known: {', '.join(AUTH_DRIVERS)}")
    access, secret = new_ec2_keys()
    with cloud.session() as s:
        if s.exec(select(User).where(User.name == name)).first() is not None:
            raise Conflict(f"user {name} already exists")
        if s.get(Group, gid) is None:
            raise NotFound("group", gid)
        user = User(
            name=name, gid=gid, password_hash=hash_password(password), auth_driver=driver,
            ec2_access_key=access, ec2_secret_key=secret,
        )
        s.add(user)
        s.flush()
        assert user.id is not None
        return user.id


def get_user(cloud: Cloud, caller: Caller, *, user_id: int) -> User:
    if user_id == -1:
        user_id = caller.uid
    if not caller.admin and user_id != caller.uid:
        raise Forbidden(f"user {caller.name} may not see user {user_id}")
    with cloud.session() as s:
        user = s.get(User, user_id)
        if user is None:
            raise NotFound("user", user_id)
        return user


def list_users(cloud: Cloud, caller: Caller) -> list[User]:
    with cloud.session() as s:
        query = select(User).order_by(col(User.id))
        if not caller.admin:
            query = query.where(User.id == caller.uid)
        return list(s.exec(query))


def set_password(cloud: Cloud, caller: Caller, *, user_id: int, password: str) -> None:
    if not caller.admin and user_id != caller.uid:
        raise Forbidden(f"user {caller.name} may only change its own password")
    if not password:
        raise InvalidRequest("the password must not be empty")
    with cloud.session() as s:
        user = s.get(User, user_id)
        if user is None:
            raise NotFound("user", user_id)
        user.password_hash = hash_password(password)
        s.add(user)


def change_group(cloud: Cloud, caller: Caller, *, user_id: int, gid: int) -> None:
    _require_admin(caller, "change a user's group")
    with cloud.session() as s:
        user = s.get(User, user_id)
        if user is None:
            raise NotFound("user", user_id)
        if s.get(Group, gid) is None:
            raise NotFound("group", gid)
        if user_id == ADMIN_USER_ID:
            raise Forbidden("oneadmin stays in group oneadmin")
        user.gid = gid
        s.add(user)


def delete_user(cloud: Cloud, caller: Caller, *, user_id: int) -> None:
    _require_admin(caller, "delete users")
    if user_id == ADMIN_USER_ID:
        raise Forbidden("oneadmin cannot be deleted")
    with cloud.session() as s:
        user = s.get(User, user_id)
        if user is None:
            raise NotFound("user", user_id)
        live = s.exec(select(VM.id).where(VM.uid == user_id, col(VM.state) != 6)).first()
        if live is not None:
            raise Conflict(f"user {user.name} still owns VM {live}; delete its VMs first")
        kept: tuple[tuple[Any, str], ...] = (
            (Image, "image"), (VMTemplate, "template"), (VNet, "network"), (Address, "elastic IP"))
        for model, what in kept:
            owned = s.exec(select(model.id).where(model.uid == user_id)).first()
            if owned is not None:
                raise Conflict(f"user {user.name} still owns {what} {owned}; delete it first")
        # what only made sense with the user goes with it
        mixin_ids = select(UserMixin.id).where(UserMixin.uid == user_id)
        s.execute(delete(MixinMember).where(col(MixinMember.mixin_id).in_(mixin_ids)))
        owned_only: tuple[Any, ...] = (UserMixin, KeyPair, SecurityGroup, LoginToken,
                                       RequestToken, Tag)
        for table in owned_only:
            s.execute(delete(table).where(table.uid == user_id))
        s.delete(user)


def list_groups(cloud: Cloud, caller: Caller) -> list[Group]:
    with cloud.session() as s:
        query = select(Group).order_by(col(Group.id))
        if not caller.admin:
            query = query.where(Group.id == caller.gid)
        return list(s.exec(query))


def get_group(cloud: Cloud, caller: Caller, *, group_id: int) -> Group:
    if not caller.admin and group_id != caller.gid:
        raise Forbidden(f"user {caller.name} may not see group {group_id}")
    with cloud.session() as s:
        group = s.get(Group, group_id)
        if group is None:
            raise NotFound("group", group_id)
        return group


def create_group(cloud: Cloud, caller: Caller, *, name: str) -> int:
    _require_admin(caller, "create groups")
    name = _validate_name(name, "group")
    with cloud.session() as s:
        if s.exec(select(Group).where(Group.name == name)).first() is not None:
            raise Conflict(f"group {name} already exists")
        group = Group(name=name)
        s.add(group)
        s.flush()
        assert group.id is not None
        return group.id


def names(session: Session) -> tuple[dict[int, str], dict[int, str]]:
    """uid -> user name and gid -> group name, for rendering owners."""
    users = {u.id: u.name for u in session.exec(select(User)) if u.id is not None}
    groups = {g.id: g.name for g in session.exec(select(Group)) if g.id is not None}
    return users, groups


def owner_names(cloud: Cloud) -> tuple[dict[int, str], dict[int, str]]:
    """uid -> user name, gid -> group name, for front doors rendering owners."""
    with cloud.session() as s:
        return names(s)


def ec2_keys(cloud: Cloud, caller: Caller, *, user_id: int) -> tuple[str, str]:
    """The user's EC2 access key and secret (its owner or oneadmin only)."""
    user = get_user(cloud, caller, user_id=user_id)
    return user.ec2_access_key, user.ec2_secret_key
