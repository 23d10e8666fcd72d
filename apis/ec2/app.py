"""The EC2 Query front door: one endpoint that dispatches on `Action`.

GET query strings and POST form bodies, at `/` and at the configured prefix. Every
request is authenticated (SigV4 or SigV2, apis.ec2.auth), parsed from botocore's model
(apis.ec2.query), handed to one handler (apis.ec2.actions) and rendered from the model
(apis.ec2.xml). Every answer is EC2 XML, errors included.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Mapping
from contextlib import nullcontext
from typing import Any
from urllib.parse import parse_qsl

import anyio
from starlette.types import Scope, Send

from apis.ec2 import auth, query, xml
from apis.ec2.actions import Context, load
from apis.ec2.errors import Ec2Error, auth_failure, from_domain
from apis.ec2.throttle import Throttle
from core import db
from core.errors import CloudError, Unauthorized
from core.service.context import Cloud
from core.service.identity import caller_by_access_key

log = logging.getLogger("nubo.ec2")
MAX_BODY = 4 * 1024 * 1024
_REGION = re.compile(r"Credential=[^/,\s]+/\d{8}/([^/,\s]+)/")
_QUERY_REGION = re.compile(r"[^/]+/\d{8}/([^/]+)/")
HANDLERS = load()
# Point reads, the hot path: their calls only read and their work is bounded by the ids
# named. The whole request, authentication included, is one read unit (core.db.read_unit):
# one transaction, which on SQLite takes no lock that a writer holds. There they also run
# on the event loop, as they cannot wait on anything: handing one to a worker thread and
# back costs more CPU than the read itself, and more again when threads queue for the GIL.
# Listings keep one unit per call (a long one would pin one snapshot while it renders) and
# run in worker threads, as does everything on a server database.
POINT_READS = {"DescribeInstances": "InstanceId.1"}


def _point_read(params: Mapping[str, str]) -> bool:
    return POINT_READS.get(params.get("Action", "")) in params


def _region(req: auth.SignedRequest, default: str) -> str:
    """The region the client signed for (any name is accepted), else the configured one."""
    found = _REGION.search(req.headers.get("authorization", ""))
    if found:
        return found.group(1)
    for name, value in req.params:
        if name == "X-Amz-Credential":
            match = _QUERY_REGION.match(value)
            if match:
                return match.group(1)
    return default


def handle(cloud: Cloud, req: auth.SignedRequest, request_id: str, throttle: Throttle,
           point_read: bool) -> tuple[int, bytes]:
    """One EC2 request, synchronously (on the event loop or in a worker thread, see
    POINT_READS); never raises."""
    try:
        params = dict(req.params)
        name = params.get("Action", "")
        version = params.get("Version") or query.API_VERSION
        if not name:
            raise Ec2Error("MissingAction", "The request must contain the parameter Action")
        op = query.operation(name)
        with db.read_unit(cloud.engine) if point_read else nullcontext():
            result = _act(cloud, req, request_id, throttle, name, op)
        return 200, xml.render(op, result, request_id=request_id, version=version)
    except Ec2Error as exc:
        return exc.status, xml.render_error(exc.code, exc.message, request_id=request_id)
    except Exception:
        log.exception("EC2 internal error (request %s)", request_id)
        return 500, xml.render_error("InternalError", "An internal error has occurred "
                                     f"(request {request_id})", request_id=request_id)


def _act(cloud: Cloud, req: auth.SignedRequest, request_id: str, throttle: Throttle, name: str,
         op: Any) -> dict[str, Any]:
    """Authenticate, parse and run the request's handler; its result, or Ec2Error."""
    key = auth.access_key(req)
    try:
        caller, secret = caller_by_access_key(cloud, key)
    except Unauthorized:
        raise auth_failure() from None
    auth.verify(req, secret)
    throttle.take(key)
    handler = HANDLERS.get(name)
    if handler is None:
        raise Ec2Error("UnsupportedOperation",
                       f"The action {name} is not supported by this cloud yet.")
    parsed = query.parse(op, [(k, v) for k, v in req.params if k not in query.ENVELOPE])
    ctx = Context(cloud=cloud, caller=caller, region=_region(req, cloud.config.ec2_region),
                  request_id=request_id, endpoint_host=req.host.split(":")[0],
                  dry_run=bool(parsed.pop("DryRun", False)))
    if ctx.dry_run and name.startswith("Describe"):
        ctx.commit_point()
    try:
        return handler(ctx, parsed)
    except CloudError as exc:
        raise from_domain(exc) from None


class Endpoint:
    """The EC2 endpoint at the ASGI level: the front (apis.app) has read the body already,
    and Starlette's request and response objects would cost a point read a sixth of its
    time for nothing EC2 needs."""

    def __init__(self, cloud: Cloud) -> None:
        self.cloud = cloud
        self.throttle = Throttle(cloud.config.ec2_rate, cloud.config.ec2_burst)
        self.on_loop = cloud.engine.dialect.name == "sqlite"
        query.service_model()  # load the EC2 model now, not on the first request

    async def __call__(self, scope: Scope, body: bytes, send: Send) -> None:
        """One request, its body read (past MAX_BODY, no further)."""
        request_id = str(uuid.uuid4())
        try:
            signed = _signed(scope, body)
        except Ec2Error as exc:
            status, payload = exc.status, xml.render_error(exc.code, exc.message,
                                                           request_id=request_id)
        else:
            point = _point_read(dict(signed.params))
            if self.on_loop and point:
                status, payload = handle(self.cloud, signed, request_id, self.throttle, point)
            else:
                status, payload = await anyio.to_thread.run_sync(
                    handle, self.cloud, signed, request_id, self.throttle, point)
        await send({"type": "http.response.start", "status": status, "headers": [
            (b"content-type", b"text/xml; charset=utf-8"),
            (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})


def _signed(scope: Scope, body: bytes) -> auth.SignedRequest:
    """The request as authentication and parsing see it, or Ec2Error."""
    method = scope["method"]
    if method not in ("GET", "POST"):
        raise Ec2Error("MethodNotAllowed", f"EC2 Query requests are GET or POST, not {method}",
                       405)
    if len(body) > MAX_BODY:
        raise Ec2Error("RequestEntityTooLarge", "The request is too large", 413)
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
    raw_query = scope.get("query_string", b"").decode("latin-1")
    pairs = parse_qsl(raw_query, keep_blank_values=True)
    if method == "POST":
        content_type = headers.get("content-type", "")
        if body and "x-www-form-urlencoded" not in content_type and content_type:
            raise Ec2Error("InvalidParameterValue", f"unsupported Content-Type {content_type!r}")
        try:
            pairs += parse_qsl(body.decode("utf-8"), keep_blank_values=True)
        except UnicodeDecodeError:
            raise Ec2Error("InvalidParameterValue", "the body is not UTF-8") from None
    raw_path = scope.get("raw_path") or scope["path"].encode()
    return auth.SignedRequest(method=method, host=headers.get("host", ""),
                              path=raw_path.decode("latin-1").split("?", 1)[0], query=raw_query,
                              headers=headers, body=body, params=pairs)
