"""The `ovswitch` network driver (vnm/ovswitch/{pre,post,clean,update_sg}): Open vSwitch
ports and OpenFlow flows for the NICs whose BRIDGE is an OVS bridge, as OpenNebula 3.4's
(the VLAN tag) and 4.4's (trunks, anti-spoofing and drop flows) did it.

Each such NIC's port (the tap, `one-<vmid>-<nic id>`) gets
    tag=<vlan id>             with VLAN = YES (vnm_common.vlan_id: VLAN_ID, else 2 + net id)
    trunks=<ids>              with VLAN_TAGGED_ID (commas and a-b ranges); untagged frames
                              then go to the VLAN tag, if any (vlan_mode=native-untagged)
pre adds the port before qemu makes the tap (OVS takes the device when it appears), so the
guest never sits on the bridge untagged; the qemu driver adds ports only where no network
driver did, and removes them with the tap.

Flows, all with one cookie per NIC (0x6e75 << 48 | vm id << 16 | nic id), so that clean
deletes exactly them, in four tables a frame walks in order, each handing on with
resubmit(,next) what it lets pass (the fw driver's chain order: anti-spoofing, then the
security groups, then the port filters). Table 0 checks what comes out of the VM:
    46000 in_port=<tap>,dl_src=<mac>,ip,nw_src=<ip>              -> resubmit(,1)
    46000 in_port=<tap>,dl_src=<mac>,arp,arp_spa=<ip>,arp_sha=<mac> -> resubmit(,1)
    45000 in_port=<tap>,ip / arp                                  -> drop (other sources)
    40000 in_port=<tap>,dl_src=<mac>                              -> resubmit(,1)
    39000 in_port=<tap>                                           -> drop (other MACs)
(IPv4 and ARP rules only when the NIC has an IP.) IPv6 is checked for the MAC only: Nubo
gives a NIC no IPv6 address to pin, and what the guest configures itself (link-local,
SLAAC, static) is what its security groups now filter; pinning link-local would cut the
rest. Tables 1 (from the VM, `in_port=<tap>`) and 2 (to it, `dl_dst=<mac>`) hold the
security groups of a VM in any (SECURITY_GROUPS in its document), one flow per
SECURITY_GROUP_RULE of the direction (per port block: a RANGE becomes exact masks),
statefully through Open vSwitch's conntrack (zone: the VLAN id), IPv4 then IPv6:
    42000 ip,<nic>,ct_state=-trk                         -> ct(table=<t>)
    41000 ip,<nic>,ct_state=+trk+est / +trk+rel          -> resubmit(,<t+1>)
    40000 tcp,<nic>,nw_src|nw_dst=<NETWORK>,tp_dst=<port/mask>  -> resubmit(,<t+1>)
          (udp alike; icmp[,icmp_type=<t>[,icmp_code=<c>]]; ip,nw_proto=<n>; ip for ALL)
    39000 ip,<nic>                                       -> drop (what no rule allows)
    42000 ipv6,<nic>,ct_state=-trk / 41000 +trk+est, +trk+rel    (as for ip)
    41000 icmp6,<nic>,icmp_type=133 (134, 135, 136)      -> resubmit(,<t+1>)
    40000 tcp6,<nic>,ipv6_src|ipv6_dst=<NETWORK>,tp_dst=<port/mask>  (udp6 alike;
          icmp6[,icmp_type=<t>[,icmp_code=<c>]] for ICMPV6; ipv6,nw_proto=<n>; ipv6 ALL)
    39000 ipv6,<nic>                                     -> drop
nw_src/ipv6_src is the peer of inbound rules, nw_dst/ipv6_dst of outbound ones; a /0
NETWORK matches any. A rule goes to its NETWORK's family only (fw's rule). ARP passes, and
so does ICMPv6 router and neighbour discovery (types 133-136; fw's ip6tables chains pass
them too), without which IPv6 stops working. Frames to a multicast or broadcast MAC
(neighbour solicitations among them) match no NIC's `dl_dst` and are not filtered. Table 3
filters what goes to a NIC with WHITE/BLACK_PORTS_TCP/UDP or ICMP = drop, the fw driver's
rules as flows (IPv4 only, as in fw), and commits the connections that got this far (a
grouped NIC gets the first three and last two, and the same five for ipv6):
    42000 ip,dl_dst=<mac>,ct_state=-trk                  -> ct(table=3)
    41000 ... ct_state=+trk+est / +trk+rel               -> NORMAL (what the VM started)
    40000 tcp|udp,dl_dst=<mac>,tp_dst=<white port>       -> ct(commit),NORMAL
    39000 tcp|udp,dl_dst=<mac>                           -> drop (a white list's rest)
    40000 tcp|udp,dl_dst=<mac>,tp_dst=<black port>       -> drop
    40000 icmp,dl_dst=<mac>                              -> drop (ICMP = drop)
    37000 ip,dl_dst=<mac>                                -> ct(commit),NORMAL
    36000 in_port=<tap>,ip                               -> ct(commit),NORMAL
So traffic between two VMs of one host passes the sender's outbound rules, then the
receiver's inbound rules, then its port filters. Four flows per bridge, cookie
0x6e75ffffffffffff, join the tables for every other port and stay: priority 1 in table 0
and 0 in tables 1 and 2 -> resubmit(,next), priority 0 in table 3 -> NORMAL.

iptables never sees what an OVS bridge switches (the userspace datapath forwards in
ovs-vswitchd, the kernel one in its own module: neither passes netfilter's bridge hooks),
so the fw driver's chains would filter nothing there: these flows do the filtering. NICs on
a Linux bridge get the fw driver's chains instead. ovs-vsctl and ovs-ofctl run as root,
else through `sudo -n`.
"""

from __future__ import annotations

import os
import re
import subprocess

import fw_rules
from host_command import fail, run
from vnm_common import Nic, group_rule, tagged, vlan_id

COOKIE_BASE = 0x6E75 << 48
SHARED_COOKIE = COOKIE_BASE | 0xFFFF_FFFF_FFFF
OWNER = "nubo-vm"  # the external_ids key marking a port the driver added
TIMEOUT = "--timeout=20"
_TAGGED_IDS = re.compile(r"^\d{1,4}(-\d{1,4})?(,\d{1,4}(-\d{1,4})?)*$")
_RANGE = re.compile(r"^\d{1,5}:\d{1,5}$")
SPOOF, EGRESS, INGRESS, FILTER = 0, 1, 2, 3  # the tables, in the order a frame walks them
IP = {4: "ip", 6: "ipv6"}  # each family's match, in the order its flows are written
PEERS = {4: {"inbound": "nw_src", "outbound": "nw_dst"},  # where a rule's NETWORK is matched
         6: {"inbound": "ipv6_src", "outbound": "ipv6_dst"}}


def _run(argv: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    done: subprocess.CompletedProcess[str] = run(argv, stdin=stdin, check=False,
                                                 prefix="ovswitch: ")
    return done


def _checked(argv: list[str], stdin: str | None = None) -> str:
    return str(run(argv, stdin=stdin, prefix="ovswitch: ").stdout)


def vsctl(*args: str) -> str:
    return _checked(["ovs-vsctl", TIMEOUT, *args])


def ofctl(*args: str, stdin: str | None = None) -> str:
    return _checked(["ovs-ofctl", "-O", "OpenFlow14", *args], stdin)


def linux_bridge(name: str) -> bool:
    return os.path.isdir(f"/sys/class/net/{name}/bridge")


def ovs_bridge(name: str) -> bool:
    """Whether `name` is an Open vSwitch bridge here (ovs-vsctl is asked only when it is
    not a Linux bridge)."""
    if not name or linux_bridge(name):
        return False
    done = _run(["ovs-vsctl", TIMEOUT, "br-exists", name])
    if done.returncode not in (0, 2):
        fail(f"ovswitch: ovs-vsctl br-exists {name}: {(done.stderr or done.stdout).strip()}")
    return done.returncode == 0


def cookie(vm_id: str, nic: Nic) -> int:
    if not vm_id.isdigit() or not nic.nic_id.isdigit():
        fail(f"ovswitch: VM id {vm_id!r} and NIC_ID {nic.nic_id!r} must be numbers")
    return COOKIE_BASE | (int(vm_id) & 0xFFFF_FFFF) << 16 | int(nic.nic_id) & 0xFFFF


def tagged_ids(nic: Nic) -> list[int]:
    """VLAN_TAGGED_ID's ids: commas and a-b ranges, each from 1 to 4094."""
    text = nic.attributes.get("VLAN_TAGGED_ID", "").replace(" ", "")
    if not text:
        return []
    if not _TAGGED_IDS.match(text):
        fail(f"ovswitch: VLAN_TAGGED_ID = {text!r} is not a list of VLAN ids and a-b ranges")
    found: set[int] = set()
    for part in text.split(","):
        low, _, high = part.partition("-")
        first, last = int(low), int(high or low)
        if not 1 <= first <= last <= 4094:
            fail(f"ovswitch: VLAN_TAGGED_ID = {text!r}: {part} is not within 1-4094")
        found.update(range(first, last + 1))
    return sorted(found)


def port_settings(vm_id: str, nic: Nic) -> list[str]:
    """The Port columns this NIC's port gets (`ovs-vsctl set Port <tap> ...`)."""
    settings = [f"external_ids:{OWNER}={vm_id}"]
    trunks = tagged_ids(nic)
    if trunks:
        settings += ["trunks=" + ",".join(map(str, trunks))]
        if tagged(nic):
            settings += [f"tag={vlan_id(nic)}", "vlan_mode=native-untagged"]
        else:
            settings += ["tag=[]", "vlan_mode=trunk"]
    elif tagged(nic):
        settings += [f"tag={vlan_id(nic)}", "trunks=[]", "vlan_mode=access"]
    return settings


def plug_command(vm_id: str, nic: Nic) -> list[str]:
    """ovs-vsctl's arguments adding the NIC's port if missing and setting it, in one
    transaction."""
    return ["--may-exist", "add-port", nic.bridge, nic.tap, "--", "set", "Port", nic.tap,
            *port_settings(vm_id, nic)]


def unplug_command(nic: Nic) -> list[str]:
    return ["--if-exists", "del-port", nic.bridge, nic.tap]


def port_ranges(text: str) -> list[str]:
    """tp_dst matches (`value` or `value/mask`) covering fw's `a,b:c` port list."""
    found = []
    for part in text.split(","):
        low, _, high = part.partition(":")
        first, last = int(low), int(high or low)
        if first > last or last > 65535:
            fail(f"ovswitch: {part} is not a port or a port range")
        while first <= last:  # the largest aligned block starting at `first` that fits
            size = first & -first or 65536
            while size > last - first + 1:
                size //= 2
            found.append(str(first) if size == 1 else f"{first:#x}/{0xFFFF & ~(size - 1):#x}")
            first += size
    return found


def _flow(mark: int, table: int, priority: int, match: str, actions: str) -> str:
    head = f"cookie={mark:#x},table={table},priority={priority}"
    return f"{head},{match},actions={actions}" if match else f"{head},actions={actions}"


def anti_spoofing(vm_id: str, nic: Nic) -> list[str]:
    """Table 0: frames out of the NIC only with its MAC, IPv4 and ARP only with its IP."""
    mark, tap, mac = cookie(vm_id, nic), nic.tap, nic.mac.lower()
    if not mac:
        return []
    onward = f"resubmit(,{EGRESS})"
    flows = []
    if nic.ip:
        flows += [
            _flow(mark, SPOOF, 46000, f"in_port={tap},dl_src={mac},ip,nw_src={nic.ip}", onward),
            _flow(mark, SPOOF, 46000, f"in_port={tap},dl_src={mac},arp,arp_spa={nic.ip},"
                  f"arp_sha={mac}", onward),
            _flow(mark, SPOOF, 45000, f"in_port={tap},ip", "drop"),
            _flow(mark, SPOOF, 45000, f"in_port={tap},arp", "drop"),
        ]
    return flows + [_flow(mark, SPOOF, 40000, f"in_port={tap},dl_src={mac}", onward),
                    _flow(mark, SPOOF, 39000, f"in_port={tap}", "drop")]


def zone(nic: Nic) -> int:
    """The conntrack zone of the NIC's connections: its VLAN id, else 0."""
    return vlan_id(nic) if tagged(nic) else 0


def rule_matches(vector: dict[str, str], direction: str, family: int = 4
                 ) -> list[list[str]]:
    """One SECURITY_GROUP_RULE as OpenFlow matches, one flow each: [protocol, fields...]
    (the NIC's own field goes after the protocol); [] for a rule of the other family."""
    found = group_rule(vector, "ovswitch")
    if found is None or found.family != family:
        return []
    ip, six = IP[family], "6" if family == 6 else ""
    peer = [] if found.network is None else [f"{PEERS[family][direction]}={found.network}"]
    if found.protocol == "all":
        return [[ip, *peer]]
    if found.protocol in ("tcp", "udp"):
        if found.ports is None:
            return [[found.protocol + six, *peer]]
        return [[found.protocol + six, *peer, f"tp_dst={port}"]
                for port in port_ranges(f"{found.ports[0]}:{found.ports[1]}")]
    if found.protocol in ("icmp", "icmpv6"):
        kind = [f"icmp_type={found.icmp_type}"] if found.icmp_type else []
        code = [f"icmp_code={found.icmp_code}"] if found.icmp_code else []
        return [["icmp" + six, *peer, *kind, *code]]
    return [[ip, *peer, f"nw_proto={found.protocol}"]]


def groups(vm_id: str, nic: Nic) -> list[str]:
    """Tables 1 and 2: the VM's security groups, from and to the NIC, IPv4 then IPv6."""
    mac = nic.mac.lower()
    if not mac or not nic.grouped:
        return []
    mark, ct_zone = cookie(vm_id, nic), zone(nic)
    flows = []
    for direction, table, own in (("outbound", EGRESS, f"in_port={nic.tap}"),
                                  ("inbound", INGRESS, f"dl_dst={mac}")):
        for family in IP:
            flows += _group_flows(mark, table, ct_zone, own, nic.rules, direction, family)
    return flows


def _group_flows(mark: int, table: int, ct_zone: int, own: str,
                 rules: tuple[dict[str, str], ...], direction: str, family: int) -> list[str]:
    """One table's flows of one family: conntrack, established, (IPv6: neighbour
    discovery), the rules, the drop."""
    ip, onward = IP[family], f"resubmit(,{table + 1})"
    flows = [_flow(mark, table, 42000, f"{ip},{own},ct_state=-trk",
                   f"ct(table={table},zone={ct_zone})"),
             _flow(mark, table, 41000, f"{ip},{own},ct_state=+trk+est", onward),
             _flow(mark, table, 41000, f"{ip},{own},ct_state=+trk+rel", onward)]
    if family == 6:
        flows += [_flow(mark, table, 41000, f"icmp6,{own},icmp_type={kind}", onward)
                  for kind in fw_rules.NEIGHBOUR_DISCOVERY]
    allowed: dict[str, None] = {}  # a rule twice (two groups, two peers) is one flow
    for vector in rules:
        if vector.get("RULE_TYPE", "").strip().lower() == direction:
            for proto, *fields in rule_matches(vector, direction, family):
                allowed[",".join([proto, own, *fields])] = None
    flows += [_flow(mark, table, 40000, match, onward) for match in allowed]
    return flows + [_flow(mark, table, 39000, f"{ip},{own}", "drop")]


def filters(vm_id: str, nic: Nic) -> list[str]:
    """Table 3: the fw driver's white/black ports and ICMP = drop toward the NIC, and the
    commit of what passed, for a NIC with port filters or security groups."""
    mac = nic.mac.lower()
    if not mac or not (fw_rules.filtered(nic) or nic.grouped):
        return []
    mark, to, ct_zone = cookie(vm_id, nic), f"dl_dst={mac}", zone(nic)
    commit = f"ct(commit,zone={ct_zone}),NORMAL"
    flows = [_flow(mark, FILTER, 42000, f"ip,{to},ct_state=-trk",
                   f"ct(table={FILTER},zone={ct_zone})"),
             _flow(mark, FILTER, 41000, f"ip,{to},ct_state=+trk+est", "NORMAL"),
             _flow(mark, FILTER, 41000, f"ip,{to},ct_state=+trk+rel", "NORMAL")]
    for proto in ("tcp", "udp"):
        white = fw_rules.ports(nic, f"WHITE_PORTS_{proto.upper()}")
        black = fw_rules.ports(nic, f"BLACK_PORTS_{proto.upper()}")
        if white:
            flows += [_flow(mark, FILTER, 40000, f"{proto},{to},tp_dst={port}", commit)
                      for port in port_ranges(white)]
            flows.append(_flow(mark, FILTER, 39000, f"{proto},{to}", "drop"))
        elif black:
            flows += [_flow(mark, FILTER, 40000, f"{proto},{to},tp_dst={port}", "drop")
                      for port in port_ranges(black)]
    if nic.attributes.get("ICMP", "").lower() == "drop":
        flows.append(_flow(mark, FILTER, 40000, f"icmp,{to}", "drop"))
    flows += [_flow(mark, FILTER, 37000, f"ip,{to}", commit),
              _flow(mark, FILTER, 36000, f"in_port={nic.tap},ip", commit)]
    if nic.grouped:  # IPv6: only the groups' connections (the port filters are IPv4's)
        flows += [_flow(mark, FILTER, 42000, f"ipv6,{to},ct_state=-trk",
                        f"ct(table={FILTER},zone={ct_zone})"),
                  _flow(mark, FILTER, 41000, f"ipv6,{to},ct_state=+trk+est", "NORMAL"),
                  _flow(mark, FILTER, 41000, f"ipv6,{to},ct_state=+trk+rel", "NORMAL"),
                  _flow(mark, FILTER, 37000, f"ipv6,{to}", commit),
                  _flow(mark, FILTER, 36000, f"in_port={nic.tap},ipv6", commit)]
    return flows


def shared_flows() -> list[str]:
    """What joins the tables for every port, and switches at the end."""
    return [_flow(SHARED_COOKIE, SPOOF, 1, "", f"resubmit(,{EGRESS})"),
            _flow(SHARED_COOKIE, EGRESS, 0, "", f"resubmit(,{INGRESS})"),
            _flow(SHARED_COOKIE, INGRESS, 0, "", f"resubmit(,{FILTER})"),
            _flow(SHARED_COOKIE, FILTER, 0, "", "NORMAL")]


def flows(vm_id: str, nic: Nic) -> list[str]:
    return anti_spoofing(vm_id, nic) + groups(vm_id, nic) + filters(vm_id, nic)


def flow_batch(vm_id: str, nic: Nic) -> str:
    """`ovs-ofctl --bundle add-flows` input replacing the NIC's flows in one transaction
    (post may run twice, update_sg re-applies: never a moment without them)."""
    lines = [f"delete cookie={cookie(vm_id, nic):#x}/-1"]
    lines += [f"add {flow}" for flow in shared_flows() + flows(vm_id, nic)]
    return "\n".join(lines) + "\n"


def ovs_nics(nics: list[Nic]) -> tuple[list[Nic], list[Nic]]:
    """(NICs on an Open vSwitch bridge, the others)."""
    on_ovs = [nic for nic in nics if ovs_bridge(nic.bridge)]
    return on_ovs, [nic for nic in nics if nic not in on_ovs]


def prepare(vm_id: str, nics: list[Nic]) -> int:
    """pre: each NIC's port on its OVS bridge, tagged before the tap exists; a NIC whose
    BRIDGE is neither an OVS nor a Linux bridge fails here, before the VM boots."""
    on_ovs, others = ovs_nics(nics)
    for nic in others:
        if nic.bridge and not linux_bridge(nic.bridge):
            fail(f"ovswitch: NIC {nic.nic_id}: bridge {nic.bridge} is neither an Open vSwitch "
                 "bridge nor a Linux bridge on this host")
    for nic in on_ovs:
        vsctl(*plug_command(vm_id, nic))
    return len(on_ovs)


def apply(vm_id: str, nics: list[Nic]) -> tuple[int, int]:
    """post and update_sg: ports, then flows, of the NICs on OVS bridges; fw's chains for
    those on Linux bridges. (NICs set, fw chains made)."""
    on_ovs, others = ovs_nics(nics)
    for nic in on_ovs:
        vsctl(*plug_command(vm_id, nic))
        ofctl("--bundle", "add-flows", nic.bridge, "-", stdin=flow_batch(vm_id, nic))
    return len(on_ovs), fw_rules.apply(vm_id, others)


def remove(vm_id: str, nics: list[Nic]) -> tuple[int, int]:
    """clean: the NICs' flows, the ports this driver added (the qemu driver removes them
    with the taps too), fw's chains of the others. (NICs cleaned, fw chains removed)."""
    on_ovs, others = ovs_nics(nics)
    for nic in on_ovs:
        ofctl("del-flows", nic.bridge, f"cookie={cookie(vm_id, nic):#x}/-1")
        owner = _run(["ovs-vsctl", TIMEOUT, "--if-exists", "get", "Port", nic.tap,
                      f"external_ids:{OWNER}"]).stdout.strip().strip('"')
        if owner == vm_id:
            vsctl(*unplug_command(nic))
    # whatever fw made for the others (port filters, security groups), whatever the
    # document says now
    return len(on_ovs), fw_rules.remove(vm_id, others) if others else 0
