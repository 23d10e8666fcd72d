"""What the network drivers (vnm/<driver>/{pre,post,clean}) share: OpenNebula 3.4's
arguments (`pre <base64 VM XML>`, `post <base64 VM XML> <deploy id>`, `clean <base64 VM
XML>`) read into the VM's NICs, each with the tap the qemu driver gives it."""

from __future__ import annotations

import base64
import binascii
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from host_command import fail
from qemu_driver import tap_name


@dataclass(frozen=True)
class Nic:
    nic_id: str
    tap: str
    mac: str
    ip: str
    network_id: str
    bridge: str
    attributes: dict[str, str]
    # the VM's security groups (core/service/sgrules.py): whether it is in any, and the
    # SECURITY_GROUP_RULE vectors of its document; they apply to each of its NICs
    grouped: bool = False
    rules: tuple[dict[str, str], ...] = ()


def tagged(nic: Nic) -> bool:
    """Whether a VLAN driver (802.1Q, ovswitch, vxlan) acts on this NIC: VLAN = YES, which
    the core sets when the network has a PHYDEV or VLAN = YES."""
    return nic.attributes.get("VLAN", "").upper() == "YES"


def vlan_id(nic: Nic, highest: int = 4094) -> int:
    """The NIC's VLAN id (the VXLAN VNI for vxlan, up to 16777215): VLAN_ID, else 2 + its
    network's id."""
    text = nic.attributes.get("VLAN_ID", "").strip()
    if not text:
        if not nic.network_id.isdigit():
            fail(f"NIC {nic.nic_id} has VLAN = YES but neither VLAN_ID nor NETWORK_ID")
        return 2 + int(nic.network_id)
    if not text.isdigit() or not 1 <= int(text) <= highest:
        fail(f"NIC {nic.nic_id}: VLAN_ID = {text!r} is not an id from 1 to {highest}")
    return int(text)


def vm_nics(action: str) -> tuple[str, list[Nic]]:
    """(VM id, its NICs) from this action's first argument."""
    if len(sys.argv) < 2:
        with_id = action in ("post", "update_sg")
        fail(f"usage: {action} <base64 VM XML>" + (" <deploy id>" if with_id else ""))
    try:
        doc = ET.fromstring(base64.b64decode(sys.argv[1], validate=True))
    except (binascii.Error, ET.ParseError) as exc:
        fail(f"{action}: the VM document does not decode: {exc}")
    vm_id = doc.findtext("ID") or ""
    grouped = bool((doc.findtext("TEMPLATE/SECURITY_GROUPS") or "").strip())
    rules = tuple({child.tag: child.text or "" for child in element}
                  for element in doc.findall("TEMPLATE/SECURITY_GROUP_RULE"))
    nics = []
    for element in doc.findall("TEMPLATE/NIC"):
        attrs = {child.tag: child.text or "" for child in element}
        nic_id = attrs.get("NIC_ID", "0")
        nics.append(Nic(nic_id, tap_name(vm_id, nic_id), attrs.get("MAC", ""),
                        attrs.get("IP", ""), attrs.get("NETWORK_ID", ""),
                        attrs.get("BRIDGE", ""), attrs, grouped, rules))
    return vm_id, nics
