"""The `fw` network driver's iptables rules, as OpenNebula 3.4's (the `ebtables` driver
runs them too: its post and clean are ebtables plus fw).

A NIC with any of WHITE_PORTS_TCP, WHITE_PORTS_UDP, BLACK_PORTS_TCP, BLACK_PORTS_UDP or
ICMP (from its network) gets a chain `one-<vmid>-<network id>`, jumped to from FORWARD
for the bridged traffic going out to its tap (`-m physdev --physdev-is-bridged
--physdev-out <tap>`):

    -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT      what the VM itself started
    -p tcp -m multiport --dports <white> -j ACCEPT, -p tcp -j DROP    a white list...
    -p tcp -m multiport --dports <black> -j DROP              ...else a black list
    (the same for udp)
    -p icmp -j DROP                                           with ICMP = drop

Ports are commas and `a:b` ranges, as iptables' multiport (at most 15 entries). A white
list wins over a black one. clean removes the jumps, then flushes and deletes the chain.
iptables runs as root, else through `sudo -n`.
"""

from __future__ import annotations

import os
import re
import subprocess

from ebtables_rules import fail
from vnm_common import Nic

FILTERS = ("WHITE_PORTS_TCP", "WHITE_PORTS_UDP", "BLACK_PORTS_TCP", "BLACK_PORTS_UDP", "ICMP")
_PORTS = re.compile(r"^\d{1,5}(:\d{1,5})?(,\d{1,5}(:\d{1,5})?)*$")


def iptables(*args: str, check: bool = True) -> bool:
    argv = ["iptables", "-w", *args]
    if os.geteuid() != 0:
        argv = ["sudo", "-n", *argv]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        fail(f"{argv[0]} is not installed on this host")
    if check and done.returncode != 0:
        fail(f"{' '.join(argv)}: {(done.stderr or done.stdout).strip()}")
    return done.returncode == 0


def chain(vm_id: str, nic: Nic) -> str:
    return f"one-{vm_id}-{nic.network_id or nic.nic_id}"


def filtered(nic: Nic) -> bool:
    return any(nic.attributes.get(name) for name in FILTERS)


def ports(nic: Nic, name: str) -> str:
    value = str(nic.attributes.get(name, "")).replace(" ", "")
    if value and not _PORTS.match(value):
        fail(f"fw: {name} = {value!r} is not a list of ports and a:b ranges")
    return value


def rules(nic: Nic) -> list[list[str]]:
    """The chain's rules for one NIC, in order."""
    found: list[list[str]] = [["-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED",
                               "-j", "ACCEPT"]]
    for proto in ("tcp", "udp"):
        white = ports(nic, f"WHITE_PORTS_{proto.upper()}")
        black = ports(nic, f"BLACK_PORTS_{proto.upper()}")
        if white:
            found.append(["-p", proto, "-m", "multiport", "--dports", white, "-j", "ACCEPT"])
            found.append(["-p", proto, "-j", "DROP"])
        elif black:
            found.append(["-p", proto, "-m", "multiport", "--dports", black, "-j", "DROP"])
    if nic.attributes.get("ICMP", "").lower() == "drop":
        found.append(["-p", "icmp", "-j", "DROP"])
    return found


def jump(vm_id: str, nic: Nic) -> list[str]:
    return ["FORWARD", "-m", "physdev", "--physdev-is-bridged", "--physdev-out", nic.tap,
            "-j", chain(vm_id, nic)]


def apply(vm_id: str, nics: list[Nic]) -> int:
    """Make the chains of the VM's filtered NICs (anew: post may run twice); how many."""
    done = 0
    for nic in nics:
        if not filtered(nic):
            continue
        remove(vm_id, [nic])
        name = chain(vm_id, nic)
        iptables("-N", name)
        for rule in rules(nic):
            iptables("-A", name, *rule)
        iptables("-I", *jump(vm_id, nic))
        done += 1
    return done


def remove(vm_id: str, nics: list[Nic]) -> int:
    """Remove the jumps to the VM's chains and the chains; how many chains went."""
    gone = 0
    for nic in nics:
        while iptables("-D", *jump(vm_id, nic), check=False):
            pass
        name = chain(vm_id, nic)
        if iptables("-F", name, check=False):
            iptables("-X", name, check=False)
            gone += 1
    return gone
