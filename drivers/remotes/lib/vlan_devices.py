"""What the `802.1Q` and `vxlan` network drivers' pre does for each NIC with VLAN = YES:
the NIC's bridge and a sub-interface of the host's PHYDEV carrying its network, made if
missing and joined together, so guests on different hosts share one segment per network.

    802.1Q   ip link add link <phydev> name <phydev>.<vlan> type vlan id <vlan>
    vxlan    ip link add <phydev>.<vni> type vxlan id <vni> group <group> dev <phydev>
                 dstport 4789

The VLAN id (and the VNI) is the NIC's VLAN_ID, else 2 + its network id. A VXLAN's
multicast group is VXLAN_MC (default 239.0.0.0) plus the VNI, so each network floods
to its own group. The bridge is the NIC's BRIDGE (`onebr<network id>` when the network
names none). Then: the bridge up, the sub-interface in the bridge and up.

Idempotent, also when two VMs of one network arrive at once (an `add` that fails because
the device exists meanwhile is fine). As in OpenNebula, the bridges and sub-interfaces
stay when the VMs leave. ip runs as root, else through `sudo -n`.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable

import host_command
from host_command import fail
from vnm_common import Nic, tagged, vlan_id

KINDS = ("802.1Q", "vxlan")
VXLAN_MC = "239.0.0.0"
VXLAN_PORT = "4789"  # IANA's; Linux's own default is 8472
IFNAMSIZ = 15


def present(device: str) -> bool:
    return os.path.exists(f"/sys/class/net/{device}")


def device(nic: Nic, kind: str) -> tuple[str, list[str]]:
    """The NIC's sub-interface and the command that makes it."""
    phydev = nic.attributes.get("PHYDEV", "").strip()
    if not phydev:
        fail(f"{kind}: NIC {nic.nic_id} has VLAN = YES but its network names no PHYDEV")
    vid = vlan_id(nic, 4094 if kind == "802.1Q" else 16777215)
    name = f"{phydev}.{vid}"
    if len(name) > IFNAMSIZ or "/" in name or name.startswith("-"):
        fail(f"{kind}: {name!r} cannot be a device name (at most {IFNAMSIZ} characters)")
    if kind == "802.1Q":
        return name, ["ip", "link", "add", "link", phydev, "name", name, "type", "vlan",
                      "id", str(vid)]
    base = nic.attributes.get("VXLAN_MC", "").strip() or VXLAN_MC
    try:
        group = ipaddress.IPv4Address(base) + vid
    except (ValueError, ipaddress.AddressValueError):
        fail(f"vxlan: VXLAN_MC = {base!r} with VNI {vid} is not a multicast group")
    if not group.is_multicast:
        fail(f"vxlan: VXLAN_MC = {base!r} with VNI {vid} gives {group}, not a multicast group")
    return name, ["ip", "link", "add", name, "type", "vxlan", "id", str(vid), "group",
                  str(group), "dev", phydev, "dstport", VXLAN_PORT]


def commands(nics: list[Nic], kind: str,
             exists: Callable[[str], bool] = present) -> list[list[str]]:
    """The commands pre runs for these NICs, in order, given the devices that exist."""
    found: list[list[str]] = []
    made: set[str] = set()
    for nic in nics:
        if not tagged(nic):
            continue
        bridge = nic.bridge or fail(f"{kind}: NIC {nic.nic_id} has no BRIDGE")
        name, add = device(nic, kind)
        steps = []
        if bridge not in made and not exists(bridge):
            steps.append(["ip", "link", "add", bridge, "type", "bridge"])
        if name not in made and not exists(name):
            steps.append(add)
        steps += [["ip", "link", "set", name, "master", bridge],
                  ["ip", "link", "set", name, "up"], ["ip", "link", "set", bridge, "up"]]
        made.update((bridge, name))
        found += [step for step in steps if step not in found]
    return found


def make(argv: list[str], exists: Callable[[str], bool] = present) -> None:
    """One command; an `add` of a device that exists by now is fine."""
    done = host_command.run(argv, check=False)
    if done.returncode == 0:
        return
    added = argv[:3] == ["ip", "link", "add"]
    target = argv[argv.index("name") + 1] if "name" in argv else argv[3]
    if added and exists(target):
        return
    fail(f"{' '.join(argv)}: {(done.stderr or done.stdout).strip()}")


def prepare(nics: list[Nic], kind: str) -> int:
    """Run pre's commands; how many."""
    steps = commands(nics, kind)
    for argv in steps:
        make(argv)
    return len(steps)
