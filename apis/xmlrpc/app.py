"""POST /RPC2: OpenNebula's XML-RPC API. Replies are `[success, result, code]`."""

from __future__ import annotations

import logging
import uuid
import xmlrpc.client
from typing import Any
from xml.parsers.expat import ExpatError

import anyio
from starlette.requests import Request
from starlette.responses import Response

from apis.xmlrpc import devices as _devices  # noqa: F401 - registers one.vm.attach...
from apis.xmlrpc import hooks as _hooks  # noqa: F401 - registers one.hook.*
from apis.xmlrpc import vnets as _vnets  # noqa: F401 - registers one.vn.*
from apis.xmlrpc.errors import AUTHENTICATION, INTERNAL, XML_RPC_API, BadCall, code_for
from apis.xmlrpc.methods import METHODS, check_args
from core.errors import CloudError, Unauthorized
from core.service.context import Cloud
from core.service.identity import authenticate

log = logging.getLogger("nubo.xmlrpc")
MAX_BODY = 16 * 1024 * 1024


def _reply(ok: bool, result: Any, code: int) -> Response:
    try:
        body = xmlrpc.client.dumps(((ok, result, code),), methodresponse=True, allow_none=False)
    except (TypeError, OverflowError) as exc:  # a value XML-RPC cannot carry
        log.exception("cannot encode a reply")
        body = xmlrpc.client.dumps(((False, f"cannot encode the reply: {exc}", INTERNAL),),
                                   methodresponse=True)
    return Response(body, media_type="text/xml")


def _fault(code: int, message: str) -> Response:
    return Response(xmlrpc.client.dumps(xmlrpc.client.Fault(code, message)),
                    media_type="text/xml")


def call(cloud: Cloud, name: str, params: tuple[Any, ...]) -> tuple[bool, Any, int]:
    """Run one method synchronously (in a worker thread); never raises."""
    spec = METHODS.get(name)
    if spec is None:
        return False, f"[{name}] unknown method", XML_RPC_API
    if not params or not isinstance(params[0], str):
        return False, f"[{name}] the first argument must be the session string user:password", \
            AUTHENTICATION
    try:
        caller = authenticate(cloud, params[0])
        args = check_args(name, spec, params[1:])
        result = spec.handler(cloud, caller, *args)
    except Unauthorized as exc:
        return False, f"[{name}] {exc}", AUTHENTICATION
    except BadCall as exc:
        return False, str(exc), XML_RPC_API
    except CloudError as exc:
        return False, f"[{name}] {exc}", code_for(exc)
    except Exception:
        ref = uuid.uuid4().hex[:12]
        log.exception("internal error in %s (ref %s)", name, ref)
        return False, f"[{name}] internal error (reference {ref} in the daemon log)", INTERNAL
    return True, result, 0


def make_endpoint(cloud: Cloud) -> Any:
    async def endpoint(request: Request) -> Response:
        if request.method != "POST":
            return Response("XML-RPC: POST a methodCall to /RPC2\n", status_code=405,
                            headers={"Allow": "POST"}, media_type="text/plain")
        body = await request.body()
        if len(body) > MAX_BODY:
            return _fault(XML_RPC_API, "request too large")
        try:
            params, name = xmlrpc.client.loads(body, use_builtin_types=True)
        except (ExpatError, ValueError, TypeError, IndexError) as exc:
            return _fault(XML_RPC_API, f"malformed XML-RPC request: {exc}")
        if not name:
            return _fault(XML_RPC_API, "malformed XML-RPC request: no methodName")
        ok, result, code = await anyio.to_thread.run_sync(call, cloud, name, params)
        return _reply(ok, result, code)

    return endpoint
