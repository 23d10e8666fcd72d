"""Creating and updating entities from an OCCI request: the kind's attributes and mixins
become a core template (compute, storage, network) or a disk attachment (storagelink).

A compute needs an os_tpl mixin (the image it boots); its size comes from a resource_tpl
mixin, else from occi.compute.cores/memory, else one core and 1 GiB. Contextualization
is read in every spelling clients use (reference §2.7): the SSH key lands in the VM's
CONTEXT as SSH_PUBLIC_KEY, user data (base64, as clients send it) as USER_DATA.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from apis.occi import categories as cats
from apis.occi.categories import Cat
from apis.occi.entities import MB_PER_GIB, Entity
from apis.occi.lookup import MEMBER_KIND, Scope, absent, one, split_location
from apis.occi.media import OcciError
from apis.occi.text import Link, Message, Value
from core import template
from core.errors import Conflict, InvalidRequest, InvalidState
from core.service import disks, images, mixins, nics, vms, vnets

ARCHITECTURES = {"x86", "x64", "x86_64", "amd64", "i686"}
IMMUTABLE = {"occi.compute.state", "occi.compute.state.message", "occi.storage.state",
             "occi.storage.state.message", "occi.network.state", "occi.network.state.message"}


def _mixins(scope: Scope, message: Message, kind: Cat) -> list[Cat]:
    found = []
    for category in message.categories:
        if category.cls == "kind" or category.type_id == kind.type_id:
            continue
        cat = scope.registry.get(category.type_id)
        if cat is None or cat.cls == "action":
            raise OcciError(400, f"unknown mixin {category.type_id} (see /-/)")
        if cat.cls == "kind":
            raise OcciError(400, f"{category.type_id} is a kind; a request names one kind")
        if cat.applies and kind.type_id not in cat.applies:
            raise OcciError(400, f"mixin {category.type_id} does not apply to {kind.term}")
        found.append(cat)
    return found


def _number(attrs: Mapping[str, Value], name: str, low: float, high: float) -> float | None:
    value = attrs.get(name)
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise OcciError(400, f"{name} must be a number, not {value!r}") from None
    if not low <= number <= high or isinstance(value, bool):
        raise OcciError(400, f"{name} must be between {low:g} and {high:g}")
    return number


def _first(attrs: Mapping[str, Value], names: tuple[str, ...]) -> str:
    values = {str(attrs[n]) for n in names if attrs.get(n) not in (None, "")}
    if len(values) > 1:
        raise OcciError(409, f"conflicting values for {' / '.join(names)}")
    return values.pop() if values else ""


def _check_immutable(attrs: Mapping[str, Value]) -> None:
    touched = sorted(IMMUTABLE & set(attrs))
    if touched:
        raise OcciError(400, f"{', '.join(touched)} cannot be set: the service keeps it")


def _tag(scope: Scope, tags: list[Cat], kind: str, object_id: int) -> None:
    for tag in tags:
        mixins.set_members(scope.cloud, scope.caller, mixin_id=scope.registry.mixin_id(tag),
                           add=[(kind, object_id)])


def _size(scope: Scope, found: list[Cat], attrs: Mapping[str, Value]
          ) -> tuple[float, int, int, str]:
    """CPU share, vCPUs, MB of memory and the size name (if a resource_tpl gave them)."""
    templates = [c for c in found if c.type_id in scope.registry.resource_tpls]
    if len(templates) > 1:
        raise OcciError(400, "a compute takes one resource_tpl mixin")
    if templates:
        name = scope.registry.resource_tpls[templates[0].type_id][1]
        size = next(t for t in scope.cloud.config.instance_types if t.name == name)
        return size.cpu, size.vcpu, size.memory, size.name
    cores = _number(attrs, "occi.compute.cores", 1, 1024) or 1
    memory = _number(attrs, "occi.compute.memory", 0.0625, 16384) or 1.0
    if cores != int(cores):
        raise OcciError(400, "occi.compute.cores is a whole number")
    return cores, int(cores), math.ceil(memory * MB_PER_GIB), ""


def create_compute(scope: Scope, message: Message) -> Entity:
    attrs = message.attributes
    _check_immutable(attrs)
    found = _mixins(scope, message, cats.COMPUTE)
    os_tpls = [scope.registry.os_tpls[c.type_id][1] for c in found
               if c.type_id in scope.registry.os_tpls]
    if len(os_tpls) != 1:
        raise OcciError(400, "a compute needs exactly one os_tpl mixin: the image it boots "
                        "(GET /-/ lists them)")
    cpu, vcpu, memory, size_name = _size(scope, found, attrs)
    arch = str(attrs.get("occi.compute.architecture", "x64"))
    if arch not in ARCHITECTURES:
        raise OcciError(400, f"occi.compute.architecture {arch!r}: x86 or x64")
    tmpl = template.Template([("CPU", f"{cpu:g}"), ("VCPU", str(vcpu)), ("MEMORY", str(memory)),
                              ("DISK", {"IMAGE_ID": str(os_tpls[0])})])
    if size_name:
        tmpl.set("INSTANCE_TYPE", size_name)
    title = str(attrs.get("occi.core.title", "")).strip()
    if title:
        tmpl.set("NAME", title)
    context = {"HOSTNAME": str(attrs.get("occi.compute.hostname") or title or "$NAME")}
    key = _first(attrs, cats.SSH_KEY_ATTRS)
    if key:
        context["SSH_PUBLIC_KEY"] = key
    user_data = _first(attrs, cats.USER_DATA_ATTRS)
    if user_data:
        context["USER_DATA"] = user_data
    tmpl.add("CONTEXT", context)
    for link in message.links:
        _inline_link(scope, tmpl, link)
    with absent("an image or network the request names"):
        try:
            vm_id = vms.create_vm(scope.cloud, scope.caller, text=tmpl.dumps())
        except (Conflict, InvalidState) as exc:
            raise OcciError(409, str(exc)) from None
    _tag(scope, [c for c in found if c.type_id in scope.registry.user_mixins], "vm", vm_id)
    return one(scope, "compute", str(vm_id))


def _inline_link(scope: Scope, tmpl: template.Template, link: Link) -> None:
    target = link.target or str(link.attributes.get("occi.core.target", ""))
    kind, ident = split_location(scope, target)
    if not ident.isdigit() or kind not in ("storage", "network"):
        raise OcciError(400, f"an inline link targets a storage or a network, not {target}")
    one(scope, kind, ident)
    if kind == "storage":
        disk = {"IMAGE_ID": ident}
        device = str(link.attributes.get("occi.storagelink.deviceid", ""))
        if device:
            disk["TARGET"] = device.removeprefix("/dev/")
        tmpl.add("DISK", disk)
    else:
        nic = {"NETWORK_ID": ident}
        address = str(link.attributes.get("occi.networkinterface.address", ""))
        if address:
            nic["IP"] = address
        tmpl.add("NIC", nic)


def create_storage(scope: Scope, message: Message) -> Entity:
    attrs = message.attributes
    _check_immutable(attrs)
    found = _mixins(scope, message, cats.STORAGE)
    size = _number(attrs, "occi.storage.size", 0.001, 65536)
    if size is None:
        raise OcciError(400, "occi.storage.size (GiB) is required")
    spec = template.Template([("TYPE", "DATABLOCK"), ("PERSISTENT", "YES"),
                              ("SIZE", str(math.ceil(size * MB_PER_GIB)))])
    title = str(attrs.get("occi.core.title", "")).strip()
    if title:
        spec.set("NAME", title)
    if attrs.get("occi.core.summary"):
        spec.set("DESCRIPTION", str(attrs["occi.core.summary"]))
    try:
        image_id = images.create_image(scope.cloud, scope.caller, text=spec.dumps(),
                                       name_from_id="storage-{id}")
    except Conflict as exc:
        raise OcciError(409, str(exc)) from None
    _tag(scope, [c for c in found if c.type_id in scope.registry.user_mixins], "image",
         image_id)
    return one(scope, "storage", str(image_id))


def create_network(scope: Scope, message: Message) -> Entity:
    attrs = message.attributes
    _check_immutable(attrs)
    found = _mixins(scope, message, cats.NETWORK)
    address = str(attrs.get("occi.network.address", "")).strip()
    if not address:
        raise OcciError(400, "occi.network.address (a CIDR, from the ipnetwork mixin) is "
                        "required")
    title = str(attrs.get("occi.core.title", "")).strip() or f"network-{address}"
    spec = template.Template([("NAME", title), ("TYPE", "RANGED"),
                              ("NETWORK_ADDRESS", address)])
    for name, attr in (("GATEWAY", "occi.network.gateway"), ("BRIDGE", "occi.network.label")):
        if attrs.get(attr):
            spec.set(name, str(attrs[attr]))
    vlan = _number(attrs, "occi.network.vlan", 0, 4095)
    if vlan is not None:
        spec.set("VLAN_ID", str(int(vlan)))
    try:
        vnet_id = vnets.create_vnet(scope.cloud, scope.caller, text=spec.dumps())
    except Conflict as exc:
        raise OcciError(409, str(exc)) from None
    _tag(scope, [c for c in found if c.type_id in scope.registry.user_mixins], "vnet", vnet_id)
    return one(scope, "network", str(vnet_id))


def _ends(scope: Scope, attrs: Mapping[str, Value], source_kind: str,
          target_kind: str) -> tuple[str, str]:
    """The ids at both ends of a link being created (occi.core.source and .target)."""
    source = str(attrs.get("occi.core.source", "")).strip('"')
    target = str(attrs.get("occi.core.target", "")).strip('"')
    if not source or not target:
        raise OcciError(400, f"the link needs occi.core.source (a {source_kind}) and "
                        f"occi.core.target (a {target_kind})")
    found_source, source_id = split_location(scope, source)
    found_target, target_id = split_location(scope, target)
    if (found_source, found_target) != (source_kind, target_kind):
        raise OcciError(400, f"the link goes from a {source_kind} to a {target_kind}")
    one(scope, source_kind, source_id)
    one(scope, target_kind, target_id)
    return source_id, target_id


def create_storagelink(scope: Scope, message: Message) -> Entity:
    attrs = message.attributes
    vm_id, image_id = _ends(scope, attrs, "compute", "storage")
    device = str(attrs.get("occi.storagelink.deviceid", "")).removeprefix("/dev/")
    try:
        disk_id = disks.attach_disk(scope.cloud, scope.caller, vm_id=int(vm_id),
                                    image_id=int(image_id), target=device)
    except (Conflict, InvalidState) as exc:
        raise OcciError(409, str(exc)) from None
    return one(scope, "storagelink", f"compute_{vm_id}_disk_{disk_id}")


def create_networkinterface(scope: Scope, message: Message) -> Entity:
    """A NIC on a compute that is not on a host (pending, held or stopped)."""
    vm_id, vnet_id = _ends(scope, message.attributes, "compute", "network")
    address = str(message.attributes.get("occi.networkinterface.address", "")).strip()
    try:
        nic_id = nics.attach_nic(scope.cloud, scope.caller, vm_id=int(vm_id),
                                 network_id=int(vnet_id), ip=address)
    except (Conflict, InvalidState) as exc:
        raise OcciError(409, str(exc)) from None
    return one(scope, "networkinterface", f"compute_{vm_id}_nic_{nic_id}")


CREATORS = {"compute": create_compute, "storage": create_storage, "network": create_network,
            "storagelink": create_storagelink, "networkinterface": create_networkinterface}


def update(scope: Scope, kind: str, ident: str, message: Message, *, full: bool) -> Entity:
    """POST (partial) or PUT (full) on an entity: sizes of a compute that holds no host,
    name, summary and size of a storage, and the user mixins of any."""
    entity = one(scope, kind, ident)
    if message.links and full:
        raise OcciError(400, "a full update (PUT) carries no Link")
    if message.links:
        raise OcciError(400, "links are created at their own location (/storagelink/)")
    attrs = message.attributes
    _check_immutable(attrs)
    found = _mixins(scope, message, entity.kind)
    tags = [c for c in found if c.type_id in scope.registry.user_mixins]
    if kind == "compute":
        _update_compute(scope, entity, found, attrs)
    elif kind == "storage":
        size = _number(attrs, "occi.storage.size", 0.001, 65536)
        try:
            images.update_image(
                scope.cloud, scope.caller, image_id=int(ident),
                name=str(attrs["occi.core.title"]) if "occi.core.title" in attrs else None,
                description=str(attrs["occi.core.summary"]) if "occi.core.summary" in attrs
                else None, size_mb=math.ceil(size * MB_PER_GIB) if size is not None else None)
        except (Conflict, InvalidRequest) as exc:
            raise OcciError(409, str(exc)) from None
    else:
        changed = {k for k, v in attrs.items() if entity.attributes.get(k) != v} - {
            "occi.core.id"}
        if changed:
            raise OcciError(400, f"{', '.join(sorted(changed))} cannot change on a {kind}")
    if kind in MEMBER_KIND:
        current = {m.type_id for m in entity.mixins if m.type_id in scope.registry.user_mixins}
        wanted = {t.type_id for t in tags}
        ref = (MEMBER_KIND[kind], int(ident))
        for type_id in wanted - current:
            mixins.set_members(scope.cloud, scope.caller,
                               mixin_id=scope.registry.mixin_ids[type_id], add=[ref])
        if full:
            for type_id in current - wanted:
                mixins.set_members(scope.cloud, scope.caller,
                                   mixin_id=scope.registry.mixin_ids[type_id], remove=[ref])
    return one(scope, kind, ident)


def _update_compute(scope: Scope, entity: Entity, found: list[Cat],
                    attrs: Mapping[str, Value]) -> None:
    title = attrs.get("occi.core.title")
    if title is not None and title != entity.attributes["occi.core.title"]:
        raise OcciError(400, "occi.core.title of a compute cannot change")
    sized = [c for c in found if c.type_id in scope.registry.resource_tpls]
    current = {"occi.compute.cores": entity.attributes["occi.compute.cores"],
               "occi.compute.memory": entity.attributes["occi.compute.memory"]}
    asked = {k: attrs[k] for k in current if k in attrs and attrs[k] != current[k]}
    if not sized and not asked:
        return
    cpu, vcpu, memory, name = _size(scope, found, {**current, **asked})
    extra = {"VCPU": str(vcpu)} | ({"INSTANCE_TYPE": name} if name else {})
    try:
        vms.resize(scope.cloud, scope.caller, vm_id=int(entity.location.split("/")[1]),
                   cpu=cpu, memory=memory, attributes=extra)
    except InvalidState as exc:
        raise OcciError(409, f"{exc}: stop the compute to resize it") from None
