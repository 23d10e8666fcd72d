"""The OCCI front door: the query interface, kind collections, entities, user mixin
collections, on the daemon's port. Each request is authenticated (apis.occi.auth), read
in the rendering it was sent in and answered in the one it asked for (apis.occi.media),
with `Server: ... OCCI/1.1 OCCI/1.2` on every answer, errors included.

Paths: `/-/` and `/.well-known/org/ogf/occi/-/` (query interface); `/compute/`,
`/storage/`, `/network/`, `/storagelink/`, `/networkinterface/` (collections) and
`/<kind>/<id>` (entities); `/mixin/os_tpl/<term>/`, `/mixin/resource_tpl/<term>/` and
each user mixin's own location (mixin collections); `/` lists every entity and takes
creations, sharing the root with the EC2 Query API (a request naming an `Action` is
EC2's).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import anyio
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response

from apis.occi import actions, auth, create, lookup, media, querying
from apis.occi.lookup import LINK_KINDS, LISTS, RESOURCE_KINDS, Scope
from apis.occi.media import OcciError, Out
from apis.occi.text import Message, OcciSyntaxError
from core.errors import CloudError, Conflict, Forbidden, InvalidState, NotFound, Unauthorized
from core.service.context import Cloud

log = logging.getLogger("nubo.occi")
MAX_BODY = 1024 * 1024
QUERY_PATHS = ("-/", ".well-known/org/ogf/occi/-/")
_VERSION = re.compile(r"\bOCCI/(\d+)\.(\d+)\b")
OCCI_TYPES = ("text/occi", "text/plain", "text/uri-list", "occi+json")


@dataclass
class Req:
    method: str
    path: str  # without the leading "/"
    query: dict[str, str]
    headers: Headers
    body: bytes
    base: str  # the service root, absolute, ending in "/"


def looks_like_occi(headers: Mapping[str, str]) -> bool:
    """At `/`, which front door a request without an EC2 `Action` is for (headers by their
    lowercase names)."""
    if headers.get("x-auth-token") or headers.get("category") or \
            headers.get("authorization", "").lower().startswith("basic "):
        return True
    return any(t in headers.get("accept", "") + headers.get("content-type", "")
               for t in OCCI_TYPES)


def handle(cloud: Cloud, req: Req) -> Response:
    """One OCCI request, synchronously (run in a worker thread); never raises."""
    listing = req.path.endswith("/") or req.path == ""
    try:
        out = Out(media.negotiate(req.headers, listing=listing), req.base)
    except OcciError as exc:
        return Out(media.PLAIN, req.base).error(exc)
    try:
        _check_version(req.headers.get("user-agent", ""))
        scope = Scope(cloud, auth.caller(cloud, req.headers), out)
        response = route(scope, req)
    except OcciError as exc:
        response = out.error(exc)
    except OcciSyntaxError as exc:
        response = out.error(OcciError(400, str(exc)))
    except (NotFound, Forbidden) as exc:
        response = out.error(OcciError(404, str(exc)))
    except (Conflict, InvalidState) as exc:
        response = out.error(OcciError(409, str(exc)))
    except Unauthorized as exc:
        response = out.error(OcciError(401, str(exc), auth.CHALLENGE))
    except CloudError as exc:
        response = out.error(OcciError(400, str(exc)))
    except Exception:
        log.exception("OCCI internal error on %s /%s", req.method, req.path)
        response = out.error(OcciError(500, "internal error; the request changed nothing it "
                                       "could not finish"))
    if req.method == "HEAD":
        response.body = b""
    return response


def _check_version(agent: str) -> None:
    for major, minor in _VERSION.findall(agent):
        if (int(major), int(minor)) > (1, 2):
            raise OcciError(501, f"this service speaks OCCI 1.1 and 1.2, not {major}.{minor}")


def route(scope: Scope, req: Req) -> Response:
    method = "GET" if req.method == "HEAD" else req.method
    path = req.path
    if path in QUERY_PATHS:
        return querying.query_interface(scope, method, _message(req))
    if path == "":
        return _root(scope, method, req)
    head, _, rest = path.partition("/")
    if head in LISTS and rest.rstrip("/") == "":
        return _collection(scope, head, method, req)
    if head in LISTS and "/" not in rest:
        return _entity(scope, head, rest, method, req)
    return querying.mixin_collection(scope, path, method, _message(req), req.query)


def _message(req: Req) -> Message:
    if len(req.body) > MAX_BODY:
        raise OcciError(413, f"the body is larger than {MAX_BODY} bytes")
    return media.read(req.headers, req.body)


def _root(scope: Scope, method: str, req: Req) -> Response:
    if method == "GET":
        found = [e for kind in ("compute", "storage", "network") for e in LISTS[kind](scope)]
        return scope.out.collection(lookup.page(found, req.query))
    if method == "POST":
        message = _message(req)
        kinds = [c for c in message.categories if c.cls in ("kind", "") and
                 c.term in create.CREATORS and c.type_id.endswith("infrastructure#" + c.term)]
        if len(kinds) != 1:
            raise OcciError(400, "POST / creates an entity: name exactly one kind")
        return _create(scope, kinds[0].term, message)
    raise OcciError(405, f"{method} is not allowed on the service root")


def _create(scope: Scope, kind: str, message: Message) -> Response:
    creator = create.CREATORS[kind]
    named = [c for c in message.categories if c.cls == "kind" or c.term == kind]
    expected = (RESOURCE_KINDS | LINK_KINDS)[kind]
    if any(c.cls == "kind" and c.type_id != expected.type_id for c in named):
        raise OcciError(400, f"the collection /{kind}/ creates {expected.type_id} only")
    entity = creator(scope, message)
    url = scope.out.url(entity.location)
    return scope.out.entity(entity, 201, {"Location": url, "X-OCCI-Location": url})


def _collection(scope: Scope, kind: str, method: str, req: Req) -> Response:
    cat = (RESOURCE_KINDS | LINK_KINDS)[kind]
    if method == "GET":
        filters = media.read(req.headers, b"")  # filters travel in headers
        found = [e for e in LISTS[kind](scope) if lookup.matches(e, filters)]
        return scope.out.collection(lookup.page(found, req.query), links=kind in LINK_KINDS)
    if method == "POST" and "action" in req.query:
        message = _message(req)
        actions.on_collection(scope, LISTS[kind](scope), req.query["action"], message, cat)
        return scope.out.ok()
    if method == "POST":
        return _create(scope, kind, _message(req))
    if method == "DELETE":
        message = _message(req)
        targets = [lookup.split_location(scope, loc) for loc in message.locations] or \
            [(kind, e.location.split("/", 1)[1]) for e in LISTS[kind](scope)]
        for target_kind, ident in targets:
            if target_kind != kind:
                raise OcciError(400, f"/{target_kind}/{ident} is not in /{kind}/")
        for _, ident in targets:
            actions.delete(scope, kind, ident)
        return scope.out.ok()
    raise OcciError(405, f"{method} is not allowed on a kind collection")


def _entity(scope: Scope, kind: str, ident: str, method: str, req: Req) -> Response:
    if method == "GET":
        return scope.out.entity(lookup.one(scope, kind, ident))
    if method == "DELETE":
        actions.delete(scope, kind, ident)
        return scope.out.ok()
    message = _message(req)
    if method == "POST" and "action" in req.query:
        entity = lookup.one(scope, kind, ident)
        if kind not in RESOURCE_KINDS:
            raise OcciError(400, "links have no actions")
        action = actions.resolve(entity.kind, req.query["action"], message)
        made = actions.run(scope, entity, action, message)
        if made is None:
            return scope.out.ok()
        if made.kind.cls == "mixin":  # save: the new os_tpl
            return scope.out.categories([made.kind])
        url = scope.out.url(made.location)
        return scope.out.entity(made, 200, {"X-OCCI-Location": url})
    if method in ("POST", "PUT"):
        try:
            lookup.one(scope, kind, ident)
        except OcciError:
            if method == "PUT":
                raise OcciError(400, "entities are created by POST to their collection; "
                                "their ids are the service's") from None
            raise
        return scope.out.entity(create.update(scope, kind, ident, message,
                                              full=method == "PUT"))
    raise OcciError(405, f"{method} is not allowed on an entity")


def make_endpoint(cloud: Cloud) -> Any:
    async def endpoint(request: Request) -> Response:
        body = await request.body()
        path = request.url.path.lstrip("/")
        base = str(request.base_url)
        req = Req(request.method, path, dict(parse_qsl(request.url.query)), request.headers,
                  body, base if base.endswith("/") else base + "/")
        return await anyio.to_thread.run_sync(handle, cloud, req)

    return endpoint
