"""Core objects seen as OCCI entities: VMs as computes, images as storage, virtual networks
as networks, a VM's disks and NICs as the links it owns. One table maps the core's states
to each kind's OCCI state; every view lists only the actions its state allows."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from apis.occi import categories as cats
from apis.occi.categories import Cat, Registry
from apis.occi.text import Value
from core import template
from core.lifecycle import LcmState, VmState, state_name
from core.models import (
    IMAGE_DISABLED,
    IMAGE_ERROR,
    IMAGE_LOCKED,
    IMAGE_READY,
    IMAGE_USED,
    Image,
    Lease,
    VNet,
)
from core.service import images, mixins, vnets
from core.service.context import Caller, Cloud
from core.service.vms import VMInfo

IMAGE_OS, IMAGE_DATABLOCK = 0, 2
MB_PER_GIB = 1024.0


@dataclass
class Entity:
    kind: Cat
    location: str  # relative to the service root: "compute/5"
    attributes: dict[str, Value]
    mixins: list[Cat] = field(default_factory=list)
    links: list[Entity] = field(default_factory=list)  # owned links (resources)
    actions: list[Cat] = field(default_factory=list)
    source: str = ""  # links: the resource that owns it
    target: str = ""  # links: what it points to
    target_kind: str = ""


# --- states ---

ACTIVE_LCM = {LcmState.RUNNING, LcmState.HOTPLUG, LcmState.MIGRATE, LcmState.SAVE_MIGRATE}


def compute_state(state: int, lcm: int) -> str:
    """OCCI 1.2's occi.compute.state of a VM (DONE VMs are not shown at all)."""
    if state == VmState.ACTIVE:
        if lcm in ACTIVE_LCM:
            return "active"
        return "error" if lcm in (LcmState.UNKNOWN, LcmState.FAILURE) else "inactive"
    return {VmState.SUSPENDED: "suspended", VmState.FAILED: "error"}.get(VmState(state),
                                                                         "inactive")


def compute_actions(state: int, lcm: int) -> list[str]:
    """Terms of the compute actions that make sense now."""
    if state == VmState.ACTIVE and lcm in (LcmState.RUNNING, LcmState.UNKNOWN):
        return ["stop", "restart", "suspend"]
    if state in (VmState.STOPPED, VmState.SUSPENDED, VmState.HOLD, VmState.FAILED):
        return ["start", "save"] if state == VmState.STOPPED else ["start"]
    if state == VmState.PENDING:
        return ["stop"]
    return []


def storage_state(row: Image) -> str:
    return {IMAGE_DISABLED: "offline", IMAGE_ERROR: "error"}.get(row.state, "online")


# --- the registry of a user's categories ---

def registry(cloud: Cloud, caller: Caller) -> Registry:
    reg = Registry()
    for row in images.list_images(cloud, caller):  # its own and the public ones
        if row.type == IMAGE_OS and row.id is not None:
            cat = cats.os_tpl(row.id, row.name)
            reg.os_tpls[cat.type_id] = (cat, row.id)
    for size in cloud.config.instance_types:
        cat = cats.resource_tpl(size.name, size.vcpu, size.memory / MB_PER_GIB)
        reg.resource_tpls[cat.type_id] = (cat, size.name)
    for mixin in mixins.list_mixins(cloud, caller):
        tag = Cat(mixin.term, mixin.scheme, "mixin", mixin.title, location=mixin.location)
        reg.user_mixins[tag.type_id] = tag
        reg.mixin_ids[tag.type_id] = mixin.id or 0
    return reg


# --- computes ---

def compute(info: VMInfo, reg: Registry, image_names: Mapping[int, str],
            tags: Sequence[Cat] = ()) -> Entity:
    vm = info.vm
    assert vm.id is not None
    tmpl = template.parse(vm.template)
    context = tmpl.vector("CONTEXT") or {}
    location = f"compute/{vm.id}"
    vcpu = tmpl.get("VCPU") or ""
    attrs: dict[str, Value] = {
        "occi.core.id": str(vm.id),
        "occi.core.title": vm.name,
        "occi.compute.hostname": context.get("HOSTNAME") or vm.name,
        "occi.compute.architecture": "x64",
        "occi.compute.cores": int(vcpu) if vcpu.isdigit() else max(1, round(vm.cpu)),
        "occi.compute.share": max(1, round(vm.cpu * 1024)),
        "occi.compute.memory": round(vm.memory / MB_PER_GIB, 2),
        "occi.compute.state": compute_state(vm.state, vm.lcm_state),
        "occi.compute.state.message": vm.message or state_name(vm.state, vm.lcm_state),
    }
    found: list[Cat] = []
    disks = tmpl.vectors("DISK")
    image_disks = [d for d in disks if d.get("IMAGE_ID", "").isdigit()]
    if image_disks:
        root = int(image_disks[0]["IMAGE_ID"])
        if root in image_names:
            found.append(cats.os_tpl(root, image_names[root]))
    size_name = tmpl.get("INSTANCE_TYPE") or ""
    if size_name:
        found += [c for c, name in reg.resource_tpls.values() if name == size_name]
    if context.get("SSH_PUBLIC_KEY"):
        found.append(cats.SSH_KEY)
        attrs["occi.credentials.ssh.publickey"] = context["SSH_PUBLIC_KEY"]
    if context.get("USER_DATA"):
        found.append(cats.USER_DATA)
        attrs["occi.compute.userdata"] = context["USER_DATA"]
    links = [storagelink(vm.id, d, vm.state, vm.lcm_state) for d in image_disks[1:]]
    links += [networkinterface(vm.id, n, index) for index, n in enumerate(tmpl.vectors("NIC"))]
    actions = [a for a in cats.COMPUTE_ACTIONS if a.term in compute_actions(vm.state,
                                                                            vm.lcm_state)]
    return Entity(cats.COMPUTE, location, attrs, [*found, *tags], links, actions)


def storagelink(vm_id: int, disk: Mapping[str, str], state: int, lcm: int) -> Entity:
    busy = disk.get("ATTACH") or disk.get("DETACH")
    running = compute_state(state, lcm) == "active"
    attrs: dict[str, Value] = {
        "occi.core.id": f"compute_{vm_id}_disk_{disk.get('DISK_ID', '')}",
        "occi.storagelink.deviceid": "/dev/" + disk.get("TARGET", ""),
        "occi.storagelink.state": "active" if running and not busy else "inactive",
    }
    if busy:
        attrs["occi.storagelink.state.message"] = "attaching" if disk.get("ATTACH") else \
            "detaching"
    return Entity(cats.STORAGELINK, f"storagelink/{attrs['occi.core.id']}", attrs,
                  source=f"compute/{vm_id}", target=f"storage/{disk['IMAGE_ID']}",
                  target_kind=cats.STORAGE.type_id)


def networkinterface(vm_id: int, nic: Mapping[str, str], index: int) -> Entity:
    nic_id = nic.get("NIC_ID", str(index))
    attrs: dict[str, Value] = {
        "occi.core.id": f"compute_{vm_id}_nic_{nic_id}",
        "occi.networkinterface.interface": f"eth{nic_id}",
        "occi.networkinterface.mac": nic.get("MAC", ""),
        "occi.networkinterface.state": "active",
        "occi.networkinterface.address": nic.get("IP", ""),
        "occi.networkinterface.allocation": "static" if nic.get("IP_REQUESTED") else "dynamic",
    }
    if nic.get("GATEWAY"):
        attrs["occi.networkinterface.gateway"] = nic["GATEWAY"]
    return Entity(cats.NETWORKINTERFACE, f"networkinterface/{attrs['occi.core.id']}", attrs,
                  [cats.IPNETWORKINTERFACE], source=f"compute/{vm_id}",
                  target=f"network/{nic.get('NETWORK_ID', '')}",
                  target_kind=cats.NETWORK.type_id)


# --- storage and networks ---

def storage(row: Image, tags: Sequence[Cat] = ()) -> Entity:
    assert row.id is not None
    tmpl = template.parse(row.template)
    state = storage_state(row)
    attrs: dict[str, Value] = {
        "occi.core.id": str(row.id),
        "occi.core.title": row.name,
        "occi.core.summary": tmpl.get("DESCRIPTION") or "",
        "occi.storage.size": round(row.size_mb / MB_PER_GIB, 3),
        "occi.storage.state": state,
        "occi.storage.state.message": {
            IMAGE_READY: "ready", IMAGE_USED: f"used by {row.running_vms} VM(s)",
            IMAGE_DISABLED: "disabled", IMAGE_LOCKED: "locked: being copied",
            IMAGE_ERROR: tmpl.get("ERROR") or "error"}.get(row.state, ""),
    }
    terms = ["offline", "backup", "snapshot", "resize"] if state == "online" else ["online"]
    actions = [a for a in cats.STORAGE_ACTIONS if a.term in terms]
    return Entity(cats.STORAGE, f"storage/{row.id}", attrs, list(tags), actions=actions)


def network(vnet: VNet, leases: Sequence[Lease], tags: Sequence[Cat] = ()) -> Entity:
    assert vnet.id is not None
    tmpl = template.parse(vnet.template)
    attrs: dict[str, Value] = {
        "occi.core.id": str(vnet.id),
        "occi.core.title": vnet.name,
        "occi.network.label": vnet.bridge,
        "occi.network.state": "inactive" if vnets.is_down(vnet) else "active",
        "occi.network.state.message": f"{sum(1 for x in leases if x.vm_id)} lease(s) in use",
        "occi.network.allocation": "dynamic",
    }
    if vnet.vlan_id.isdigit():
        attrs["occi.network.vlan"] = int(vnet.vlan_id)
    if vnet.type == vnets.RANGED:
        attrs["occi.network.address"] = str(vnets.network_of(tmpl))
    if tmpl.get("GATEWAY"):
        attrs["occi.network.gateway"] = tmpl.get("GATEWAY") or ""
    actions = [a for a in cats.NETWORK_ACTIONS
               if a.term == ("up" if attrs["occi.network.state"] == "inactive" else "down")]
    return Entity(cats.NETWORK, f"network/{vnet.id}", attrs, [cats.IPNETWORK, *tags],
                  actions=actions)
