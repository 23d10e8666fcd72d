"""The shape both background queues of the daemon share (core.image_copies,
core.hook_runs): rows of one table with a `status` (pending, running) are claimed a few at
a time in one short transaction (`FOR UPDATE SKIP LOCKED` where the database has it), each
run in a task of its own, and the loop sleeps until woken on its channel or IDLE seconds
pass. A row found `running` at start-up was cut off by a stop or a crash: `recover` puts it
back to `pending`, and it runs again.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, ClassVar

import anyio
from sqlmodel import SQLModel, col, select

from core.service.context import Cloud


class WorkLoop:
    model: ClassVar[type[SQLModel]]  # the table; rows have id, status, started
    channel: ClassVar[str]  # the wake-up that says a row was queued
    idle: ClassVar[float] = 5.0
    log: ClassVar[logging.Logger]

    def __init__(self, cloud: Cloud, limit: int) -> None:
        self.cloud = cloud
        self._limit = max(1, limit)
        self._tasks: set[asyncio.Task[None]] = set()
        self._busy: set[int] = set()

    def recover(self) -> int:
        """Rows left `running` go back to `pending`; how many."""
        with self.cloud.session() as s:
            rows: list[Any] = list(s.exec(select(self.model).where(
                col(self.model.status) == "running")))  # type: ignore[attr-defined]
            for row in rows:
                row.status = "pending"
                s.add(row)
                self.recovered(s, row)
            return len(rows)

    def recovered(self, session: Any, row: Any) -> None:
        """What else a row cut off by a stop needs (the image copies note it)."""

    def started(self, row: Any) -> None:
        """Stamp a row being claimed (its start time, attempts)."""

    async def run(self) -> None:
        while True:
            try:
                for row_id in await anyio.to_thread.run_sync(self._claim):
                    task = asyncio.create_task(self._guarded(row_id),
                                               name=f"{self.channel}-{row_id}")
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
            except Exception:  # the loop must survive a bad row or a lost DB connection
                self.log.exception("%s cycle failed", self.channel)
            await self.cloud.wakeups.wait(self.channel, self.idle)

    async def stop(self) -> None:
        """Cut running work off (it runs again at the next start)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def _claim(self) -> list[int]:
        free = self._limit - len(self._busy)
        if free <= 0:
            return []
        model: Any = self.model
        with self.cloud.session() as s:
            rows = s.exec(select(model).where(model.status == "pending")
                          .order_by(col(model.id)).limit(free)
                          .with_for_update(skip_locked=True)).all()
            for row in rows:
                row.status = "running"
                self.started(row)
                s.add(row)
            claimed = [int(row.id) for row in rows if row.id is not None]
        self._busy.update(claimed)  # only once the claim is committed
        return claimed

    async def _guarded(self, row_id: int) -> None:
        try:
            await self.execute(row_id)
        finally:
            self._busy.discard(row_id)

    async def execute(self, row_id: int) -> None:
        """Run one claimed row and record its outcome (never raise for a driver failure)."""
        raise NotImplementedError
