"""Virtual networks and their leases (OpenNebula 3.4's RANGED and FIXED networks).

A RANGED network is an address range (NETWORK_ADDRESS with NETWORK_SIZE or NETWORK_MASK,
optionally narrowed by IP_START/IP_END); its Lease rows exist only for addresses in use
or on hold. A FIXED network lists its leases (LEASES = [ IP = ..., MAC = ... ]); their
rows exist while the network does. A lease in use names its VM; a held lease has VM -1.
MACs follow OpenNebula's convention: 02:00 followed by the four bytes of the IP.

A NIC may use the caller's own networks (any, for an admin) and networks whose template
says PUBLIC = YES (OpenNebula 3.0's published networks), which every user may lease from
but only the owner changes. How NICs and Elastic IPs take leases: core.service.leases.
A lease held for an Elastic IP is neither released nor deleted with its network here.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from sqlmodel import Session, col, delete, select

from core import template
from core.errors import Conflict, InvalidRequest, NotFound, OutsideNetwork
from core.models import ADMIN_GROUP_ID, Address, Lease, VNet
from core.service.access import ALL, fetch, id_range, restrict
from core.service.context import Caller, Cloud

RANGED, FIXED = 0, 1
HELD = -1
SIZES = {"A": 1 << 24, "B": 1 << 16, "C": 256}
MAX_RANGE = 1 << 24


def mac_of(ip: str) -> str:
    """OpenNebula's MAC for an IPv4 address: 02:00 and the address's four bytes."""
    return "02:00:" + ":".join(f"{b:02x}" for b in ipaddress.IPv4Address(ip).packed)


def parse_ip(text: str, what: str) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(text.strip())
    except ValueError:
        raise InvalidRequest(f"{what}: {text!r} is not an IPv4 address") from None


def network_of(tmpl: template.Template) -> ipaddress.IPv4Network:
    """The IPv4 network of a RANGED network's template."""
    base = tmpl.get("NETWORK_ADDRESS") or ""
    if not base:
        raise InvalidRequest("a RANGED network needs NETWORK_ADDRESS")
    size_text = (tmpl.get("NETWORK_SIZE") or "").upper()
    mask = tmpl.get("NETWORK_MASK") or ""
    try:
        if "/" in base:
            net = ipaddress.IPv4Network(base, strict=False)
        elif mask:
            net = ipaddress.IPv4Network(f"{base}/{mask}", strict=False)
        else:
            size = SIZES.get(size_text or "C") or (int(size_text) if size_text.isdigit() else 0)
            if size <= 1:
                raise InvalidRequest(f"NETWORK_SIZE must be A, B, C or a number of addresses, "
                                     f"not {size_text!r}")
            prefix = 32 - max(2, (size - 1).bit_length())  # the smallest block holding size
            net = ipaddress.IPv4Network(f"{base}/{prefix}", strict=False)
    except ValueError as exc:
        raise InvalidRequest(f"bad network address: {exc}") from None
    if net.num_addresses > MAX_RANGE:
        raise InvalidRequest(f"a network holds at most {MAX_RANGE} addresses")
    return net


def address_range(tmpl: template.Template) -> tuple[int, int]:
    """First and last usable address (as integers) of a RANGED network's template."""
    net = network_of(tmpl)
    first, last = int(net.network_address) + 1, int(net.broadcast_address) - 1
    if tmpl.get("IP_START"):
        first = max(first, int(parse_ip(tmpl.get("IP_START") or "", "IP_START")))
    if tmpl.get("IP_END"):
        last = min(last, int(parse_ip(tmpl.get("IP_END") or "", "IP_END")))
    if first > last:
        raise InvalidRequest("the network's address range is empty")
    return first, last


def is_public(vnet: VNet) -> bool:
    """A published network: every user may lease from it."""
    return (template.parse(vnet.template).get("PUBLIC") or "NO").upper() == "YES"


def usable(vnet: VNet, caller: Caller) -> bool:
    """The caller may give its NICs leases of this network."""
    return caller.owns(vnet.uid) or is_public(vnet)


def is_down(vnet: VNet) -> bool:
    """A network taken down gives no new leases (VMs holding one keep it)."""
    return (template.parse(vnet.template).get("DOWN") or "NO").upper() == "YES"


def set_down(cloud: Cloud, caller: Caller, *, vnet_id: int, down: bool) -> None:
    with cloud.session() as s:
        vnet = fetch(s, VNet, vnet_id, caller, "virtual network", lock=True)
        tmpl = template.parse(vnet.template)
        tmpl.set("DOWN", "YES" if down else "NO")
        vnet.template = tmpl.dumps()
        s.add(vnet)


def _fixed_leases(tmpl: template.Template) -> list[tuple[str, str]]:
    found = []
    for lease in tmpl.vectors("LEASES"):
        if "IP" not in lease:
            raise InvalidRequest("each LEASES vector needs an IP")
        ip = str(parse_ip(lease["IP"], "LEASES IP"))
        found.append((ip, lease.get("MAC", "").lower() or mac_of(ip)))
    return found


def create_vnet(cloud: Cloud, caller: Caller, *, text: str) -> int:
    tmpl = template.parse(text)
    name = template.required_name(tmpl, "network")
    kind = (tmpl.get("TYPE") or ("FIXED" if tmpl.vectors("LEASES") else "RANGED")).upper()
    if kind not in ("RANGED", "FIXED"):
        raise InvalidRequest(f"network TYPE must be RANGED or FIXED, not {kind}")
    leases = _fixed_leases(tmpl) if kind == "FIXED" else []
    if kind == "RANGED":
        address_range(tmpl)  # validate now
    vlan = (tmpl.get("VLAN") or ("YES" if tmpl.get("PHYDEV") else "NO")).upper() == "YES"
    with cloud.session() as s:
        if s.exec(select(VNet.id).where(VNet.uid == caller.uid, VNet.name == name)).first():
            raise Conflict(f"you already have a network named {name}")
        vnet = VNet(name=name, uid=caller.uid, gid=caller.gid,
                    type=RANGED if kind == "RANGED" else FIXED, bridge=tmpl.get("BRIDGE") or "",
                    phydev=tmpl.get("PHYDEV") or "", vlan=vlan, vlan_id=tmpl.get("VLAN_ID") or "",
                    template=tmpl.dumps())
        s.add(vnet)
        s.flush()
        assert vnet.id is not None
        if not vnet.bridge:
            vnet.bridge = f"onebr{vnet.id}"
        if len({ip for ip, _ in leases}) != len(leases):
            raise InvalidRequest("LEASES lists an IP twice")
        for ip, mac in leases:
            s.add(Lease(vnet_id=vnet.id, ip=ip, mac=mac))
        return vnet.id


def get_vnet(cloud: Cloud, caller: Caller, *, vnet_id: int) -> tuple[VNet, list[Lease]]:
    with cloud.session() as s:
        vnet = fetch(s, VNet, vnet_id, caller, "virtual network")
        return vnet, leases_by_network(s, [vnet_id]).get(vnet_id, [])


def list_vnets(cloud: Cloud, caller: Caller, *, flag: int = ALL, start: int = -1,
               end: int = -1) -> list[tuple[VNet, list[Lease]]]:
    with cloud.session() as s:
        query = id_range(restrict(select(VNet), VNet, caller, flag), VNet, start, end)
        rows = list(s.exec(query.order_by(col(VNet.id))))
        leases = leases_by_network(s, [r.id for r in rows if r.id is not None])
        return [(r, leases.get(r.id or 0, [])) for r in rows]


def usable_vnets(cloud: Cloud, caller: Caller) -> list[tuple[VNet, list[Lease]]]:
    """The networks the caller may lease from (its own, published ones; all for an
    admin), in id order, with their leases."""
    with cloud.session() as s:
        query = select(VNet)
        if not caller.admin:
            query = query.where((col(VNet.uid) == caller.uid)
                                | col(VNet.template).contains("PUBLIC"))
        rows = [r for r in s.exec(query.order_by(col(VNet.id))) if usable(r, caller)]
        leases = leases_by_network(s, [r.id for r in rows if r.id is not None])
        return [(r, leases.get(r.id or 0, [])) for r in rows]


def configured(s: Session, ref: str) -> VNet | None:
    """The network a setting names: an id, or a name among the networks of the oneadmin
    group (a user's network of that name is not taken for the operator's); None if there
    is none."""
    ref = ref.strip()
    if not ref:
        return None
    if ref.isdigit():
        return s.get(VNet, int(ref))
    return s.exec(select(VNet).where(VNet.name == ref, VNet.gid == ADMIN_GROUP_ID)
                  .order_by(col(VNet.id))).first()


def configured_id(cloud: Cloud, *, ref: str) -> int | None:
    """The id of the network a setting names (see `configured`)."""
    with cloud.session() as s:
        found = configured(s, ref)
        return found.id if found is not None else None


def block_of(vnet: VNet, leases: Sequence[Lease]) -> ipaddress.IPv4Network | None:
    """The network's address block: a RANGED network's, a FIXED network's NETWORK_ADDRESS
    and NETWORK_MASK if it has them, else the smallest block holding its leases."""
    tmpl = template.parse(vnet.template)
    if vnet.type == RANGED or tmpl.get("NETWORK_ADDRESS"):
        try:
            return network_of(tmpl)
        except InvalidRequest:
            return None
    if not leases:
        return None
    numbers = [int(ipaddress.IPv4Address(lease.ip)) for lease in leases]
    low, high = min(numbers), max(numbers)
    prefix = 32 - (low ^ high).bit_length()
    return ipaddress.IPv4Network((low, prefix), strict=False)


def free_count(vnet: VNet, leases: Sequence[Lease]) -> int:
    """How many leases the network can still give."""
    if vnet.type == FIXED:
        return sum(1 for lease in leases if lease.vm_id is None)
    first, last = address_range(template.parse(vnet.template))
    taken = sum(1 for lease in leases
                if first <= int(ipaddress.IPv4Address(lease.ip)) <= last)
    return last - first + 1 - taken


def find_vnet(cloud: Cloud, caller: Caller, *, ref: str) -> int:
    if ref.isdigit():
        return int(ref)
    with cloud.session() as s:
        row = s.exec(restrict(select(VNet).where(VNet.name == ref), VNet, caller)
                     .order_by(col(VNet.id))).first()
        if row is None or row.id is None:
            raise NotFound("virtual network", ref)
        return int(row.id)


def leases_by_network(s: Session, vnet_ids: Sequence[int]) -> dict[int, list[Lease]]:
    found: dict[int, list[Lease]] = {}
    if vnet_ids:
        query = select(Lease).where(col(Lease.vnet_id).in_(list(vnet_ids)))
        for lease in s.exec(query):
            found.setdefault(lease.vnet_id, []).append(lease)
    for leases in found.values():
        leases.sort(key=lambda lease: int(ipaddress.IPv4Address(lease.ip)))
    return found


def delete_vnet(cloud: Cloud, caller: Caller, *, vnet_id: int) -> None:
    with cloud.session() as s:
        vnet = fetch(s, VNet, vnet_id, caller, "virtual network", lock=True)
        used = s.exec(select(Lease).where(Lease.vnet_id == vnet_id,
                                          col(Lease.vm_id) > 0)).first()
        if used is not None:
            raise Conflict(f"network {vnet.name} has leases in use (VM {used.vm_id})")
        held = s.exec(select(Address).where(Address.vnet_id == vnet_id)).first()
        if held is not None:
            raise Conflict(f"network {vnet.name} has leases held for Elastic IPs "
                           f"({held.ip})")
        s.execute(delete(Lease).where(col(Lease.vnet_id) == vnet_id))
        s.delete(vnet)


def _lease_ips(text: str) -> list[tuple[str, str]]:
    tmpl = template.parse(text)
    if not tmpl.vectors("LEASES"):
        raise InvalidRequest("the template needs LEASES = [ IP = ... ]")
    return _fixed_leases(tmpl)


def add_leases(cloud: Cloud, caller: Caller, *, vnet_id: int, text: str) -> None:
    with cloud.session() as s:
        vnet = fetch(s, VNet, vnet_id, caller, "virtual network", lock=True)
        if vnet.type != FIXED:
            raise InvalidRequest(f"network {vnet.name} is RANGED: leases come from its range")
        have = {lease.ip for lease in leases_by_network(s, [vnet_id]).get(vnet_id, [])}
        for ip, mac in _lease_ips(text):
            if ip in have:
                raise Conflict(f"network {vnet.name} already has the lease {ip}")
            s.add(Lease(vnet_id=vnet_id, ip=ip, mac=mac))
            have.add(ip)


def rm_leases(cloud: Cloud, caller: Caller, *, vnet_id: int, text: str) -> None:
    with cloud.session() as s:
        vnet = fetch(s, VNet, vnet_id, caller, "virtual network", lock=True)
        if vnet.type != FIXED:
            raise InvalidRequest(f"network {vnet.name} is RANGED: it has no leases to remove")
        for ip, _ in _lease_ips(text):
            lease = s.exec(select(Lease).where(Lease.vnet_id == vnet_id, Lease.ip == ip)).first()
            if lease is None:
                raise NotFound("lease", f"{ip} in network {vnet.name}")
            if lease.vm_id is not None:
                raise Conflict(f"lease {ip} is in use")
            s.delete(lease)


def hold(cloud: Cloud, caller: Caller, *, vnet_id: int, text: str, on: bool = True) -> None:
    """Put leases on hold (nobody gets them) or release held ones."""
    with cloud.session() as s:
        vnet = fetch(s, VNet, vnet_id, caller, "virtual network", lock=True)
        tmpl = template.parse(vnet.template)
        for ip, mac in _lease_ips(text):
            lease = s.exec(select(Lease).where(Lease.vnet_id == vnet_id, Lease.ip == ip)).first()
            if on:
                if lease is not None and lease.vm_id is not None:
                    raise Conflict(f"lease {ip} is already {'held' if lease.vm_id == HELD else 'used'}")
                if lease is None:
                    check_in_range(vnet, tmpl, ip)
                    lease = Lease(vnet_id=vnet_id, ip=ip, mac=mac)
                lease.vm_id = HELD
                s.add(lease)
            else:
                if lease is None or lease.vm_id != HELD:
                    raise Conflict(f"lease {ip} is not on hold")
                if _address_of(s, vnet_id, ip) is not None:
                    raise Conflict(f"lease {ip} is held for an Elastic IP: release the "
                                   "address instead")
                free_lease(s, vnet, lease)


def _address_of(s: Session, vnet_id: int, ip: str) -> Address | None:
    return s.exec(select(Address).where(Address.vnet_id == vnet_id, Address.ip == ip)).first()


def check_in_range(vnet: VNet, tmpl: template.Template, ip: str) -> None:
    if vnet.type == FIXED:
        raise NotFound("lease", f"{ip} in network {vnet.name}")
    first, last = address_range(tmpl)
    if not first <= int(ipaddress.IPv4Address(ip)) <= last:
        raise OutsideNetwork(f"{ip} is outside network {vnet.name}'s range")


def free_lease(s: Session, vnet: VNet, lease: Lease) -> None:
    if vnet.type == RANGED:
        s.delete(lease)
    else:
        lease.vm_id = None
        s.add(lease)
