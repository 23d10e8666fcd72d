"""What every service call needs: the database, the configuration, the wake-ups."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from sqlalchemy import Engine
from sqlmodel import Session

from core import db
from core.config import Config
from core.models import ADMIN_GROUP_ID, HostLogEntry, LogEntry
from core.wakeups import Wakeups

SCHEDULER = "scheduler"
DISPATCHER = "dispatcher"
MONITOR = "monitor"
HOOKS = "hooks"  # a hook run was queued (core.hook_runs)
# session.info key: wake-up channels to notify once the session's transaction committed
AFTER_COMMIT = "nubo.notify"


def notify_after_commit(session: Session, *channels: str) -> None:
    """Wake these loops when the caller's transaction has committed (not before: they
    would look for rows they cannot see yet)."""
    session.info.setdefault(AFTER_COMMIT, set()).update(channels)


@dataclass(frozen=True)
class Caller:
    """The authenticated identity a request acts as."""

    uid: int
    gid: int
    name: str

    @property
    def admin(self) -> bool:
        return self.gid == ADMIN_GROUP_ID

    def owns(self, uid: int) -> bool:
        return self.admin or uid == self.uid


@dataclass
class Cloud:
    engine: Engine
    config: Config
    wakeups: Wakeups = field(default_factory=Wakeups)

    @contextmanager
    def session(self) -> Iterator[Session]:
        inner = db.joined(self.engine)  # then the enclosing unit commits, later
        with db.unit_of_work(self.engine) as session:
            yield session
        channels = None if inner else session.info.pop(AFTER_COMMIT, None)
        if channels:
            self.wakeups.notify(*sorted(channels))


def vm_log(session: Session, vm_id: int, message: str, severity: str = "I") -> None:
    """Append a line to the VM's log, in the caller's transaction."""
    session.add(LogEntry(vm_id=vm_id, severity=severity, message=message))


def host_log(session: Session, host_id: int, message: str, severity: str = "I") -> None:
    """Append a line to the host's log (`nubo host log`), in the caller's transaction."""
    session.add(HostLogEntry(host_id=host_id, severity=severity, message=message))
