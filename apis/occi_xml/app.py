"""The OCCI-XML app: one route per path, one wrapper that authenticates, runs the handler in
a worker thread and turns every error into a status and a plain-text message."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from functools import partial

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from apis.occi_xml import compute, instance_types, network, storage
from apis.occi_xml.auth import authenticate
from apis.occi_xml.calls import Call, Reply
from apis.occi_xml.documents import MAX_DOCUMENT
from apis.occi_xml.errors import REALM, status_of
from core.errors import CloudError
from core.service.context import Cloud

log = logging.getLogger("nubo.occi_xml")
Handler = Callable[[Call], Reply]
MAX_BODY = 2 * MAX_DOCUMENT  # a multipart form carries the document and some framing

ROUTES: dict[str, dict[str, Handler]] = {
    "/compute": {"GET": compute.index, "POST": compute.create},
    "/compute/{ident}": {"GET": compute.show, "PUT": compute.update, "DELETE": compute.delete},
    "/compute/{ident}/action": {"POST": compute.action},
    "/storage": {"GET": storage.index, "POST": storage.create},
    "/storage/{ident}": {"GET": storage.show, "DELETE": storage.delete},
    "/network": {"GET": network.index, "POST": network.create},
    "/network/{ident}": {"GET": network.show, "DELETE": network.delete},
    "/instance_type": {"GET": instance_types.index},
    "/instance_type/{ident}": {"GET": instance_types.show},
}


def build(cloud: Cloud) -> Starlette:
    return Starlette(routes=[Route(path, _endpoint(cloud, handlers), methods=list(handlers))
                             for path, handlers in ROUTES.items()])


def _text(status: int, message: str) -> Response:
    headers = {"WWW-Authenticate": REALM} if status == 401 else None
    return Response(message.rstrip("\n") + "\n", status_code=status, headers=headers,
                    media_type="text/plain")


def _endpoint(cloud: Cloud, handlers: dict[str, Handler]) -> Callable[[Request], object]:
    async def endpoint(request: Request) -> Response:
        handler = handlers["GET" if request.method == "HEAD" else request.method]
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY:
                return _text(413, f"the request body is larger than {MAX_BODY} bytes")
        url = request.url
        call = partial(Call, cloud, base=f"{url.scheme}://{url.netloc}",
                       ident=request.path_params.get("ident", ""), body=bytes(body),
                       query=dict(request.query_params),
                       content_type=request.headers.get("content-type", ""))
        return await anyio.to_thread.run_sync(_run, cloud, handler,
                                              request.headers.get("authorization", ""), call)

    return endpoint


def _run(cloud: Cloud, handler: Handler, authorization: str,
         call: Callable[..., Call]) -> Response:
    """Authenticate, then run one handler with the call made for the caller (in a worker
    thread); never raises."""
    try:
        reply = handler(call(caller=authenticate(cloud, authorization)))
    except CloudError as exc:
        return _text(status_of(exc), str(exc))
    except Exception:
        ref = uuid.uuid4().hex[:12]
        log.exception("OCCI-XML internal error (ref %s)", ref)
        return _text(500, f"internal error (reference {ref} in the daemon log)")
    headers = {"Location": reply.location} if reply.location else None
    return Response(reply.body, status_code=reply.status, headers=headers,
                    media_type="application/xml" if reply.body else None)
