"""The ASGI app: every front door on one port, the daemon's loops in its lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.routing import Route

from apis.ec2.app import make_endpoint as make_ec2_endpoint
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

    ec2 = make_ec2_endpoint(cloud)
    prefix = "/" + cloud.config.ec2_path.strip("/")
    routes = [
        Route("/RPC2", make_endpoint(cloud), methods=["POST", "GET"]),
        Route("/", ec2, methods=["GET", "POST"]),
    ]
    if prefix != "/":
        routes += [Route(prefix, ec2, methods=["GET", "POST"]),
                   Route(prefix + "/", ec2, methods=["GET", "POST"])]
    return Starlette(routes=routes, lifespan=lifespan)
