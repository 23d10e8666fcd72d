"""The ASGI app: every front door on one port, the daemon's loops in its lifespan.

EC2 requests are taken first, at the ASGI level (apis.ec2.app.Endpoint); everything else,
XML-RPC and OCCI, goes through Starlette's routes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from apis.ec2.app import MAX_BODY
from apis.ec2.app import Endpoint as Ec2Endpoint
from apis.occi.app import looks_like_occi
from apis.occi.app import make_endpoint as make_occi_endpoint
from apis.xmlrpc.app import make_endpoint
from core.daemon import Daemon
from core.service.context import Cloud

OCCI_METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE"]


def build(cloud: Cloud, daemon: Daemon | None) -> ASGIApp:
    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        if daemon is not None:
            await daemon.start()
        try:
            yield
        finally:
            if daemon is not None:
                await daemon.stop()

    occi = make_occi_endpoint(cloud)
    routes = [Route("/RPC2", make_endpoint(cloud), methods=["POST", "GET"]),
              Route("/{path:path}", occi, methods=OCCI_METHODS)]
    rest = Starlette(routes=routes, lifespan=lifespan)
    ec2 = Ec2Endpoint(cloud)
    prefix = "/" + cloud.config.ec2_path.strip("/")
    ec2_only = {prefix, prefix + "/"} - {"/", "//"}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        """`/` is shared: a GET or POST naming an EC2 `Action` (or not looking like OCCI)
        is EC2's, anything else OCCI's. The EC2 prefix is EC2's alone."""
        if scope["type"] == "http":
            path = scope["path"]
            if path in ec2_only or path == "/" and scope["method"] in ("GET", "POST"):
                body, more = await _read(receive, MAX_BODY)
                if path in ec2_only or _names_action(scope, body) or \
                        not looks_like_occi(_headers(scope)):
                    await ec2(scope, body, send)
                    return
                receive = _replay(body, more, receive)
        await rest(scope, receive, send)

    return app


async def _read(receive: Receive, limit: int) -> tuple[bytes, bool]:
    """The request body, or as much of it as passes `limit`; and whether more is coming."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # the client went away
            return b"".join(chunks), False
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        more = bool(message.get("more_body", False))
        if not more or size > limit:
            return b"".join(chunks), more


def _replay(body: bytes, more: bool, receive: Receive) -> Receive:
    """`receive` again from the start, for the app the body turned out not to be for."""
    pending = [body]

    async def again() -> Message:
        if pending:
            return {"type": "http.request", "body": pending.pop(), "more_body": more}
        return await receive()

    return again


def _headers(scope: Scope) -> Mapping[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


def _names_action(scope: Scope, body: bytes) -> bool:
    if any(name == "Action" for name, _ in
           parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)):
        return True
    return scope["method"] == "POST" and b"Action=" in body and \
        "x-www-form-urlencoded" in _headers(scope).get("content-type", "")
