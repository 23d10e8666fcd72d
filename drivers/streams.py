"""Stream plumbing both runners use: pump a stream into a sink, feed stdin, run together."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Protocol

import asyncssh


class _Reader(Protocol):
    def read(self, n: int = -1) -> Awaitable[bytes]: ...


class _Writer(Protocol):
    def write(self, data: bytes) -> None: ...
    def drain(self) -> Awaitable[None]: ...


async def pump(reader: _Reader, sink: Callable[[bytes], None]) -> None:
    while chunk := await reader.read(65536):
        sink(chunk)


async def together(*coros: Awaitable[None]) -> None:
    """Run concurrently; the first exception cancels the others and propagates as is."""
    tasks = [asyncio.ensure_future(coro) for coro in coros]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def feed(writer: _Writer, data: bytes, close: Callable[[], None]) -> None:
    # The script may exit without reading its stdin: that is not a failure.
    with contextlib.suppress(BrokenPipeError, ConnectionResetError, asyncssh.Error):
        writer.write(data)
        await writer.drain()
    with contextlib.suppress(BrokenPipeError, ConnectionResetError, OSError, asyncssh.Error):
        close()
