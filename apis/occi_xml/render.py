"""The XML answers, in the shapes of ONE 3.x's occi-server (reference occi.md §4.8).

Every href is absolute and contains `/compute/`, `/storage/` or `/network/`: libcloud
takes ids by cutting hrefs there. Numbers libcloud converts with `int()` (MEMORY, SIZE)
are whole. A COMPUTE always has an INSTANCE_TYPE element, empty when the VM was not made
from one (libcloud reads its text without checking it is there), and each DISK a STORAGE
href (empty after `/storage/` for a volatile disk, as ONE rendered it).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence

from core import template
from core.config import InstanceType
from core.lifecycle import VmState
from core.models import Image, Lease, VNet
from core.service import vnets
from core.service.images import IMAGE_TYPES
from core.service.vms import VMInfo

IMAGE_STATES = ("INIT", "READY", "USED", "DISABLED", "LOCKED", "ERROR")
IMAGE_TYPE_NAMES = {number: name for name, number in IMAGE_TYPES.items()}
HIDDEN_CONTEXT = {"DISK_ID"}  # where the core put the context CD, not the user's context


def dump(element: ET.Element) -> bytes:
    return ET.tostring(element)  # US-ASCII, other characters as references


def _child(parent: ET.Element, tag: str, value: object, **attrs: str) -> ET.Element:
    element = ET.SubElement(parent, tag, attrs)
    element.text = str(value)
    return element


def _collection(base: str, tag: str, kind: str, items: Iterable[tuple[object, str]]) -> ET.Element:
    root = ET.Element(f"{tag}_COLLECTION")
    for ident, name in items:
        ET.SubElement(root, tag, {"href": f"{base}/{kind}/{ident}", "name": name})
    return root


# --- compute ---

def compute(base: str, info: VMInfo) -> ET.Element:
    vm = info.vm
    tmpl = template.parse(vm.template)
    root = ET.Element("COMPUTE", {"href": f"{base}/compute/{vm.id}"})
    _child(root, "ID", vm.id)
    _child(root, "NAME", vm.name)
    _child(root, "CPU", f"{vm.cpu:g}")
    _child(root, "MEMORY", vm.memory)
    size = tmpl.get("INSTANCE_TYPE") or ""
    if size:
        _child(root, "INSTANCE_TYPE", size, href=f"{base}/instance_type/{size}")
    else:
        ET.SubElement(root, "INSTANCE_TYPE")
    _child(root, "STATE", VmState(vm.state).name)
    for disk in tmpl.vectors("DISK"):
        root.append(_disk(base, disk))
    for nic in tmpl.vectors("NIC"):
        element = ET.SubElement(root, "NIC")
        ET.SubElement(element, "NETWORK", {"href": f"{base}/network/{nic.get('NETWORK_ID', '')}",
                                           "name": nic.get("NETWORK", "")})
        _child(element, "IP", nic.get("IP", ""))
        _child(element, "MAC", nic.get("MAC", ""))
    context = tmpl.vector("CONTEXT")
    if context is not None:
        element = ET.SubElement(root, "CONTEXT")
        for name, value in context.items():
            if name not in HIDDEN_CONTEXT:
                _child(element, name, value)
    return root


def _disk(base: str, disk: dict[str, str]) -> ET.Element:
    element = ET.Element("DISK", {"id": disk.get("DISK_ID", "")})
    ET.SubElement(element, "STORAGE", {"href": f"{base}/storage/{disk.get('IMAGE_ID', '')}",
                                       "name": disk.get("IMAGE", "")})
    _child(element, "TYPE", disk.get("TYPE", "DISK"))
    _child(element, "TARGET", disk.get("TARGET", ""))
    if disk.get("SAVE_AS"):
        ET.SubElement(element, "SAVE_AS", {"href": f"{base}/storage/{disk['SAVE_AS']}"})
    return element


def computes(base: str, infos: Sequence[VMInfo]) -> ET.Element:
    return _collection(base, "COMPUTE", "compute", ((i.vm.id, i.vm.name) for i in infos))


# --- storage ---

def storage(base: str, image: Image) -> ET.Element:
    tmpl = template.parse(image.template)
    root = ET.Element("STORAGE", {"href": f"{base}/storage/{image.id}"})
    _child(root, "ID", image.id)
    _child(root, "NAME", image.name)
    _child(root, "STATE", IMAGE_STATES[image.state] if image.state < len(IMAGE_STATES) else "")
    _child(root, "TYPE", IMAGE_TYPE_NAMES.get(image.type, "OS"))
    _child(root, "DESCRIPTION", tmpl.get("DESCRIPTION") or "")
    _child(root, "SIZE", image.size_mb)
    _child(root, "FSTYPE", image.fstype)
    _child(root, "PUBLIC", "NO")
    _child(root, "PERSISTENT", "YES" if image.persistent else "NO")
    return root


def storages(base: str, images: Sequence[Image]) -> ET.Element:
    return _collection(base, "STORAGE", "storage", ((i.id, i.name) for i in images))


# --- network ---

def address(vnet: VNet) -> str:
    """The network's ADDRESS: its NETWORK_ADDRESS without a /prefix ("" for FIXED ones)."""
    return (template.parse(vnet.template).get("NETWORK_ADDRESS") or "").split("/")[0].strip()


def _size(vnet: VNet, leases: Sequence[Lease]) -> str:
    """NETWORK_SIZE as written, else the number of addresses the network hands out."""
    tmpl = template.parse(vnet.template)
    if tmpl.get("NETWORK_SIZE"):
        return tmpl.get("NETWORK_SIZE") or ""
    if vnet.type == vnets.FIXED:
        return str(len(leases))
    first, last = vnets.address_range(tmpl)
    return str(last - first + 1)


def network(base: str, vnet: VNet, leases: Sequence[Lease]) -> ET.Element:
    root = ET.Element("NETWORK", {"href": f"{base}/network/{vnet.id}"})
    _child(root, "ID", vnet.id)
    _child(root, "NAME", vnet.name)
    _child(root, "DESCRIPTION", template.parse(vnet.template).get("DESCRIPTION") or "")
    _child(root, "ADDRESS", address(vnet))
    _child(root, "SIZE", _size(vnet, leases))
    _child(root, "USED_LEASES", sum(1 for lease in leases if (lease.vm_id or 0) > 0))
    _child(root, "PUBLIC", "NO")
    return root


def networks(base: str, rows: Sequence[tuple[VNet, list[Lease]]]) -> ET.Element:
    return _collection(base, "NETWORK", "network", ((v.id, v.name) for v, _ in rows))


# --- instance types ---

def instance_type(base: str, size: InstanceType) -> ET.Element:
    root = ET.Element("INSTANCE_TYPE", {"href": f"{base}/instance_type/{size.name}",
                                        "name": size.name})
    _child(root, "ID", size.name)
    _child(root, "NAME", size.name)
    _child(root, "CPU", f"{size.cpu:g}")
    _child(root, "VCPU", size.vcpu)
    _child(root, "MEMORY", size.memory)
    return root


def instance_types(base: str, sizes: Sequence[InstanceType]) -> ET.Element:
    """Each entry has a `name` (the 3.8 driver fetches it) and inline children (3.2 reads
    them)."""
    root = ET.Element("INSTANCE_TYPE_COLLECTION")
    root.extend(instance_type(base, size) for size in sizes)
    return root
