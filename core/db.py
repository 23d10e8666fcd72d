"""Engine, sessions and schema migrations.

SQLite file by default; any SQLAlchemy URL (PostgreSQL in particular) through NUBO_DB.
The schema is owned by Alembic revisions in core/migrations, applied at start-up.
"""

from __future__ import annotations

import threading
from collections import namedtuple
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Dialect, Engine, Executable, create_engine, event
from sqlalchemy.orm.attributes import instance_state
from sqlalchemy.pool import StaticPool
from sqlmodel import Session, SQLModel

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
    conn.connection.driver_connection.execute("BEGIN IMMEDIATE")


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
        if _READING.get():
            conn.connection.driver_connection.execute("BEGIN")
            return
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


# Set while a `read_unit` is open in this thread (context)
_READING: ContextVar[bool] = ContextVar("nubo_reading", default=False)
# The read unit open in this thread (context), if any: its session and connection
_READER: ContextVar[tuple[Session, Connection] | None] = ContextVar("nubo_reader", default=None)
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


def joined(engine: Engine) -> bool:
    """Whether a `unit_of_work` opened now joins an enclosing `one_unit` (it does not
    commit when it ends)."""
    enclosing = _ENCLOSING.get()
    return enclosing is not None and enclosing[0] is engine


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


@contextmanager
def read_unit(engine: Engine) -> Iterator[Session]:
    """`one_unit` for work that only reads. On SQLite it begins a deferred transaction: in
    WAL mode that reads one consistent snapshot without SQLite's write lock, so readers
    neither queue behind writers nor make writers wait. Inside a `one_unit` it joins that.

    Its session runs on a connection the unit holds (`rows` uses it directly), and the
    session joins that connection's transaction rather than beginning its own."""
    enclosing = _ENCLOSING.get()
    if enclosing is not None and enclosing[0] is engine:
        yield enclosing[1]
        return
    reading = _READING.set(True)
    try:
        with engine.connect() as conn, conn.begin(), \
                Session(bind=conn, expire_on_commit=False) as session:
            entered = _ENCLOSING.set((engine, session))
            reader = _READER.set((session, conn))
            try:
                yield session
            finally:
                _READER.reset(reader)
                _ENCLOSING.reset(entered)
    finally:
        _READING.reset(reading)


# Statements built once, run without SQLAlchemy's per-execution work (SQLite)


@dataclass(frozen=True)
class _Slot:
    """One placeholder's value: the caller's parameter `name` (item `index` of it when it
    is a list), or the statement's own value (a literal in a where clause)."""

    name: str
    index: int | None
    constant: Any
    convert: Callable[[Any], Any] | None  # the column type's bind processor, if any

    def value(self, params: Mapping[str, Any]) -> Any:
        if not self.name:
            return self.constant
        given = params[self.name] if self.index is None else params[self.name][self.index]
        return given if self.convert is None else self.convert(given)


@dataclass(frozen=True)
class _Plan:
    sql: str
    slots: tuple[_Slot, ...]
    convert: tuple[Callable[[Any], Any] | None, ...] | None  # result processors, if any
    row: Any  # a namedtuple class named after the result columns


def rows(session: Session, stmt: Executable, params: Mapping[str, Any] | None = None
         ) -> list[Any]:
    """Run a statement built once (module level or lru_cache'd) in the session's transaction;
    its rows, as tuples with attribute access by column name.

    On SQLite the statement is expanded to SQL text on its first use (per parameter names
    and length of each list) and handed straight to the driver: SQLAlchemy spends several
    times longer preparing an execution (cache key, context, result metadata) than SQLite
    spends running a small query, which is what the front doors' hot paths are made of.
    Types keep their bind and result processors. Elsewhere it is an ordinary execution."""
    params = params or {}
    reader = _READER.get()
    conn = reader[1] if reader is not None and reader[0] is session else session.connection()
    if conn.dialect.name != "sqlite":
        return list(conn.execute(stmt, dict(params)))
    shape = tuple(sorted((k, len(v) if isinstance(v, list | tuple) else -1)
                         for k, v in params.items()))
    plan = _plan(stmt, conn.dialect, shape)
    raw = conn.connection.driver_connection
    assert raw is not None
    found = raw.execute(plan.sql, [slot.value(params) for slot in plan.slots]).fetchall()
    make, convert = plan.row._make, plan.convert
    if convert is None:
        return [make(r) for r in found]
    return [make(v if f is None else f(v) for f, v in zip(convert, r, strict=True))
            for r in found]


@dataclass(frozen=True)
class _Probe:
    """Stands for a caller's value while a plan is made, to find where it goes."""

    name: str
    index: int | None


@lru_cache(maxsize=1024)
def _plan(stmt: Any, dialect: Dialect, shape: tuple[tuple[str, int], ...]) -> _Plan:
    compiled: Any = stmt.compile(dialect=dialect)  # an SQLCompiler
    probes = {name: _Probe(name, None) if size < 0 else [_Probe(name, i) for i in range(size)]
              for name, size in shape}
    expanded = compiled.construct_expanded_state(probes)
    slots = []
    for placeholder in expanded.positiontup or ():
        value = expanded.parameters[placeholder]
        if isinstance(value, _Probe):
            convert = compiled.binds[value.name].type.bind_processor(dialect)
            slots.append(_Slot(value.name, value.index, None, convert))
        else:
            convert = compiled.binds[placeholder].type.bind_processor(dialect)
            slots.append(_Slot("", None, value if convert is None else convert(value), None))
    columns = stmt.selected_columns
    results = tuple(c.type.result_processor(dialect, None) for c in columns)
    row = namedtuple("Row", [c.key for c in columns], rename=True)  # type: ignore[misc]
    return _Plan(expanded.statement, tuple(slots), results if any(results) else None, row)


M = TypeVar("M", bound=SQLModel)


def detached(model: type[M], values: Sequence[Any]) -> M:
    """An instance of a table model made from its columns' values in table order, as the
    ORM's loader makes one (state and identity key set, no constructor run), then left
    detached, as if its session had closed."""
    mapper = model.__mapper__  # type: ignore[attr-defined]
    obj: M = mapper.class_manager.new_instance()
    obj.__dict__.update(zip(_keys(model), values, strict=True))
    instance_state(obj).key = mapper.identity_key_from_primary_key(
        [obj.__dict__[k] for k in _primary(model)])
    return obj


@cache
def _keys(model: type[SQLModel]) -> tuple[str, ...]:
    return tuple(c.key for c in model.__table__.columns)  # type: ignore[attr-defined]


@cache
def _primary(model: type[SQLModel]) -> tuple[str, ...]:
    return tuple(c.key for c in model.__table__.primary_key)  # type: ignore[attr-defined]


