"""`/compute`: VMs. Create from a COMPUTE document, read, change state and save a disk
with PUT, attach and detach disks with POST `/compute/<id>/action`, destroy with DELETE.

Save-as differs from ONE: OpenNebula 3.x marked the disk and saved it when the VM shut
down; Nubo saves a disk of a STOPPED VM at once (core.service.disks.save_disk), so on any
other VM it answers 400 and says to stop it first.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from apis.occi_xml import render
from apis.occi_xml.calls import Call, Reply, hidden
from apis.occi_xml.documents import href_id, ident, only, parse, text
from core import template
from core.errors import InvalidRequest, InvalidState, NotFound
from core.service import disks, images, vms, vnets

# STATE values a client may PUT, and the core action each one is
STATES = {"STOPPED": "stop", "SUSPENDED": "suspend", "RESUME": "resume", "CANCEL": "cancel",
          "SHUTDOWN": "shutdown", "REBOOT": "reboot", "DONE": "finalize"}
CREATE = ("NAME", "INSTANCE_TYPE", "DISK", "NIC", "CONTEXT")


def index(call: Call) -> Reply:
    return Reply(200, render.dump(render.computes(call.base, vms.list_vms(call.cloud, call.caller))))


def show(call: Call) -> Reply:
    return Reply(200, _document(call, ident("compute", call.ident)))


def _document(call: Call, vm_id: int) -> bytes:
    with hidden("compute", vm_id):
        info = vms.get_vm(call.cloud, call.caller, vm_id=vm_id)
    return render.dump(render.compute(call.base, info))


def create(call: Call) -> Reply:
    doc = parse(call.body, "COMPUTE")
    only(doc, CREATE)
    vm_id = vms.create_vm(call.cloud, call.caller, text=_template(call, doc).dumps())
    return Reply(201, _document(call, vm_id), location=f"{call.base}/compute/{vm_id}")


def _template(call: Call, doc: ET.Element) -> template.Template:
    """The VM template: the instance type's CPU, VCPU and MEMORY, DISK, NIC and CONTEXT.
    libcloud always sends an empty NAME: CONTEXT/HOSTNAME names the VM then, else the core
    does (`one-<id>`)."""
    tmpl = _size(call, text(doc, "INSTANCE_TYPE"))
    name = text(doc, "NAME") or text(doc, "CONTEXT/HOSTNAME")
    if name:
        tmpl.set("NAME", name)
    for number, disk in enumerate(doc.findall("DISK")):
        tmpl.add("DISK", _disk(call, disk, number))
    for number, nic in enumerate(doc.findall("NIC")):
        tmpl.add("NIC", _nic(call, nic, number))
    context = doc.find("CONTEXT")
    if context is not None:
        tmpl.add("CONTEXT", _context(context))
    return tmpl


def _size(call: Call, name: str) -> template.Template:
    config = call.cloud.config
    name = name or config.default_instance_type
    size = next((t for t in config.instance_types if t.name == name), None)
    if size is None:
        raise InvalidRequest(f"unknown INSTANCE_TYPE {name!r}; GET /instance_type lists them")
    return template.Template([("CPU", f"{size.cpu:g}"), ("VCPU", str(size.vcpu)),
                              ("MEMORY", str(size.memory)), ("INSTANCE_TYPE", size.name)])


def _disk(call: Call, element: ET.Element, number: int) -> dict[str, str]:
    only(element, ("STORAGE", "TARGET"))
    image_id = href_id(element.find("STORAGE"), "storage", f"DISK {number}")
    with hidden("storage", image_id):
        images.get_image(call.cloud, call.caller, image_id=image_id)
    disk = {"IMAGE_ID": str(image_id)}
    if text(element, "TARGET"):
        disk["TARGET"] = _target(text(element, "TARGET"))
    return disk


def _nic(call: Call, element: ET.Element, number: int) -> dict[str, str]:
    """NIC = [NETWORK_ID, IP]. libcloud copies the network's ADDRESS (the network address
    itself, never handed out) into IP: that IP means "any free address"."""
    only(element, ("NETWORK", "IP"))
    vnet_id = href_id(element.find("NETWORK"), "network", f"NIC {number}")
    with hidden("network", vnet_id):
        vnet, _ = vnets.get_vnet(call.cloud, call.caller, vnet_id=vnet_id)
    nic = {"NETWORK_ID": str(vnet_id)}
    ip = text(element, "IP")
    if ip and ip != render.address(vnet):
        nic["IP"] = ip
    return nic


def _context(element: ET.Element) -> dict[str, str]:
    for child in element:
        if len(child):
            raise InvalidRequest(f"CONTEXT/{child.tag} must be a plain value")
    return {child.tag: (child.text or "").strip() for child in element}


def _target(device: str) -> str:
    """`sdb` from `sdb` or `/dev/sdb`."""
    return device.removeprefix("/dev/")


def update(call: Call) -> Reply:
    """PUT: a STATE to go to, or a DISK with SAVE_AS."""
    vm_id = ident("compute", call.ident)
    doc = parse(call.body, "COMPUTE")
    given = text(doc, "ID")
    if given and given != str(vm_id):
        raise InvalidRequest(f"the document's ID {given} is not compute {vm_id}")
    state = text(doc, "STATE").upper()
    disk = doc.find("DISK[SAVE_AS]")
    if state:
        _change_state(call, vm_id, state)
    elif disk is not None:
        _save_as(call, vm_id, disk)
    else:
        raise InvalidRequest("PUT a COMPUTE with a STATE, or with a DISK that has a SAVE_AS")
    return Reply(202, _document(call, vm_id))


def _change_state(call: Call, vm_id: int, state: str) -> None:
    action = STATES.get(state)
    if action is None:
        raise InvalidRequest(f"STATE {state} cannot be asked for; ask for one of "
                             f"{', '.join(STATES)}")
    with hidden("compute", vm_id):
        vms.act(call.cloud, call.caller, vm_id=vm_id, action=action)


def _save_as(call: Call, vm_id: int, disk: ET.Element) -> None:
    save_as = disk.find("SAVE_AS")
    name = (save_as.get("name", "") if save_as is not None else "").strip()
    if not name:
        raise InvalidRequest("SAVE_AS needs a name attribute: <SAVE_AS name=\"...\"/>")
    disk_id = _disk_id(call, vm_id, disk)
    try:
        with hidden("compute", vm_id):
            disks.save_disk(call.cloud, call.caller, vm_id=vm_id, disk_id=disk_id, name=name)
    except InvalidState as exc:
        raise InvalidRequest(f"compute {vm_id} is {exc.state}: Nubo saves a disk of a STOPPED "
                             "compute only, at once (ONE waited for the shutdown); PUT "
                             "<STATE>STOPPED</STATE> first") from None


def _disk_id(call: Call, vm_id: int, disk: ET.Element) -> int:
    """The DISK_ID to save. With a STORAGE href, the disk of that image (libcloud puts the
    image's id, not the disk's, in DISK@id); without one, DISK@id."""
    storage = disk.find("STORAGE")
    if storage is None:
        return _disk_ref(disk, "the DISK to save")
    image_id = href_id(storage, "storage", "the DISK to save")
    with hidden("compute", vm_id):
        info = vms.get_vm(call.cloud, call.caller, vm_id=vm_id)
    found = disks.disk_images(info.vm).get(image_id)
    if found is None:
        raise NotFound("disk", f"of storage {image_id} in compute {vm_id}")
    return int(found["DISK_ID"])


def _disk_ref(element: ET.Element | None, where: str) -> int:
    """The DISK_ID in `<DISK id="2"/>`."""
    raw = element.get("id", "") if element is not None else ""
    if not raw.isdigit():
        raise InvalidRequest(f"{where} needs <DISK id=\"<DISK_ID>\"/>, as the COMPUTE shows it")
    return ident("disk", raw)


def delete(call: Call) -> Reply:
    vm_id = ident("compute", call.ident)
    with hidden("compute", vm_id):
        vms.act(call.cloud, call.caller, vm_id=vm_id, action="finalize")
    return Reply(204)


def action(call: Call) -> Reply:
    """POST /compute/<id>/action: ATTACHDISK and DETACHDISK (ONE 3.6+), answered 202."""
    vm_id = ident("compute", call.ident)
    doc = parse(call.body, "ACTION")
    perform = text(doc, "PERFORM").upper()
    params = doc.find("PARAMS")
    if params is None:
        params = ET.Element("PARAMS")
    if perform == "ATTACHDISK":
        _attach(call, vm_id, params)
    elif perform == "DETACHDISK":
        disk_id = _disk_ref(params.find("DISK"), "DETACHDISK")
        with hidden("compute", vm_id):
            disks.detach_disk(call.cloud, call.caller, vm_id=vm_id, disk_id=disk_id)
    else:
        raise InvalidRequest(f"PERFORM {perform or '(none)'} is unknown; this service performs "
                             "ATTACHDISK and DETACHDISK")
    return Reply(202)


def _attach(call: Call, vm_id: int, params: ET.Element) -> None:
    """`<PARAMS><STORAGE href=".../storage/8"/><TARGET>sdb</TARGET></PARAMS>`"""
    image_id = href_id(params.find("STORAGE"), "storage", "ATTACHDISK")
    with hidden("storage", image_id):
        images.get_image(call.cloud, call.caller, image_id=image_id)
    with hidden("compute", vm_id):
        disks.attach_disk(call.cloud, call.caller, vm_id=vm_id, image_id=image_id,
                          target=_target(text(params, "TARGET")))
