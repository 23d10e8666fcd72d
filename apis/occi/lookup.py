"""Finding entities: one by its location, every one of a kind (with OCCI's filters), and
the members of a user mixin. Another user's objects are simply not there (404)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from apis.occi import categories as cats
from apis.occi import entities
from apis.occi.categories import Cat, Registry
from apis.occi.entities import Entity
from apis.occi.media import OcciError, Out
from apis.occi.text import Message
from core.errors import Forbidden, NotFound
from core.lifecycle import VmState
from core.service import images, mixins, vms, vnets
from core.service.access import MINE
from core.service.context import Caller, Cloud

RESOURCE_KINDS = {"compute": cats.COMPUTE, "storage": cats.STORAGE, "network": cats.NETWORK}
LINK_KINDS = {"storagelink": cats.STORAGELINK, "networkinterface": cats.NETWORKINTERFACE}
_LINK_ID = re.compile(r"compute_(\d+)_(disk|nic)_(\d+)\Z")
MEMBER_KIND = {"compute": "vm", "storage": "image", "network": "vnet"}
KIND_PATH = {v: k for k, v in MEMBER_KIND.items()}


@dataclass
class Scope:
    """One request: who asks, how to answer, and (read once) the caller's categories."""

    cloud: Cloud
    caller: Caller
    out: Out
    _registry: Registry | None = field(default=None, repr=False)

    @property
    def registry(self) -> Registry:
        if self._registry is None:
            self._registry = entities.registry(self.cloud, self.caller)
        return self._registry


@contextmanager
def absent(what: str) -> Iterator[None]:
    """Objects that do not exist or are not the caller's are both 404."""
    try:
        yield
    except (NotFound, Forbidden):
        raise OcciError(404, f"{what} does not exist") from None


def _tags(scope: Scope, kind: str) -> dict[int, list[Cat]]:
    by_id = {scope.registry.mixin_id(c): c for c in scope.registry.user_mixins.values()}
    found = mixins.memberships(scope.cloud, scope.caller, kind)
    return {obj: [by_id[m] for m in ids if m in by_id] for obj, ids in found.items()}


def _image_names(scope: Scope) -> dict[int, str]:
    return {image_id: cat.title for cat, image_id in scope.registry.os_tpls.values()}


def computes(scope: Scope, ids: list[int] | None = None) -> list[Entity]:
    tags = _tags(scope, "vm")
    names = _image_names(scope)
    found = vms.list_vms(scope.cloud, scope.caller, flag=MINE, state=-1, ids=ids)
    return [entities.compute(info, scope.registry, names, tags.get(info.vm.id or 0, []))
            for info in found]


def storages(scope: Scope) -> list[Entity]:
    tags = _tags(scope, "image")
    return [entities.storage(row, tags.get(row.id or 0, []))
            for row in images.list_images(scope.cloud, scope.caller, flag=MINE)]


def networks(scope: Scope) -> list[Entity]:
    tags = _tags(scope, "vnet")
    return [entities.network(row, leases, tags.get(row.id or 0, []))
            for row, leases in vnets.list_vnets(scope.cloud, scope.caller, flag=MINE)]


def links(scope: Scope, kind: Cat) -> list[Entity]:
    return [link for c in computes(scope) for link in c.links if link.kind is kind]


LISTS: dict[str, Callable[[Scope], list[Entity]]] = {
    "compute": computes, "storage": storages, "network": networks,
    "storagelink": lambda s: links(s, cats.STORAGELINK),
    "networkinterface": lambda s: links(s, cats.NETWORKINTERFACE),
}


def _number(text: str, what: str) -> int:
    if not text.isdigit():
        raise OcciError(404, f"{what} does not exist")
    return int(text)


def one(scope: Scope, kind: str, ident: str) -> Entity:
    """The entity at `<kind>/<ident>`, or 404."""
    what = f"/{kind}/{ident}"
    if kind == "compute":
        vm_id = _number(ident, what)
        with absent(what):
            info = vms.get_vm(scope.cloud, scope.caller, vm_id=vm_id)
        if info.vm.state == VmState.DONE or info.vm.uid != scope.caller.uid:
            raise OcciError(404, f"{what} does not exist")
        return entities.compute(info, scope.registry, _image_names(scope),
                                _tags(scope, "vm").get(vm_id, []))
    if kind == "storage":
        image_id = _number(ident, what)
        with absent(what):
            row = images.get_image(scope.cloud, scope.caller, image_id=image_id)
        if row.uid != scope.caller.uid:
            raise OcciError(404, f"{what} does not exist")
        return entities.storage(row, _tags(scope, "image").get(image_id, []))
    if kind == "network":
        vnet_id = _number(ident, what)
        with absent(what):
            vnet, leases = vnets.get_vnet(scope.cloud, scope.caller, vnet_id=vnet_id)
        if vnet.uid != scope.caller.uid:
            raise OcciError(404, f"{what} does not exist")
        return entities.network(vnet, leases, _tags(scope, "vnet").get(vnet_id, []))
    if kind in LINK_KINDS:
        found = _LINK_ID.match(ident)
        if found is None:
            raise OcciError(404, f"{what} does not exist")
        owner = one(scope, "compute", found.group(1))
        for link in owner.links:
            if link.location == f"{kind}/{ident}":
                return link
    raise OcciError(404, f"{what} does not exist")


def split_location(scope: Scope, location: str) -> tuple[str, str]:
    """(kind path, id) of an entity location given absolute or relative."""
    base = scope.out.base
    path = location[len(base):] if location.startswith(base) else location
    if "://" in path:
        raise OcciError(400, f"{location} is not a location of this service")
    kind, _, ident = path.strip("/").partition("/")
    if kind not in LISTS or not ident or "/" in ident:
        raise OcciError(400, f"{location} is not an entity location")
    return kind, ident


def matches(entity: Entity, filters: Message) -> bool:
    """OCCI's collection filters: every Category named must be the entity's kind or one of
    its mixins; every X-OCCI-Attribute must have that value."""
    have = {entity.kind.type_id, *(m.type_id for m in entity.mixins)}
    for category in filters.categories:
        if category.type_id not in have:
            return False
    for name, value in filters.attributes.items():
        if str(entity.attributes.get(name)) != str(value):
            return False
    return True


def page(items: list[Entity], query: dict[str, str]) -> list[Entity]:
    """OCCI 1.2 pagination: `page` (from 1) and `number` (page size, at most 1000)."""
    if "number" not in query and "page" not in query:
        return items
    try:
        number = int(query.get("number", "100"))
        index = int(query.get("page", "1"))
    except ValueError:
        raise OcciError(400, "page and number must be integers") from None
    if number > 1000:
        raise OcciError(413, "number: at most 1000 entities per page")
    if number < 1 or index < 1:
        raise OcciError(400, "page and number start at 1")
    return items[(index - 1) * number: index * number]


def member_ref(scope: Scope, location: str) -> tuple[str, int]:
    """A location as a mixin member: (core kind, id)."""
    kind, ident = split_location(scope, location)
    if kind not in MEMBER_KIND or not ident.isdigit():
        raise OcciError(400, f"{location}: only computes, storage and networks take mixins")
    one(scope, kind, ident)  # exists and is the caller's
    return MEMBER_KIND[kind], int(ident)
