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
then still meets the port filters.

IPv6 is filtered the same way by ip6tables, which has its own tables: a grouped NIC gets
ip6tables chains of the same names, jumped to the same way for bridged traffic, holding
the rules with an IPv6 NETWORK (tcp and udp with ports, ICMPV6 with type and code, ALL,
a protocol number); IPv4 rules stay in iptables, IPv6 ones never reach it. They also
return ICMPv6 router and neighbour solicitations and advertisements (types 133 to 136)
whatever the rules say, without which IPv6 stops working:

    -m conntrack --ctstate ESTABLISHED,RELATED -j RETURN
    -p ipv6-icmp --icmpv6-type 133 -j RETURN   (134, 135, 136 alike)
    -s <IPv6 block> -p tcp --dport 22:22 -j RETURN        (the rules; -d outbound)
    -j DROP

The port filters above stay IPv4 only, as in OpenNebula 3.4.

A NIC is also reached by routed traffic when the host routes for its network (the bridge
carries the GATEWAY address; an Elastic IP, NATed to it by nat_rules.py), which the jumps
above never see: a packet the host routes into the bridge is not bridged, and its bridge
port is not known yet in FORWARD. So a NIC's port filter and inbound group chains are also
jumped to for `-d <IP>/32 -o <bridge> -m physdev ! --physdev-is-bridged`, and its outbound
group chain for `-m physdev --physdev-in <tap> ! --physdev-is-bridged` (what the VM sends
through the host); bridged traffic still meets each chain once, and on a host that does
not route the routed jumps match nothing. IPv6 has no routed jumps: Nubo's networks give
a NIC no IPv6 address, so the host has no IPv6 route to one.

Each VM's chains are written in one `iptables-restore --noflush` and one
`ip6tables-restore --noflush`, so a rule change on a running VM (update_sg) never leaves
a moment without rules. clean removes the jumps, then flushes and deletes the chains, in
both families. iptables and ip6tables run as root, else through `sudo -n`.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from host_command import fail, run
from vnm_common import Nic, group_rule

FILTERS = ("WHITE_PORTS_TCP", "WHITE_PORTS_UDP", "BLACK_PORTS_TCP", "BLACK_PORTS_UDP", "ICMP")
_PORTS = re.compile(r"^\d{1,5}(:\d{1,5})?(,\d{1,5}(:\d{1,5})?)*$")
ESTABLISHED = ["-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED"]
DIRECTIONS = {"inbound": ("i", "--physdev-out", "-s"), "outbound": ("o", "--physdev-in", "-d")}
FAMILIES = (4, 6)
# ICMPv6 router solicitation and advertisement, neighbour solicitation and advertisement
NEIGHBOUR_DISCOVERY = ("133", "134", "135", "136")
Chains = list[tuple[list[str], list[list[str]]]]


def iptables(*args: str, check: bool = True) -> bool:
    return bool(run(["iptables", "-w", *args], check=check).returncode == 0)


def ip6tables(*args: str, check: bool = True) -> bool:
    return bool(run(["ip6tables", "-w", *args], check=check).returncode == 0)


def restore(text: str) -> None:
    """Load a filter table fragment in one transaction, leaving other chains alone."""
    run(["iptables-restore", "-w", "--noflush"], stdin=text)


def restore6(text: str) -> None:
    """restore() for ip6tables."""
    run(["ip6tables-restore", "-w", "--noflush"], stdin=text)


def tools(family: int) -> tuple[Callable[..., bool], Callable[[str], None]]:
    """The family's (iptables, restore), looked up when called."""
    return (iptables, restore) if family == 4 else (ip6tables, restore6)


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


def group_rules(nic: Nic, direction: str, family: int = 4) -> list[list[str]]:
    """A security-group chain's rules for one NIC and direction, in order: iptables'
    (family 4) or ip6tables' (6)."""
    peer = DIRECTIONS[direction][2]
    found: list[list[str]] = [[*ESTABLISHED, "-j", "RETURN"]]
    if family == 6:
        found += [["-p", "ipv6-icmp", "--icmpv6-type", kind, "-j", "RETURN"]
                  for kind in NEIGHBOUR_DISCOVERY]
    for vector in nic.rules:
        if vector.get("RULE_TYPE", "").lower() != direction:
            continue
        match = _group_match(vector, peer, family)
        if match is not None:
            found.append([*match, "-j", "RETURN"])
    found.append(["-j", "DROP"])
    return found


def _group_match(vector: dict[str, str], peer: str, family: int) -> list[str] | None:
    """The matches for one SECURITY_GROUP_RULE; None for one of the other family (or
    one no packet matches)."""
    found = group_rule(vector, "fw")
    if found is None or found.family != family:
        return None
    match = [] if found.network is None else [peer, str(found.network)]
    if found.protocol == "all":
        return match
    icmpv6 = found.protocol == "icmpv6"
    match += ["-p", "ipv6-icmp" if icmpv6 else found.protocol]
    if found.ports is not None:
        match += ["--dport", f"{found.ports[0]}:{found.ports[1]}"]
    if found.icmp_type:
        code = f"/{found.icmp_code}" if found.icmp_code else ""
        match += ["--icmpv6-type" if icmpv6 else "--icmp-type", f"{found.icmp_type}{code}"]
    return match


def jump(vm_id: str, nic: Nic) -> list[str]:
    return ["FORWARD", "-m", "physdev", "--physdev-is-bridged", "--physdev-out", nic.tap,
            "-j", chain(vm_id, nic)]


def group_jump(vm_id: str, nic: Nic, direction: str) -> list[str]:
    return ["FORWARD", "-m", "physdev", "--physdev-is-bridged", DIRECTIONS[direction][1],
            nic.tap, "-j", group_chain(vm_id, nic, direction)]


def routed_jump(vm_id: str, nic: Nic, target: str) -> list[str] | None:
    """The jump to `target` (one of the NIC's chains) for traffic the host routes to or
    from the NIC rather than bridges; None for a NIC without IP or bridge."""
    if not nic.ip or not nic.bridge:
        return None
    not_bridged = ["-m", "physdev", "!", "--physdev-is-bridged"]
    if target == group_chain(vm_id, nic, "outbound"):
        return ["FORWARD", "-m", "physdev", "--physdev-in", nic.tap, "!",
                "--physdev-is-bridged", "-j", target]
    return ["FORWARD", "-d", f"{nic.ip}/32", "-o", nic.bridge, *not_bridged, "-j", target]


def wanted(vm_id: str, nics: list[Nic]) -> Chains:
    """(jump, chain rules) for every chain the VM's NICs need, in the order the jumps are
    inserted at the top of FORWARD: the group chains end up before the port filters. Each
    chain of a NIC with an IP comes twice: with its bridged jump and its routed one."""
    found = []
    for nic in nics:
        made = []
        if filtered(nic):
            made.append((jump(vm_id, nic), rules(nic)))
        if nic.grouped:
            for direction in ("outbound", "inbound"):
                made.append((group_jump(vm_id, nic, direction), group_rules(nic, direction)))
        for j, chain_rules in made:
            found.append((j, chain_rules))
            routed = routed_jump(vm_id, nic, j[-1])
            if routed is not None:
                found.append((routed, chain_rules))
    return found


def wanted6(vm_id: str, nics: list[Nic]) -> Chains:
    """wanted() for ip6tables: the group chains of grouped NICs, bridged jumps only."""
    return [(group_jump(vm_id, nic, direction), group_rules(nic, direction, 6))
            for nic in nics if nic.grouped for direction in ("outbound", "inbound")]


def apply(vm_id: str, nics: list[Nic]) -> int:
    """Make (or remake) the chains of the VM's NICs at once and jump to each, in iptables
    and in ip6tables; removes those it no longer needs. Returns how many chains it has
    (a name in both families counts once)."""
    names: set[str] = set()
    for family in FAMILIES:
        names |= _apply(vm_id, nics, family)
    return len(names)


def _apply(vm_id: str, nics: list[Nic], family: int) -> set[str]:
    tables, load = tools(family)
    chains = wanted(vm_id, nics) if family == 4 else wanted6(vm_id, nics)
    _remove(vm_id, nics, [j for j, _ in chains], family)
    if not chains:
        return set()
    bodies = {j[-1]: chain_rules for j, chain_rules in chains}
    lines = ["*filter"] + [f":{name} - [0:0]" for name in bodies]
    lines += [" ".join(["-A", name, *rule]) for name, body in bodies.items() for rule in body]
    load("\n".join([*lines, "COMMIT", ""]))
    for j, _ in chains:
        if not tables("-C", *j, check=False):
            tables("-I", *j)
    return set(bodies)


def remove(vm_id: str, nics: list[Nic]) -> int:
    """Remove the jumps to the VM's chains and the chains, in both families; how many
    chains went (a name in both counts once)."""
    names: set[str] = set()
    for family in FAMILIES:
        names |= _remove(vm_id, nics, [], family)
    return len(names)


def _candidates(vm_id: str, nics: list[Nic], family: int) -> list[list[str]]:
    """Every jump the NICs' chains may have in `family`, each chain's bridged one first."""
    found = []
    for nic in nics:
        if family == 6:
            found += [group_jump(vm_id, nic, d) for d in DIRECTIONS]
            continue
        for j in [jump(vm_id, nic)] + [group_jump(vm_id, nic, d) for d in DIRECTIONS]:
            routed = routed_jump(vm_id, nic, j[-1])
            found += [j] if routed is None else [j, routed]
    return found


def _remove(vm_id: str, nics: list[Nic], keep: list[list[str]], family: int) -> set[str]:
    """Remove the jumps the NICs may have in `family` but `keep`, then the chains no kept
    jump leads to; the names of the chains that went."""
    tables, _ = tools(family)
    kept_chains = {j[-1] for j in keep}
    names: list[str] = []
    for candidate in _candidates(vm_id, nics, family):
        if candidate not in keep:
            while tables("-D", *candidate, check=False):
                pass
        if candidate[-1] not in kept_chains and candidate[-1] not in names:
            names.append(candidate[-1])
    gone = set()
    for name in names:
        if tables("-F", name, check=False):
            tables("-X", name, check=False)
            gone.add(name)
    return gone
