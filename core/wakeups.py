"""Thread-safe wake-up signals from the service layer to the daemon's loops.

Service functions run in worker threads; the loops wait on asyncio events. `notify`
may be called from any thread (or with no loop at all, in tests of the core alone).
"""

from __future__ import annotations

import asyncio
import threading


class Wakeups:
    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._events: dict[str, asyncio.Event] = {}
        self._lock = threading.Lock()

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            self._loop = loop
            self._events = {}

    def _event(self, name: str) -> asyncio.Event:
        with self._lock:
            if name not in self._events:
                self._events[name] = asyncio.Event()
            return self._events[name]

    def notify(self, *names: str) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        for name in names:
            event = self._event(name)
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # loop closed between the check and the call
                return

    def take(self, name: str) -> bool:
        """True (and reset) if `name` was notified since the last wait/take."""
        event = self._event(name)
        was_set = event.is_set()
        event.clear()
        return was_set

    async def wait(self, name: str, timeout: float) -> bool:
        """Wait until notified or `timeout` passes; True when notified."""
        event = self._event(name)
        try:
            await asyncio.wait_for(event.wait(), timeout)
            return True
        except TimeoutError:
            return False
        finally:
            event.clear()
