"""The ASGI app: every front door on one port, the daemon's loops in its lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from apis.ec2.app import make_endpoint as make_ec2_endpoint
from apis.occi.app import looks_like_occi
from apis.occi.app import make_endpoint as make_occi_endpoint
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
    occi = make_occi_endpoint(cloud)

    async def root(request: Request) -> Response:
        """`/` is shared: a request naming an EC2 `Action` (or not looking like OCCI) is
        EC2's, anything else OCCI's."""
        if "Action" in request.query_params or await _form_names_action(request) or \
                not looks_like_occi(request):
            return await ec2(request)  # type: ignore[no-any-return]
        return await occi(request)  # type: ignore[no-any-return]

    prefix = "/" + cloud.config.ec2_path.strip("/")
    routes = [
        Route("/RPC2", make_endpoint(cloud), methods=["POST", "GET"]),
        Route("/", root, methods=["GET", "POST", "HEAD", "PUT", "DELETE"]),
    ]
    if prefix != "/":
        routes += [Route(prefix, ec2, methods=["GET", "POST"]),
                   Route(prefix + "/", ec2, methods=["GET", "POST"])]
    routes.append(Route("/{path:path}", occi, methods=OCCI_METHODS))
    return Starlette(routes=routes, lifespan=lifespan)


OCCI_METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE"]


async def _form_names_action(request: Request) -> bool:
    if request.method != "POST" or "x-www-form-urlencoded" not in \
            request.headers.get("content-type", ""):
        return False
    body = await request.body()
    return b"Action=" in body
