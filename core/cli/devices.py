"""`nubo vm disks | disk-attach | disk-detach | disk-saveas | nic-attach | nic-detach`: a VM's
disks and NICs after creation."""

from __future__ import annotations

import argparse
import time
import xml.etree.ElementTree as ET
from typing import Any

from core.cli import views
from core.cli.client import Client, CliError, resolve
from core.cli.commands import Subparsers, command
from core.cli.output import Column, emit, emit_json, emit_rows

FLAGS = ("ATTACH", "DETACH", "SAVE_AS")


def vm_disks(client: Client, vm_id: int) -> list[dict[str, str]]:
    tmpl = views.vm(ET.fromstring(client.call("one.vm.info", vm_id)))["template"]
    found = tmpl.get("DISK", [])
    return found if isinstance(found, list) else [found]


def _settled(client: Client, vm_id: int, timeout: float) -> list[dict[str, str]]:
    """The VM's disks once no disk work is under way (CliError after `timeout`)."""
    deadline = time.monotonic() + timeout if timeout else None
    while True:
        found = vm_disks(client, vm_id)
        if not any(d.get(flag) for d in found for flag in FLAGS):
            return found
        if deadline is not None and time.monotonic() > deadline:
            raise CliError(f"VM {vm_id}: the disk operation did not finish in {timeout:g} s")
        time.sleep(0.5)


def _message(client: Client, vm_id: int) -> str:
    return str(views.vm(ET.fromstring(client.call("one.vm.info", vm_id)))["message"])


def attach(client: Client, args: argparse.Namespace) -> int:
    vm_id = resolve(client, "vm", args.vm)
    image_id = resolve(client, "image", args.image)
    disk = f"DISK = [ IMAGE_ID = {image_id}" + (f", TARGET = {args.target} ]" if args.target
                                                 else " ]")
    before = {d.get("DISK_ID") for d in vm_disks(client, vm_id)}
    client.call("one.vm.attach", vm_id, disk)
    new = [d for d in vm_disks(client, vm_id) if d.get("DISK_ID") not in before]
    if not new:
        raise CliError(f"VM {vm_id}: the disk was not attached")
    disk_id = new[0]["DISK_ID"]
    if args.wait:
        if not any(d.get("DISK_ID") == disk_id for d in _settled(client, vm_id, args.timeout)):
            raise CliError(f"VM {vm_id}: attaching image {image_id} failed: "
                           f"{_message(client, vm_id)}")
    return _report(args, {"vm": vm_id, "disk_id": int(disk_id), "target": new[0]["TARGET"]},
                   f"DISK_ID: {disk_id} (target {new[0]['TARGET']})")


def detach(client: Client, args: argparse.Namespace) -> int:
    vm_id = resolve(client, "vm", args.vm)
    client.call("one.vm.detach", vm_id, args.disk_id)
    if args.wait and any(d.get("DISK_ID") == str(args.disk_id)
                         for d in _settled(client, vm_id, args.timeout)):
        raise CliError(f"VM {vm_id}: detaching disk {args.disk_id} failed: "
                       f"{_message(client, vm_id)}")
    return 0


def saveas(client: Client, args: argparse.Namespace) -> int:
    vm_id = resolve(client, "vm", args.vm)
    image_id = int(client.call("one.vm.savedisk", vm_id, args.disk_id, args.name, args.type))
    if args.wait:
        _settled(client, vm_id, args.timeout)
        image = views.image(ET.fromstring(client.call("one.image.info", image_id)))
        if image["state"] != "READY":
            raise CliError(f"saving disk {args.disk_id} of VM {vm_id} failed: "
                           f"{image['template'].get('ERROR', image['state'])}")
    return _report(args, {"id": image_id}, f"ID: {image_id}")


def _size(client: Client, disk: dict[str, str]) -> int:
    """MB: the disk's SIZE, else its image's."""
    if disk.get("SIZE", "").isdigit():
        return int(disk["SIZE"])
    if disk.get("IMAGE_ID", "").isdigit():
        image = views.image(ET.fromstring(client.call("one.image.info", int(disk["IMAGE_ID"]))))
        return int(image["size_mb"])
    return 0


def list_disks(client: Client, args: argparse.Namespace) -> int:
    vm_id = resolve(client, "vm", args.vm)
    rows: list[dict[str, Any]] = [{
        "disk_id": int(d.get("DISK_ID", "-1")), "target": d.get("TARGET", ""),
        "type": d.get("TYPE", ""), "image": d.get("IMAGE", ""),
        "image_id": int(d["IMAGE_ID"]) if d.get("IMAGE_ID", "").isdigit() else -1,
        "size_mb": _size(client, d),
        "persistent": d.get("CLONE", "YES") == "NO",
        "busy": next((flag.lower() for flag in FLAGS if d.get(flag)), ""),
    } for d in vm_disks(client, vm_id)]
    return emit_rows(COLUMNS, rows, args.json)


COLUMNS = [
    Column("ID", lambda d: str(d["disk_id"]), right=True),
    Column("TARGET", lambda d: d["target"]),
    Column("TYPE", lambda d: d["type"]),
    Column("IMAGE", lambda d: d["image"] or "-"),
    Column("SIZE", lambda d: f"{d['size_mb']}M" if d["size_mb"] else "-", right=True),
    Column("PERSISTENT", lambda d: "yes" if d["persistent"] else "no"),
    Column("BUSY", lambda d: d["busy"] or "-"),
]


def nic_attach(client: Client, args: argparse.Namespace) -> int:
    vm_id = resolve(client, "vm", args.vm)
    network = resolve(client, "vnet", args.network)
    nic = f"NIC = [ NETWORK_ID = {network}" + (f", IP = {args.ip} ]" if args.ip else " ]")
    client.call("one.vm.attachnic", vm_id, nic)
    tmpl = views.vm(ET.fromstring(client.call("one.vm.info", vm_id)))["template"]
    found = tmpl.get("NIC", [])
    last = (found if isinstance(found, list) else [found])[-1]
    return _report(args, {"vm": vm_id, "nic_id": int(last["NIC_ID"]), "ip": last["IP"],
                          "mac": last["MAC"]},
                   f"NIC_ID: {last['NIC_ID']} ({last['IP']}, {last['MAC']})")


def nic_detach(client: Client, args: argparse.Namespace) -> int:
    client.call("one.vm.detachnic", resolve(client, "vm", args.vm), args.nic_id)
    return 0


def _report(args: argparse.Namespace, value: dict[str, Any], line: str) -> int:
    if args.json:
        emit_json(value)
    else:
        emit(line)
    return 0


def _wait_options(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--wait", action="store_true",
                   help=f"wait until the {what} is done; exit 1 if it failed")
    p.add_argument("--timeout", type=float, default=300.0, metavar="S",
                   help="with --wait: give up after S seconds (default 300; 0: never)")


def register(verbs: Subparsers) -> None:
    p = command(verbs, "disks", "list a VM's disks", list_disks)
    p.add_argument("vm", metavar="ID|NAME")
    p = command(verbs, "disk-attach", "attach an image to a VM as a new disk; prints its DISK_ID",
                attach, description=(
                    "Attach an image as a new disk. A RUNNING VM gets it hot-plugged (state\n"
                    "HOTPLUG while the drivers work); a STOPPED VM gets it in its saved files;\n"
                    "a VM not yet deployed only changes its template.\n\n"
                    "  nubo vm disk-attach web data-volume --target vdb --wait"))
    p.add_argument("vm", metavar="ID|NAME")
    p.add_argument("image", metavar="IMAGE", help="image name or id")
    p.add_argument("--target", metavar="DEV", help="device name in the guest (default: next "
                   "free one, e.g. hdb)")
    _wait_options(p, "attach")
    p = command(verbs, "disk-detach", "detach a disk from a VM (see `vm disks` for ids)", detach)
    p.add_argument("vm", metavar="ID|NAME")
    p.add_argument("disk_id", type=int, metavar="DISK_ID")
    _wait_options(p, "detach")
    p = command(verbs, "disk-saveas", "copy a STOPPED VM's disk into a new image; prints its ID",
                saveas)
    p.add_argument("vm", metavar="ID|NAME")
    p.add_argument("disk_id", type=int, metavar="DISK_ID")
    p.add_argument("name", metavar="NAME", help="name of the new image")
    p.add_argument("--type", default="OS", choices=("OS", "DATABLOCK", "CDROM"),
                   help="type of the new image (default OS)")
    _wait_options(p, "copy")
    p = command(verbs, "nic-attach", "give a VM that is not on a host a new NIC; prints its "
                "NIC_ID", nic_attach, description=(
                    "Add a NIC (and its lease) to a VM that is pending, held or stopped; a\n"
                    "running VM keeps its NICs.\n\n"
                    "  nubo vm nic-attach web red --ip 10.0.1.7"))
    p.add_argument("vm", metavar="ID|NAME")
    p.add_argument("network", metavar="NETWORK", help="virtual network name or id")
    p.add_argument("--ip", help="the address to lease (default: the next free one)")
    p = command(verbs, "nic-detach", "remove a NIC from a VM that is not on a host", nic_detach)
    p.add_argument("vm", metavar="ID|NAME")
    p.add_argument("nic_id", type=int, metavar="NIC_ID")
