"""Units of work: `one_unit` gathers the units opened inside it into one transaction, and on
an SQLite file the threads of one process queue for the write lock before asking SQLite."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event
from sqlmodel import select

from core import db
from core.models import Group
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
