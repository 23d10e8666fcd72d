"""Engine, sessions and schema migrations.

SQLite file by default; any SQLAlchemy URL (PostgreSQL in particular) through NUBO_DB.
The schema is owned by Alembic revisions in core/migrations, applied at start-up.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.pool import StaticPool
from sqlmodel import Session

MIGRATIONS = Path(__file__).with_name("migrations")
POOL_SIZE = 40  # anyio's default number of worker threads


def make_engine(url: str) -> Engine:
    """An engine tuned for the daemon: SQLite in WAL mode with a busy timeout."""
    if url.startswith("sqlite"):
        kwargs: dict[str, Any] = {"connect_args": {"check_same_thread": False, "timeout": 30}}
        if url in ("sqlite://", "sqlite:///:memory:"):
            kwargs["poolclass"] = StaticPool
        else:  # keep a connection per worker thread: opening one costs more than a request
            kwargs.update(pool_size=POOL_SIZE, max_overflow=POOL_SIZE)
        engine = create_engine(url, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        if "poolclass" in kwargs:  # one shared connection: nobody to queue behind
            event.listen(engine, "begin", _sqlite_begin)
        else:
            writer = _WriteLock(timeout=kwargs["connect_args"]["timeout"])
            event.listen(engine, "begin", writer.begin)
            event.listen(engine, "checkin", writer.release)
            event.listen(engine, "invalidate", writer.release)
        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (below)
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _sqlite_begin(conn: Any) -> None:
    """SQLite has no row locks: each transaction takes the write lock when it begins, so
    a unit of work that reads a row and then updates it cannot lose a concurrent update
    (PostgreSQL gets the same guarantee from SELECT ... FOR UPDATE, see `locked`)."""
    conn.exec_driver_sql("BEGIN IMMEDIATE")


class _WriteLock:
    """SQLite's write lock, queued for in this process before BEGIN IMMEDIATE asks SQLite.

    Threads that find SQLite's lock taken wait in its busy handler, which sleeps and polls
    (up to 100 ms a nap): under concurrent requests that is most of their latency. Here
    they wait on a lock that the holder hands on as soon as its connection returns to the
    pool. SQLite still takes its own lock, for other processes (they keep the busy timeout).
    A thread that already holds it and begins again (a unit of work nested on another
    connection) does not wait here: SQLite refuses it after its timeout, as before."""

    def __init__(self, *, timeout: float) -> None:
        self.timeout = timeout
        self._lock = threading.Lock()
        self._holder: tuple[Any, int] | None = None  # (DBAPI connection, thread id)

    def begin(self, conn: Any) -> None:
        dbapi_conn = conn.connection.dbapi_connection
        holder = self._holder
        if (holder is None or holder[1] != threading.get_ident()) and \
                self._lock.acquire(timeout=self.timeout):
            self._holder = (dbapi_conn, threading.get_ident())
        try:
            _sqlite_begin(conn)
        except BaseException:
            self.release(dbapi_conn)
            raise

    def release(self, dbapi_conn: Any, *_: Any) -> None:
        """When the holder's connection goes back to the pool (or is invalidated)."""
        holder = self._holder
        if holder is not None and holder[0] is dbapi_conn:
            self._holder = None
            self._lock.release()


def migrate(engine: Engine) -> None:
    """Bring the schema to the latest revision (creates it on an empty database).

    On SQLite, foreign keys are off while revisions rebuild tables (SQLite's own recipe
    for changing a table: a dropped and renamed parent would otherwise count as broken
    references), and checked before the transaction commits."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    sqlite = engine.dialect.name == "sqlite"
    with engine.connect() as conn:
        raw = conn.connection.dbapi_connection
        if sqlite and raw is not None:
            raw.execute("PRAGMA foreign_keys=OFF")  # outside any transaction, or it is ignored
        try:
            with conn.begin():
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
                if sqlite:
                    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                    if broken:
                        raise RuntimeError(f"migration left broken references: {broken[:5]}")
        finally:
            if sqlite and raw is not None:
                raw.execute("PRAGMA foreign_keys=ON")


# The unit of work that `one_unit` opened in this thread (context), if any
_ENCLOSING: ContextVar[tuple[Engine, Session] | None] = ContextVar("nubo_unit", default=None)


@contextmanager
def unit_of_work(engine: Engine) -> Iterator[Session]:
    """One short transaction: committed on success, rolled back on any error.

    Inside `one_unit` on the same engine it is that unit's session instead: the enclosing
    unit commits or rolls back everything at its end."""
    enclosing = _ENCLOSING.get()
    if enclosing is not None and enclosing[0] is engine:
        yield enclosing[1]
        enclosing[1].flush()  # what it wrote is there for statements run on the connection
        return
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


@contextmanager
def one_unit(engine: Engine) -> Iterator[Session]:
    """One transaction that every `unit_of_work` opened inside it joins: for a request made
    of several service calls that only read (one BEGIN and one COMMIT instead of one per
    call, and one consistent snapshot). Calls that write, and may fail half-way, keep
    their own units: a joined unit does not roll back alone."""
    with unit_of_work(engine) as session:
        token = _ENCLOSING.set((engine, session))
        try:
            yield session
        finally:
            _ENCLOSING.reset(token)
