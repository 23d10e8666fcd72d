"""Units of work: `one_unit` gathers the units opened inside it into one transaction, on
an SQLite file the threads of one process queue for the write lock before asking SQLite,
and read units take no lock there. `db.rows` runs prebuilt statements; `db.detached` makes
objects from their rows."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import bindparam, event, inspect
from sqlalchemy import select as sa_select
from sqlmodel import col, select

from core import db
from core.models import USERS_GROUP_ID, VM, Group, User
from core.service.context import Cloud
from tests.core.clouds import make_cloud


@pytest.fixture
def cloud(db_url: str, tmp_path: Path) -> Iterator[Cloud]:
    c = make_cloud(db_url, tmp_path)
    yield c
    c.engine.dispose()


def group_names(cloud: Cloud) -> set[str]:
    with cloud.session() as s:
        return {g.name for g in s.exec(select(Group))}


def test_units_inside_one_unit_join_it(cloud: Cloud) -> None:
    with db.one_unit(cloud.engine) as outer:
        with cloud.session() as inner:
            assert inner is outer
            inner.add(Group(id=50, name="joined"))
        # flushed when the joined unit ends: plain statements on the connection see it
        found = outer.connection().execute(select(Group.name).where(Group.id == 50)).scalar()
        assert found == "joined"
        with cloud.session() as again:
            assert again is outer
        own: list[bool] = []

        def elsewhere() -> None:
            with cloud.session() as s:
                own.append(s is not outer)

        other = threading.Thread(target=elsewhere)  # another thread has units of its own
        other.start()
        other.join()
        assert own == [True]
    assert "joined" in group_names(cloud)


def test_one_unit_rolls_back_the_units_it_joined(cloud: Cloud) -> None:
    with pytest.raises(RuntimeError), db.one_unit(cloud.engine):
        with cloud.session() as s:
            s.add(Group(id=51, name="undone"))
        raise RuntimeError("the request failed after a joined unit ended")
    assert "undone" not in group_names(cloud)
    with cloud.session() as s:  # units are their own again
        s.add(Group(id=52, name="kept"))
    assert "kept" in group_names(cloud)


def test_sqlite_writers_queue_in_process(tmp_path: Path) -> None:
    """With SQLite's busy timeout at zero a second writer would fail at once with
    'database is locked': here it waits for the first one's unit to end."""
    cloud = make_cloud(f"sqlite:///{tmp_path / 'nubo.db'}", tmp_path)

    @event.listens_for(cloud.engine, "connect")
    def no_busy_wait(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.execute("PRAGMA busy_timeout = 0")

    cloud.engine.dispose()  # connections from now on have no busy timeout
    holding = threading.Event()
    order: list[str] = []
    errors: list[BaseException] = []

    def second() -> None:
        holding.wait()
        try:
            with cloud.session() as s:
                s.add(Group(id=61, name="second"))
                s.flush()
                order.append("second")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    thread = threading.Thread(target=second)
    thread.start()
    with cloud.session() as s:
        s.add(Group(id=60, name="first"))
        s.flush()
        holding.set()
        thread.join(0.3)  # gives it time to reach BEGIN; it must still be waiting
        order.append("first")
    thread.join()
    cloud.engine.dispose()
    assert not errors and order == ["first", "second"]
    assert {"first", "second"} <= group_names(cloud)


def test_read_unit_reads_the_last_commit_while_a_writer_holds_the_lock(tmp_path: Path) -> None:
    """A read unit neither waits for the writer (SQLite's busy timeout is zero here, so
    waiting would fail at once) nor sees its uncommitted row."""
    cloud = make_cloud(f"sqlite:///{tmp_path / 'nubo.db'}", tmp_path)

    @event.listens_for(cloud.engine, "connect")
    def no_busy_wait(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.execute("PRAGMA busy_timeout = 0")

    cloud.engine.dispose()
    seen: list[set[str]] = []
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            with db.read_unit(cloud.engine) as s:
                seen.append({g.name for g in s.exec(select(Group))})
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    with cloud.session() as s:
        s.add(Group(id=70, name="uncommitted"))
        s.flush()  # the writer holds SQLite's write lock from its BEGIN IMMEDIATE on
        thread = threading.Thread(target=reader)
        thread.start()
        thread.join(10)
        assert not thread.is_alive(), "the read unit waited for the writer"
    cloud.engine.dispose()
    assert not errors, errors
    assert seen and "uncommitted" not in seen[0] and {"oneadmin", "users"} <= seen[0]
    assert "uncommitted" in group_names(cloud)


def test_read_unit_inside_one_unit_joins_it(cloud: Cloud) -> None:
    with db.one_unit(cloud.engine) as outer:
        outer.add(Group(id=71, name="pending"))
        outer.flush()
        with db.read_unit(cloud.engine) as inner:  # sees what the enclosing unit wrote
            found = db.rows(inner, _GROUP_NAMES, {"ids": [71]})
    assert [row.name for row in found] == ["pending"]


_GROUP_NAMES = sa_select(col(Group.id), col(Group.name)).where(
    col(Group.id).in_(bindparam("ids", expanding=True))).order_by(col(Group.id))
_OTHER_GROUPS = sa_select(col(Group.id)).where(
    col(Group.id).not_in(bindparam("ids", expanding=True))).order_by(col(Group.id))
_ENABLED_USERS = sa_select(col(User.id), col(User.name), col(User.enabled)).where(
    col(User.gid) == USERS_GROUP_ID, col(User.name) != bindparam("not_named")
).order_by(col(User.id))


def test_rows_binds_constants_runtime_values_and_lists(cloud: Cloud) -> None:
    with cloud.session() as s:
        s.add(Group(id=80, name="eighty"))
        s.add(Group(id=81, name="eighty-one"))
        s.add(User(name="on", gid=USERS_GROUP_ID, password_hash="x", ec2_access_key="on",
                   ec2_secret_key="s"))
        s.add(User(name="off", gid=USERS_GROUP_ID, password_hash="x", ec2_access_key="off",
                   ec2_secret_key="s", enabled=False))
        s.add(User(name="other", gid=USERS_GROUP_ID, password_hash="x", ec2_access_key="other",
                   ec2_secret_key="s"))
    with cloud.session() as s:
        for wanted in ([], [80], [81, 80, 999], [0, 1, 80, 81]):  # one plan per list length
            found = db.rows(s, _GROUP_NAMES, {"ids": wanted})
            expected = s.exec(select(Group).where(col(Group.id).in_(wanted))
                              .order_by(col(Group.id))).all()
            assert [(r.id, r.name) for r in found] == [(g.id, g.name) for g in expected]
            others = db.rows(s, _OTHER_GROUPS, {"ids": wanted})  # NOT IN () is everything
            assert [r.id for r in others] == sorted(
                g.id for g in s.exec(select(Group)) if g.id not in wanted)
        found = db.rows(s, _ENABLED_USERS, {"not_named": "other"})
    assert [(r.name, r.enabled) for r in found] == [("on", True), ("off", False)]
    assert all(type(r.enabled) is bool for r in found)  # the type's result processor ran


def test_detached_objects_read_like_loaded_ones(cloud: Cloud) -> None:
    with cloud.session() as s:
        vm = VM(name="probe", uid=0, gid=0, template='CPU = "1"', cpu=0.5, batch=None)
        s.add(vm)
        s.flush()
        row = db.rows(s, sa_select(*VM.__table__.columns).where(  # type: ignore[attr-defined]
            col(VM.id) == vm.id))[0]
        loaded = s.get(VM, vm.id)
        assert loaded is not None
        made = db.detached(VM, row)
        assert made.model_dump() == loaded.model_dump()
        assert made.cpu == 0.5 and made.batch is None and made.template == 'CPU = "1"'
        assert inspect(made).detached  # as if loaded and its session closed
