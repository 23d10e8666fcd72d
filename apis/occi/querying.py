"""The query interface (`/-/`) and mixin collections.

GET lists every category the caller can use (filtered by the Categories sent in the
request headers); POST defines a user mixin (a tag with its own location), DELETE
removes one (provider mixins: 403). A mixin's location lists the entities carrying it;
for user mixins POST adds the X-OCCI-Location entities, PUT replaces the set, DELETE
removes the listed ones.
"""

from __future__ import annotations

from starlette.responses import Response

from apis.occi import categories as cats
from apis.occi import lookup
from apis.occi.categories import Cat
from apis.occi.lookup import LISTS, Scope
from apis.occi.media import OcciError
from apis.occi.text import Message
from core.errors import Conflict, InvalidRequest
from core.service import mixins

# first path segments the service itself answers (OCCI's own, and the other front doors')
RESERVED = {"", "-", ".well-known", "compute", "storage", "network", "networkinterface",
            "storagelink", "mixin", "RPC2", "ec2"}


def query_interface(scope: Scope, method: str, message: Message) -> Response:
    if method == "GET":
        found = scope.registry.all()
        if message.categories:
            wanted = {c.type_id for c in message.categories}
            found = [c for c in found if c.type_id in wanted]
        return scope.out.categories(found)
    if method == "POST":
        for category in message.categories:
            if category.cls not in ("mixin", ""):
                raise OcciError(400, "only mixins can be added to the query interface")
            if scope.registry.get(category.type_id) is not None:
                raise OcciError(409, f"{category.type_id} already exists")
            if not category.location:
                raise OcciError(400, f"mixin {category.term}: a location is required")
            location = category.location
            if location.strip("/").split("/")[0] in RESERVED:
                raise OcciError(400, f"the location {location} is taken by the service")
            if "://" in location:
                location = location.removeprefix(scope.out.base)
                if "://" in location:
                    raise OcciError(400, f"{category.location} is not on this service")
            try:
                mixins.create_mixin(scope.cloud, scope.caller, term=category.term,
                                    scheme=category.scheme, title=category.title,
                                    location=location)
            except Conflict as exc:
                raise OcciError(409, str(exc)) from None
            except InvalidRequest as exc:
                raise OcciError(400, str(exc)) from None
        if not message.categories:
            raise OcciError(400, "POST /-/ defines a mixin: send its Category")
        return scope.out.ok()
    if method == "DELETE":
        if not message.categories:
            raise OcciError(400, "DELETE /-/ removes a mixin: send its Category")
        for category in message.categories:
            if category.type_id in cats.STATIC or \
                    category.type_id in scope.registry.os_tpls or \
                    category.type_id in scope.registry.resource_tpls:
                raise OcciError(403, f"{category.type_id} belongs to the service")
            cat = scope.registry.user_mixins.get(category.type_id)
            if cat is None:
                raise OcciError(404, f"no mixin {category.type_id}")
            mixins.delete_mixin(scope.cloud, scope.caller, mixin_id=scope.registry.mixin_id(cat))
        return scope.out.ok()
    raise OcciError(405, f"{method} is not allowed on the query interface")


def mixin_collection(scope: Scope, path: str, method: str, message: Message,
                     query: dict[str, str]) -> Response:
    location = path.rstrip("/") + "/"
    cat = next((c for c in scope.registry.all() if c.cls == "mixin" and
                c.location == location), None)
    if cat is None:
        raise OcciError(404, f"/{path} is not a location of this service")
    if method == "GET":
        members = [e for kind in ("compute", "storage", "network") for e in LISTS[kind](scope)
                   if cat in e.mixins or _carries(e.mixins, cat)]
        return scope.out.collection(lookup.page(members, query))
    if cat.type_id not in scope.registry.user_mixins:
        raise OcciError(405 if method in ("POST", "PUT", "DELETE") else 400,
                        f"{cat.type_id} belongs to the service: its members are chosen at "
                        "creation")
    refs = [lookup.member_ref(scope, loc) for loc in message.locations]
    mixin_id = scope.registry.mixin_id(cat)
    if method == "POST":
        mixins.set_members(scope.cloud, scope.caller, mixin_id=mixin_id, add=refs)
    elif method == "PUT":
        mixins.set_members(scope.cloud, scope.caller, mixin_id=mixin_id, add=refs, replace=True)
    elif method == "DELETE":
        mixins.set_members(scope.cloud, scope.caller, mixin_id=mixin_id, remove=refs)
    else:
        raise OcciError(405, f"{method} is not allowed on a mixin collection")
    return scope.out.ok()


def _carries(found: list[Cat], cat: Cat) -> bool:
    return any(m.type_id == cat.type_id for m in found)
