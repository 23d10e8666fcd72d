"""Elastic IPs on the host: AWS-style 1:1 NAT for each NIC whose VM document carries
PUBLIC_IP (core.service.addresses writes it on the VM's first NIC), done by the fw driver
and so by ebtables, 802.1Q and vxlan too, whose post/clean/update_sg are fw's.

For VM <vm>'s NIC <n> with IP <ip> on bridge <br> and PUBLIC_IP <pub>, two chains of the
nat table (DNAT and SNAT are allowed in different hooks, so one chain cannot hold both):

    one-<vm>-<n>-dnat   -d <pub>/32 -j DNAT --to-destination <ip>
        jumped to from PREROUTING (traffic from outside) and OUTPUT (from the host itself)
        for -d <pub>/32
    one-<vm>-<n>-snat   -s <ip>/32 ! -o <br> -j SNAT --to-source <pub>
        jumped to from POSTROUTING for -s <ip>/32: what the VM starts toward anything but
        its own bridge leaves from its public address

and <pub>/32 on the host's `lo`, so that the address is the host's: Linux answers ARP for
it on every interface (unless arp_ignore says otherwise), and an upstream router may as
well route the public block to the host. net.ipv4.ip_forward is set to 1 when a mapping
is made (never back to 0). Filtering of the DNATed traffic is fw_rules' (its routed
jumps, which every NIC with an address has).

What is installed says what to undo: the VM's chains are found in `iptables -t nat -S`,
their addresses in their DNAT rules, so update_sg (with a document that no longer names
an address) and clean (the VM's PUBLIC_IP is gone by then) remove exactly what is there.
Chains and jumps change in one `iptables-restore --noflush`; an address leaves `lo` only
when no other chain of the host still maps it (an address moving between two VMs of one
host). iptables, ip and sysctl run as root, else through `sudo -n`.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

import fw_rules
from host_command import fail, run
from vnm_common import Nic

DEVICE = "lo"
HOOKS = {"dnat": ("PREROUTING", "OUTPUT"), "snat": ("POSTROUTING",)}
_CHAIN = re.compile(r"one-(\d+)-(\d+)-(dnat|snat)\Z")
_BRIDGE = re.compile(r"[A-Za-z0-9_.:-]{1,15}\Z")


@dataclass(frozen=True)
class Mapping:
    """One NIC's public address: where it goes and the bridge its VM sits on."""

    nic_id: str
    public: str
    private: str
    bridge: str


def _address(text: str, what: str, nic_id: str) -> str:
    try:
        return str(ipaddress.IPv4Address(text.strip()))
    except ValueError:
        fail(f"fw: NIC {nic_id}: {what} = {text!r} is not an IPv4 address")
    raise AssertionError  # fail() exits


def mapping(nic: Nic) -> Mapping | None:
    """The NIC's mapping, None without PUBLIC_IP; bad values are refused."""
    public = nic.attributes.get("PUBLIC_IP", "").strip()
    if not public:
        return None
    if not nic.ip:
        fail(f"fw: NIC {nic.nic_id} has PUBLIC_IP = {public} but no IP to map it to")
    if not nic.nic_id.isdigit():
        fail(f"fw: NIC_ID = {nic.nic_id!r} is not a number")
    if nic.bridge and not _BRIDGE.match(nic.bridge):
        fail(f"fw: NIC {nic.nic_id}: BRIDGE = {nic.bridge!r} cannot be a device name")
    return Mapping(nic.nic_id, _address(public, "PUBLIC_IP", nic.nic_id),
                   _address(nic.ip, "IP", nic.nic_id), nic.bridge)


def chain(vm_id: str, nic_id: str, kind: str) -> str:
    return f"one-{vm_id}-{nic_id}-{kind}"


def chain_rules(vm_id: str, m: Mapping) -> dict[str, list[str]]:
    """chain name -> its one rule, as `iptables -S` prints it."""
    leaving = ["!", "-o", m.bridge] if m.bridge else []
    return {
        chain(vm_id, m.nic_id, "dnat"): ["-d", f"{m.public}/32", "-j", "DNAT",
                                         "--to-destination", m.private],
        chain(vm_id, m.nic_id, "snat"): ["-s", f"{m.private}/32", *leaving, "-j", "SNAT",
                                         "--to-source", m.public]}


def jumps(vm_id: str, m: Mapping) -> list[list[str]]:
    """The builtin chains' rules that lead to the mapping's chains, as `-S` prints them."""
    dnat, snat = chain(vm_id, m.nic_id, "dnat"), chain(vm_id, m.nic_id, "snat")
    found = [[hook, "-d", f"{m.public}/32", "-j", dnat] for hook in HOOKS["dnat"]]
    return found + [[hook, "-s", f"{m.private}/32", "-j", snat] for hook in HOOKS["snat"]]


@dataclass
class Installed:
    """What `iptables -t nat -S` shows of one VM's mappings, and which public addresses
    other chains of the host map."""

    chains: set[str]
    jumps: list[list[str]]  # `-A` lines without the `-A`, exactly as listed
    publics: dict[str, str]  # chain -> the public address its DNAT rule maps
    elsewhere: set[str]


def installed(vm_id: str, listing: str | None = None) -> Installed:
    if listing is None:
        listing = run(["iptables", "-w", "-t", "nat", "-S"]).stdout
    found = Installed(set(), [], {}, set())
    for line in listing.splitlines():
        words = line.split()
        if len(words) < 2:
            continue
        match = _CHAIN.match(words[1])
        mine = match is not None and match.group(1) == vm_id
        if words[0] == "-N" and mine:
            found.chains.add(words[1])
        elif words[0] == "-A" and mine and "DNAT" in words and "-d" in words:
            found.publics[words[1]] = words[words.index("-d") + 1].removesuffix("/32")
        elif words[0] == "-A" and match is not None and "DNAT" in words and "-d" in words:
            found.elsewhere.add(words[words.index("-d") + 1].removesuffix("/32"))
        elif words[0] == "-A" and len(words) > 2 and words[-2] == "-j":
            target = _CHAIN.match(words[-1])
            if target is not None and target.group(1) == vm_id:
                found.jumps.append(words[1:])
    return found


def restore_text(vm_id: str, maps: list[Mapping], now: Installed) -> str:
    """One nat-table transaction from what is installed to what `maps` need: stale jumps
    deleted, wanted chains (re)written, missing jumps inserted, stale chains deleted. ""
    when there is nothing to do."""
    wanted_rules: dict[str, list[str]] = {}
    wanted_jumps: list[list[str]] = []
    for m in maps:
        wanted_rules.update(chain_rules(vm_id, m))
        wanted_jumps += jumps(vm_id, m)
    lines = ["-D " + " ".join(j) for j in now.jumps if j not in wanted_jumps]
    lines += [f":{name} - [0:0]" for name in wanted_rules]
    lines += [f"-A {name} " + " ".join(rule) for name, rule in wanted_rules.items()]
    lines += ["-I " + " ".join(j) for j in wanted_jumps if j not in now.jumps]
    stale = sorted(now.chains - set(wanted_rules))
    lines += [f":{name} - [0:0]" for name in stale] + [f"-X {name}" for name in stale]
    if not lines:
        return ""
    return "\n".join(["*nat", *lines, "COMMIT", ""])


def _held() -> set[str]:
    """The IPv4 addresses on DEVICE (`ip -o` prints `<n>: <dev> inet <addr>/<len> ...`)."""
    found = set()
    for line in run(["ip", "-o", "-4", "addr", "show", "dev", DEVICE]).stdout.splitlines():
        words = line.split()
        if len(words) > 3 and words[2] == "inet":
            found.add(words[3].split("/")[0])
    return found


def _forwarding() -> None:
    try:
        with open("/proc/sys/net/ipv4/ip_forward") as f:
            if f.read().strip() == "1":
                return
    except OSError:
        pass
    run(["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])


def apply(vm_id: str, nics: list[Nic], *, add: bool = True) -> int:
    """Make the host's NAT for the VM what its document says; how many mappings it has.
    With `add` false only what the document no longer has goes (a changed address too),
    nothing new comes: update_sg takes mappings away before the filters change and adds
    them after, so DNATed traffic never meets a moment without its filters."""
    maps = [m for m in (mapping(nic) for nic in nics) if m is not None]
    now = installed(vm_id)
    if not add:
        maps = [m for m in maps
                if now.publics.get(chain(vm_id, m.nic_id, "dnat")) == m.public]
    return _apply(vm_id, maps, now)


def _apply(vm_id: str, maps: list[Mapping], now: Installed) -> int:
    wanted = {m.public for m in maps}
    gone = set(now.publics.values()) - wanted - now.elsewhere
    held = _held() if (gone or maps) else set()
    for public in sorted(gone & held):  # the address first: if this fails, the rules
        run(["ip", "addr", "del", f"{public}/32", "dev", DEVICE])  # stay to say so next time
    if maps:
        _forwarding()
    text = restore_text(vm_id, maps, now)
    if text:
        fw_rules.restore(text)
    for public in sorted(wanted - held):  # the rules first: never an address unmapped
        run(["ip", "addr", "add", f"{public}/32", "dev", DEVICE])
    return len(maps)


def remove(vm_id: str) -> int:
    """Everything of the VM's NAT goes, whatever its document says now; how many mappings
    there were."""
    now = installed(vm_id)
    _apply(vm_id, [], now)
    return len(now.publics)


def with_filters(vm_id: str, nics: list[Nic]) -> tuple[int, int]:
    """What post and update_sg do: the mappings the document no longer has go, then the
    filter chains are remade (fw_rules.apply), then the document's mappings are made, so
    DNATed traffic never meets a moment without its filters. (chains, mappings)."""
    apply(vm_id, nics, add=False)
    chains = fw_rules.apply(vm_id, nics)
    return chains, apply(vm_id, nics)
