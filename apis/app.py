"""The ASGI app: every front door on one port, the daemon's loops in its lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from apis.xmlrpc.app import make_endpoint
from core.daemon import Daemon
from core.service.context import Cloud


def build(cloud: Cloud, daemon: Daemon | None) -> Starlette:
    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        if daemon is not None:
            await daemon.start()
        try:
            yield
        finally:
            if daemon is not None:
                await daemon.stop()

    async def root(_request: object) -> PlainTextResponse:
        return PlainTextResponse("Nubo: XML-RPC at /RPC2\n")

    routes = [
        Route("/RPC2", make_endpoint(cloud), methods=["POST", "GET"]),
        Route("/", root),
    ]
    return Starlette(routes=routes, lifespan=lifespan)
