"""Actions (`POST <entity>?action=<term>`) and deletion, mapped onto the core.

Compute: start releases a held VM and resumes a stopped or suspended one; stop saves a
running VM and frees its host (OpenNebula's stop: STOPPED, started again later) or holds
a pending one; restart reboots; suspend suspends; save copies a stopped compute's disk
into a new image and answers with its os_tpl. Storage: online/offline enable and disable
the image; backup and snapshot copy it; resize changes the size of an unused datablock.
Network: down stops giving leases, up gives them again. Deleting a compute ends it at
once (its host is cleaned up behind it).
"""

from __future__ import annotations

import math

from apis.occi import categories as cats
from apis.occi.categories import Cat
from apis.occi.entities import MB_PER_GIB, Entity
from apis.occi.lookup import Scope, one
from apis.occi.media import OcciError
from apis.occi.text import Message
from core import template
from core.errors import CloudError, Conflict, InvalidRequest, InvalidState
from core.lifecycle import VmState
from core.service import disks, images, mixins, nics, vms, vnets

METHODS = {
    "stop": ("graceful", "acpioff", "poweroff"),
    "restart": ("graceful", "warm", "cold"),
    "suspend": ("hibernate", "suspend"),
    "save": ("hot", "deferred"),
}


def resolve(entity_kind: Cat, term: str, message: Message) -> Cat:
    """The action a request triggers: the query's term and the Category must agree."""
    known = {a.term: a for a in cats.ACTIONS if a.type_id in entity_kind.actions}
    action = known.get(term)
    if action is None:
        raise OcciError(400, f"{entity_kind.term} has no action {term!r}; it has "
                        f"{', '.join(sorted(known))}")
    named = [c for c in message.categories if c.cls in ("action", "")]
    if named and all(c.type_id != action.type_id for c in named):
        raise OcciError(400, f"the Category names {named[0].type_id}, the query ?action={term}")
    method = str(message.attributes.get("method", "")) or None
    if method is not None and method not in METHODS.get(term, ()):
        allowed = ", ".join(METHODS.get(term, ())) or "none"
        raise OcciError(400, f"action {term}: method {method!r} (allowed: {allowed})")
    return action


def check(entity: Entity, action: Cat) -> None:
    """409 when the entity's state does not offer the action now."""
    if action not in entity.actions:
        state = next((v for k, v in entity.attributes.items() if k.endswith(".state")), "")
        raise OcciError(409, f"/{entity.location} is {state}: {action.term} is not possible "
                        "now")


def run(scope: Scope, entity: Entity, action: Cat, message: Message) -> Entity | None:
    """Trigger the action; returns the entity it created (save, backup, snapshot)."""
    kind, ident = entity.location.split("/", 1)
    if kind == "compute" and action.term == "start" and \
            entity.attributes["occi.compute.state"] == "active":
        return None  # already running: starting it again is a no-op
    check(entity, action)
    try:
        if kind == "compute":
            return _compute(scope, int(ident), action.term, message)
        if kind == "storage":
            return _storage(scope, entity, int(ident), action.term, message)
        vnets.set_down(scope.cloud, scope.caller, vnet_id=int(ident), down=action.term == "down")
        return None
    except (Conflict, InvalidState) as exc:
        raise OcciError(409, str(exc)) from None
    except InvalidRequest as exc:
        raise OcciError(400, str(exc)) from None


def _compute(scope: Scope, vm_id: int, term: str, message: Message) -> Entity | None:
    info = vms.get_vm(scope.cloud, scope.caller, vm_id=vm_id)
    state = info.vm.state
    if term == "save":
        name = str(message.attributes.get("name", "")).strip() or f"{info.vm.name}-saved"
        root = next((d for d in template.parse(info.vm.template).vectors("DISK")
                     if d.get("IMAGE_ID", "").isdigit()), None)
        if root is None:
            raise OcciError(409, f"compute {vm_id} has no image disk to save")
        image_id = disks.save_disk(scope.cloud, scope.caller, vm_id=vm_id,
                                   disk_id=int(root.get("DISK_ID", "0")), name=name)
        return Entity(cats.os_tpl(image_id, name), "", {})
    core_action = {
        "start": "release" if state == VmState.HOLD else
        "resubmit" if state == VmState.FAILED else "resume",
        "stop": "hold" if state == VmState.PENDING else "stop",
        "restart": "reboot",
        "suspend": "suspend",
    }[term]
    vms.act(scope.cloud, scope.caller, vm_id=vm_id, action=core_action)
    return None


def _storage(scope: Scope, entity: Entity, image_id: int, term: str,
             message: Message) -> Entity | None:
    if term in ("online", "offline"):
        images.enable_image(scope.cloud, scope.caller, image_id=image_id,
                            enable=term == "online")
        return None
    if term == "resize":
        size = message.attributes.get("size")
        try:
            gib = float(size)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise OcciError(400, "resize needs a size attribute in GiB") from None
        images.update_image(scope.cloud, scope.caller, image_id=image_id,
                            size_mb=math.ceil(gib * MB_PER_GIB))
        return None
    title = f"{entity.attributes['occi.core.title']}-{term}"
    copy = images.clone_image(scope.cloud, scope.caller, image_id=image_id,
                              changes=template.Template([("PERSISTENT", "NO")]),
                              name_from_id=title + "-{id}")
    return one(scope, "storage", str(copy))


def delete(scope: Scope, kind: str, ident: str) -> None:
    one(scope, kind, ident)  # 404 unless it exists and is the caller's
    try:
        if kind == "compute":
            vms.act(scope.cloud, scope.caller, vm_id=int(ident), action="delete")
            mixins.forget(scope.cloud, "vm", int(ident))
        elif kind == "storage":
            images.delete_image(scope.cloud, scope.caller, image_id=int(ident))
            mixins.forget(scope.cloud, "image", int(ident))
        elif kind == "network":
            vnets.delete_vnet(scope.cloud, scope.caller, vnet_id=int(ident))
            mixins.forget(scope.cloud, "vnet", int(ident))
        elif kind == "storagelink":
            vm_id, _, disk_id = ident.removeprefix("compute_").partition("_disk_")
            disks.detach_disk(scope.cloud, scope.caller, vm_id=int(vm_id), disk_id=int(disk_id))
        else:
            vm_id, _, nic_id = ident.removeprefix("compute_").partition("_nic_")
            nics.detach_nic(scope.cloud, scope.caller, vm_id=int(vm_id), nic_id=int(nic_id))
    except (Conflict, InvalidState) as exc:
        raise OcciError(409, str(exc)) from None


def on_collection(scope: Scope, members: list[Entity], term: str, message: Message,
                  kind: Cat) -> None:
    """An action on every member: all of them must allow it, or none is touched."""
    action = resolve(kind, term, message)
    for entity in members:
        if not (term == "start" and entity.attributes.get("occi.compute.state") == "active"):
            check(entity, action)
    for entity in members:
        try:
            run(scope, entity, action, message)
        except CloudError as exc:
            raise OcciError(409, f"/{entity.location}: {exc}") from None
