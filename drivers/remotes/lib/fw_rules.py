"""The `fw` network driver's iptables rules: OpenNebula 3.4's port filters, and the VM's
security groups (the `ebtables` driver runs them too: its post and clean are ebtables
plus fw).

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
list wins over a black one.

A VM in security groups (SECURITY_GROUPS in its document) gets two more chains per NIC,
jumped to before the one above: `one-<vmid>-<nicid>-i` for traffic to the VM and
`one-<vmid>-<nicid>-o` for traffic from it (`--physdev-in <tap>`). Each returns
established traffic and what a SECURITY_GROUP_RULE of its direction allows (protocol,
ports or ICMP type, NETWORK as the peer block) and drops the rest, as EC2 does; traffic
then still meets the port filters. IPv6 blocks are left out (iptables is IPv4).

Each VM's chains are written in one `iptables-restore --noflush`, so a rule change on a
running VM (update_sg) never leaves a moment without rules. clean removes the jumps,
then flushes and deletes the chains. iptables runs as root, else through `sudo -n`.
"""

from __future__ import annotations

import ipaddress
import os
import re
import subprocess

from ebtables_rules import fail
from vnm_common import Nic

FILTERS = ("WHITE_PORTS_TCP", "WHITE_PORTS_UDP", "BLACK_PORTS_TCP", "BLACK_PORTS_UDP", "ICMP")
_PORTS = re.compile(r"^\d{1,5}(:\d{1,5})?(,\d{1,5}(:\d{1,5})?)*$")
_RANGE = re.compile(r"^\d{1,5}:\d{1,5}$")
ESTABLISHED = ["-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED"]
DIRECTIONS = {"inbound": ("i", "--physdev-out", "-s"), "outbound": ("o", "--physdev-in", "-d")}


def _sudo(argv: list[str]) -> list[str]:
    return argv if os.geteuid() == 0 else ["sudo", "-n", *argv]


def iptables(*args: str, check: bool = True) -> bool:
    argv = _sudo(["iptables", "-w", *args])
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        fail(f"{argv[0]} is not installed on this host")
    if check and done.returncode != 0:
        fail(f"{' '.join(argv)}: {(done.stderr or done.stdout).strip()}")
    return done.returncode == 0


def restore(text: str) -> None:
    """Load a filter table fragment in one transaction, leaving other chains alone."""
    argv = _sudo(["iptables-restore", "-w", "--noflush"])
    try:
        done = subprocess.run(argv, input=text, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        fail(f"{argv[0]} is not installed on this host")
    if done.returncode != 0:
        fail(f"{' '.join(argv)}: {(done.stderr or done.stdout).strip()}")


def chain(vm_id: str, nic: Nic) -> str:
    return f"one-{vm_id}-{nic.network_id or nic.nic_id}"


def group_chain(vm_id: str, nic: Nic, direction: str) -> str:
    return f"one-{vm_id}-{nic.nic_id}-{DIRECTIONS[direction][0]}"


def filtered(nic: Nic) -> bool:
    return any(nic.attributes.get(name) for name in FILTERS)


def ports(nic: Nic, name: str) -> str:
    value = str(nic.attributes.get(name, "")).replace(" ", "")
    if value and not _PORTS.match(value):
        fail(f"fw: {name} = {value!r} is not a list of ports and a:b ranges")
    return value


def rules(nic: Nic) -> list[list[str]]:
    """The port-filter chain's rules for one NIC, in order."""
    found: list[list[str]] = [[*ESTABLISHED, "-j", "ACCEPT"]]
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


def group_rules(nic: Nic, direction: str) -> list[list[str]]:
    """A security-group chain's rules for one NIC and direction, in order."""
    peer = DIRECTIONS[direction][2]
    found: list[list[str]] = [[*ESTABLISHED, "-j", "RETURN"]]
    for vector in nic.rules:
        if vector.get("RULE_TYPE", "").lower() != direction:
            continue
        match = _group_match(vector, peer)
        if match is not None:
            found.append([*match, "-j", "RETURN"])
    found.append(["-j", "DROP"])
    return found


def _group_match(vector: dict[str, str], peer: str) -> list[str] | None:
    """iptables matches for one SECURITY_GROUP_RULE; None for one iptables cannot hold
    (an IPv6 block or protocol)."""
    block = vector.get("NETWORK", "").strip() or "0.0.0.0/0"
    try:
        network = ipaddress.ip_network(block, strict=False)
    except ValueError:
        fail(f"fw: security group rule NETWORK = {block!r} is not an address block")
    if network.version != 4:
        return None
    proto = vector.get("PROTOCOL", "ALL").strip().lower()
    match = [] if network.prefixlen == 0 else [peer, str(network)]
    if proto in ("all", "-1"):
        return match
    if proto == "icmpv6":
        return None
    if proto in ("tcp", "udp"):
        span = vector.get("RANGE", "0:65535").strip()
        if not _RANGE.match(span):
            fail(f"fw: security group rule RANGE = {span!r} is not a port range a:b")
        full = span == "0:65535"
        return [*match, "-p", proto] + ([] if full else ["--dport", span])
    if proto == "icmp":
        kind = vector.get("ICMP_TYPE", "").strip()
        code = vector.get("ICMP_CODE", "").strip()
        if not kind:
            return [*match, "-p", "icmp"]
        if not kind.isdigit() or (code and not code.isdigit()):
            fail(f"fw: security group rule ICMP_TYPE/ICMP_CODE {kind!r}/{code!r} are not numbers")
        return [*match, "-p", "icmp", "--icmp-type", f"{kind}/{code}" if code else kind]
    if not proto.isdigit():
        fail(f"fw: security group rule PROTOCOL = {proto!r} is unknown")
    return [*match, "-p", proto]


def jump(vm_id: str, nic: Nic) -> list[str]:
    return ["FORWARD", "-m", "physdev", "--physdev-is-bridged", "--physdev-out", nic.tap,
            "-j", chain(vm_id, nic)]


def group_jump(vm_id: str, nic: Nic, direction: str) -> list[str]:
    return ["FORWARD", "-m", "physdev", "--physdev-is-bridged", DIRECTIONS[direction][1],
            nic.tap, "-j", group_chain(vm_id, nic, direction)]


def wanted(vm_id: str, nics: list[Nic]) -> list[tuple[list[str], list[list[str]]]]:
    """(jump, chain rules) for every chain the VM's NICs need, in the order the jumps are
    inserted at the top of FORWARD: the group chains end up before the port filters."""
    found = []
    for nic in nics:
        if filtered(nic):
            found.append((jump(vm_id, nic), rules(nic)))
        if nic.grouped:
            for direction in ("outbound", "inbound"):
                found.append((group_jump(vm_id, nic, direction), group_rules(nic, direction)))
    return found


def apply(vm_id: str, nics: list[Nic]) -> int:
    """Make (or remake) the chains of the VM's NICs at once and jump to each; removes
    those it no longer needs. Returns how many chains it has."""
    chains = wanted(vm_id, nics)
    keep = {j[-1] for j, _ in chains}
    _remove(vm_id, nics, keep)
    if not chains:
        return 0
    lines = ["*filter"] + [f":{j[-1]} - [0:0]" for j, _ in chains]
    lines += [" ".join(["-A", j[-1], *rule]) for j, chain_rules in chains for rule in chain_rules]
    restore("\n".join([*lines, "COMMIT", ""]))
    for j, _ in chains:
        if not iptables("-C", *j, check=False):
            iptables("-I", *j)
    return len(chains)


def remove(vm_id: str, nics: list[Nic]) -> int:
    """Remove the jumps to the VM's chains and the chains; how many chains went."""
    return _remove(vm_id, nics, set())


def _remove(vm_id: str, nics: list[Nic], keep: set[str]) -> int:
    gone = 0
    for nic in nics:
        jumps = [jump(vm_id, nic)] + [group_jump(vm_id, nic, d) for d in DIRECTIONS]
        for j in jumps:
            if j[-1] in keep:
                continue
            while iptables("-D", *j, check=False):
                pass
            if iptables("-F", j[-1], check=False):
                iptables("-X", j[-1], check=False)
                gone += 1
    return gone
