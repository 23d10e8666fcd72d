"""What the network drivers (vnm/<driver>/{pre,post,clean}) share: OpenNebula 3.4's
arguments (`pre <base64 VM XML>`, `post <base64 VM XML> <deploy id>`, `clean <base64 VM
XML>`) read into the VM's NICs, each with the tap the qemu driver gives it."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
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


@dataclass(frozen=True)
class GroupRule:
    """One SECURITY_GROUP_RULE (core/service/sgrules.py), checked: its address family (4
    or 6, NETWORK's), the peer block (None: everywhere), the protocol ("all", "tcp",
    "udp", "icmp", "icmpv6" or an IP protocol number), the port range (None: every port)
    and the ICMP or ICMPv6 type and code ("" when not named)."""

    family: int
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None
    protocol: str
    ports: tuple[int, int] | None = None
    icmp_type: str = ""
    icmp_code: str = ""


_SPAN = re.compile(r"^\d{1,5}:\d{1,5}$")


def group_rule(vector: dict[str, str], driver: str) -> GroupRule | None:
    """The rule, IPv4 or IPv6 (NETWORK's family; none given is everywhere, IPv6 for
    ICMPV6, else IPv4), or None for one no packet matches: ICMP with an IPv6 block,
    ICMPV6 with an IPv4 one. Bad values fail the action with `driver`'s name."""
    what = f"{driver}: security group rule"
    proto = vector.get("PROTOCOL", "ALL").strip().lower()
    block = vector.get("NETWORK", "").strip() or ("::/0" if proto == "icmpv6" else "0.0.0.0/0")
    try:
        network = ipaddress.ip_network(block, strict=False)
    except ValueError:
        fail(f"{what} NETWORK = {block!r} is not an address block")
    family, peer = network.version, None if network.prefixlen == 0 else network
    if proto in ("all", "-1"):
        return GroupRule(family, peer, "all")
    if proto in ("tcp", "udp"):
        span = vector.get("RANGE", "0:65535").strip()
        first, last = map(int, span.split(":")) if _SPAN.match(span) else (-1, -1)
        if not 0 <= first <= last <= 65535:
            fail(f"{what} RANGE = {span!r} is not a port range a:b (0 to 65535)")
        ports = None if (first, last) == (0, 65535) else (first, last)
        return GroupRule(family, peer, proto, ports)
    if proto in ("icmp", "icmpv6"):
        kind = vector.get("ICMP_TYPE", "").strip()
        code = vector.get("ICMP_CODE", "").strip() if kind else ""
        if kind and (not _byte(kind) or (code and not _byte(code))):
            fail(f"{what} ICMP_TYPE/ICMP_CODE {kind!r}/{code!r} are not numbers from 0 to 255")
        if family != (6 if proto == "icmpv6" else 4):
            return None
        return GroupRule(family, peer, proto, None, kind, code)
    if not _byte(proto):
        fail(f"{what} PROTOCOL = {proto!r} is unknown")
    return GroupRule(family, peer, proto)


def _byte(text: str) -> bool:
    return text.isdigit() and int(text) <= 255


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
