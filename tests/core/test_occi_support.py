"""Login tokens and user mixins in the core, on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlmodel import select

from core.errors import Conflict, Forbidden, InvalidRequest, NotFound, Unauthorized
from core.models import LoginToken
from core.service import images, logins, mixins, vms
from core.service.context import Cloud
from tests.core.clouds import ADMIN, VM_TEXT, make_cloud, user


@pytest.fixture
def cloud(db_url: str, tmp_path: Path) -> Iterator[Cloud]:
    c = make_cloud(db_url, tmp_path)
    yield c
    c.engine.dispose()


def test_login_tokens(cloud: Cloud) -> None:
    alice, bob = user(cloud, "alice"), user(cloud, "bob")
    token = logins.login(cloud, alice, ttl=60)
    assert logins.caller_by_token(cloud, token) == alice
    with cloud.session() as s:  # only a digest is stored
        assert token not in [row.digest for row in s.exec(select(LoginToken))]
    with pytest.raises(Forbidden):
        logins.login(cloud, bob, name="alice")
    assert logins.caller_by_token(cloud, logins.login(cloud, ADMIN, name="bob")) == bob
    with pytest.raises(InvalidRequest):
        logins.login(cloud, alice, ttl=10**9)
    with pytest.raises(Unauthorized):
        logins.caller_by_token(cloud, token + "x")
    assert logins.login(cloud, alice, ttl=0) == ""  # revokes
    with pytest.raises(Unauthorized):
        logins.caller_by_token(cloud, token)


def test_expired_tokens_stop_working(cloud: Cloud) -> None:
    alice = user(cloud, "alice")
    token = logins.login(cloud, alice, ttl=1)
    with cloud.session() as s:
        row = s.exec(select(LoginToken)).one()
        row.expires = int(time.time()) - 1
        s.add(row)
    with pytest.raises(Unauthorized, match="expired"):
        logins.caller_by_token(cloud, token)


def test_user_mixins(cloud: Cloud) -> None:
    alice, bob = user(cloud, "alice"), user(cloud, "bob")
    tag = mixins.create_mixin(cloud, alice, term="team", scheme="http://x.org/t#",
                              location="/team/")
    assert [m.location for m in mixins.list_mixins(cloud, alice)] == ["team/"]
    assert mixins.list_mixins(cloud, bob) == []
    with pytest.raises(Conflict):
        mixins.create_mixin(cloud, alice, term="team", scheme="http://x.org/t#",
                            location="/other/")
    mixins.create_mixin(cloud, bob, term="team", scheme="http://x.org/t#", location="/team/")
    with pytest.raises(InvalidRequest, match="location of its own"):
        mixins.create_mixin(cloud, alice, term="c", scheme="http://x.org/t#", location="/")
    vm = vms.create_vm(cloud, alice, text=VM_TEXT)
    image = images.create_image(cloud, alice, text='NAME = "i"\nPATH = "/i.img"')
    mixins.set_members(cloud, alice, mixin_id=tag, add=[("vm", vm), ("image", image)])
    mixins.set_members(cloud, alice, mixin_id=tag, add=[("vm", vm)])  # no duplicate
    assert mixins.members(cloud, alice, mixin_id=tag) == [("vm", vm), ("image", image)]
    assert mixins.memberships(cloud, alice, "vm") == {vm: [tag]}
    with pytest.raises(NotFound):  # bob may neither see alice's mixin nor tag her VM
        mixins.members(cloud, bob, mixin_id=tag)
    bobs = mixins.list_mixins(cloud, bob)[0].id or 0
    with pytest.raises(NotFound):
        mixins.set_members(cloud, bob, mixin_id=bobs, add=[("vm", vm)])
    mixins.set_members(cloud, alice, mixin_id=tag, add=[("image", image)], replace=True)
    assert mixins.members(cloud, alice, mixin_id=tag) == [("image", image)]
    mixins.forget(cloud, "image", image)
    assert mixins.members(cloud, alice, mixin_id=tag) == []
    mixins.delete_mixin(cloud, alice, mixin_id=tag)
    assert mixins.list_mixins(cloud, alice) == []
