"""A VM's disks and NICs after creation (later OpenNebula versions' calls): `one.vm.attach`,
`one.vm.detach`, `one.vm.savedisk` (3.6+/4.x) and `one.vm.attachnic`, `one.vm.detachnic`
(4.0)."""

from __future__ import annotations

from typing import Any

from apis.xmlrpc.errors import BadCall
from apis.xmlrpc.methods import method
from core import template
from core.service import disks, images, nics, vnets
from core.service.context import Caller, Cloud


@method("one.vm.attach", int, str)
def vm_attach(cloud: Cloud, caller: Caller, vm_id: int, text: str) -> int:
    """3.6+: `DISK = [ IMAGE_ID = n | IMAGE = name, TARGET = ... ]` as a new disk."""
    disk = template.parse(text).vector("DISK")
    if disk is None:
        raise BadCall("the template must hold one DISK = [ IMAGE_ID = ... ] vector")
    if disk.get("IMAGE_ID", "").isdigit():
        image_id = int(disk["IMAGE_ID"])
    elif disk.get("IMAGE"):
        image_id = images.find_image(cloud, caller, ref=disk["IMAGE"])
    else:
        raise BadCall("the DISK needs IMAGE_ID or IMAGE")
    disks.attach_disk(cloud, caller, vm_id=vm_id, image_id=image_id,
                      target=disk.get("TARGET", ""))
    return vm_id


@method("one.vm.detach", int, int)
def vm_detach(cloud: Cloud, caller: Caller, vm_id: int, disk_id: int) -> int:
    disks.detach_disk(cloud, caller, vm_id=vm_id, disk_id=disk_id)
    return vm_id


@method("one.vm.savedisk", int, int, str, optional=(str, object, object))
def vm_savedisk(cloud: Cloud, caller: Caller, vm_id: int, disk_id: int, name: str,
                type_name: str = "", _snapshot: Any = -1, _hot: Any = False) -> int:
    """Copies a STOPPED VM's disk into a new image now (3.4 deferred the copy of a running
    VM's disk to its shutdown; here the VM must be stopped first)."""
    return disks.save_disk(cloud, caller, vm_id=vm_id, disk_id=disk_id, name=name,
                           type_name=type_name or "OS")


@method("one.vm.attachnic", int, str)
def vm_attachnic(cloud: Cloud, caller: Caller, vm_id: int, text: str) -> int:
    """4.0: `NIC = [ NETWORK_ID = n | NETWORK = name, IP = ... ]`, while the VM is off a host."""
    nic = template.parse(text).vector("NIC")
    if nic is None:
        raise BadCall("the template must hold one NIC = [ NETWORK_ID = ... ] vector")
    network = nic.get("NETWORK_ID", "")
    vnet_id = int(network) if network.isdigit() else vnets.find_vnet(
        cloud, caller, ref=nic.get("NETWORK", ""))
    nics.attach_nic(cloud, caller, vm_id=vm_id, network_id=vnet_id, ip=nic.get("IP", ""))
    return vm_id


@method("one.vm.detachnic", int, int)
def vm_detachnic(cloud: Cloud, caller: Caller, vm_id: int, nic_id: int) -> int:
    nics.detach_nic(cloud, caller, vm_id=vm_id, nic_id=nic_id)
    return vm_id
