"""Virtual networks and leases in the core, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from core import template
from core.errors import Conflict, Forbidden, InvalidRequest, NotFound
from core.service import vms, vnets
from core.service.context import Caller, Cloud
from tests.core.clouds import ADMIN, VM_TEXT, make_cloud, user


@pytest.fixture
def cloud(db_url: str, tmp_path: Path) -> Iterator[Cloud]:
    c = make_cloud(db_url, tmp_path)
    yield c
    c.engine.dispose()


def nics(cloud: Cloud, caller: Caller, vm_id: int) -> list[dict[str, str]]:
    return template.parse(vms.get_vm(cloud, caller, vm_id=vm_id).vm.template).vectors("NIC")


def used(cloud: Cloud, vnet_id: int) -> dict[str, int | None]:
    _, leases = vnets.get_vnet(cloud, ADMIN, vnet_id=vnet_id)
    return {lease.ip: lease.vm_id for lease in leases}


def test_mac_follows_opennebulas_convention() -> None:
    assert vnets.mac_of("192.168.0.5") == "02:00:c0:a8:00:05"
    assert vnets.mac_of("10.0.255.1") == "02:00:0a:00:ff:01"


@pytest.mark.parametrize(("spec", "first", "last"), [
    ("NETWORK_ADDRESS = 10.0.0.0\nNETWORK_SIZE = C", "10.0.0.1", "10.0.0.254"),
    ("NETWORK_ADDRESS = 10.0.0.0/30", "10.0.0.1", "10.0.0.2"),
    ("NETWORK_ADDRESS = 10.1.0.0\nNETWORK_MASK = 255.255.0.0", "10.1.0.1", "10.1.255.254"),
    ("NETWORK_ADDRESS = 10.0.0.0\nNETWORK_SIZE = 100", "10.0.0.1", "10.0.0.126"),
    ("NETWORK_ADDRESS = 10.0.0.0/24\nIP_START = 10.0.0.50\nIP_END = 10.0.0.60", "10.0.0.50",
     "10.0.0.60"),
])
def test_ranges(spec: str, first: str, last: str) -> None:
    import ipaddress

    low, high = vnets.address_range(template.parse(spec))
    assert (str(ipaddress.IPv4Address(low)), str(ipaddress.IPv4Address(high))) == (first, last)


@pytest.mark.parametrize(("text", "why"), [
    ("TYPE = RANGED", "NAME"),
    ("NAME = a\nTYPE = RANGED", "NETWORK_ADDRESS"),
    ("NAME = a\nNETWORK_ADDRESS = 10.0.0.0\nNETWORK_SIZE = Z", "NETWORK_SIZE"),
    ("NAME = a\nNETWORK_ADDRESS = 10.0.0.300/24", "bad network address"),
    ("NAME = a\nTYPE = FIXED\nLEASES = [ MAC = 02:00:00:00:00:01 ]", "needs an IP"),
    ("NAME = a\nTYPE = FIXED\nLEASES = [ IP = 10.0.0.1 ]\nLEASES = [ IP = 10.0.0.1 ]", "twice"),
    ("NAME = a\nTYPE = MESH", "RANGED or FIXED"),
    ("NAME = a\nNETWORK_ADDRESS = 10.0.0.0/7", "at most"),
])
def test_bad_templates(cloud: Cloud, text: str, why: str) -> None:
    with pytest.raises(InvalidRequest, match=why):
        vnets.create_vnet(cloud, ADMIN, text=text)


def test_nics_get_leases_and_give_them_back(cloud: Cloud) -> None:
    red = vnets.create_vnet(cloud, ADMIN, text="NAME = red\nNETWORK_ADDRESS = 10.0.1.0/29\n"
                            "GATEWAY = 10.0.1.1\nWHITE_PORTS_TCP = 22")
    vm_a = vms.create_vm(cloud, ADMIN, text=VM_TEXT + "NIC = [ NETWORK = red ]")
    vm_b = vms.create_vm(cloud, ADMIN, text=VM_TEXT + f"NIC = [ NETWORK_ID = {red}, "
                         "IP = 10.0.1.5 ]")
    (nic,) = nics(cloud, ADMIN, vm_a)
    assert (nic["IP"], nic["MAC"], nic["BRIDGE"]) == ("10.0.1.1", "02:00:0a:00:01:01",
                                                      f"onebr{red}")
    assert (nic["NETWORK_ID"], nic["GATEWAY"], nic["WHITE_PORTS_TCP"]) == (str(red), "10.0.1.1",
                                                                           "22")
    assert nics(cloud, ADMIN, vm_b)[0]["IP"] == "10.0.1.5"
    assert used(cloud, red) == {"10.0.1.1": vm_a, "10.0.1.5": vm_b}
    with pytest.raises(Conflict, match="already in use"):
        vms.create_vm(cloud, ADMIN, text=VM_TEXT + "NIC = [ NETWORK = red, IP = 10.0.1.5 ]")
    with pytest.raises(InvalidRequest, match="outside"):
        vms.create_vm(cloud, ADMIN, text=VM_TEXT + "NIC = [ NETWORK = red, IP = 10.0.2.5 ]")
    with pytest.raises(Conflict, match="in use"):
        vnets.delete_vnet(cloud, ADMIN, vnet_id=red)
    vms.act(cloud, ADMIN, vm_id=vm_a, action="finalize")
    assert used(cloud, red) == {"10.0.1.5": vm_b}
    # a failed creation leaves no lease behind
    assert list(used(cloud, red)) == ["10.0.1.5"]


def test_a_range_runs_out_and_concurrent_vms_never_share(cloud: Cloud) -> None:
    vnets.create_vnet(cloud, ADMIN, text="NAME = tiny\nNETWORK_ADDRESS = 10.9.0.0/29")  # 6

    def create(_: int) -> str:
        try:
            vm_id = vms.create_vm(cloud, ADMIN, text=VM_TEXT + "NIC = [ NETWORK = tiny ]")
        except Conflict as exc:
            return f"full: {exc}"
        return nics(cloud, ADMIN, vm_id)[0]["IP"]

    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(create, range(8)))
    ips = [g for g in got if not g.startswith("full")]
    assert len(ips) == 6 and len(set(ips)) == 6
    assert [g for g in got if g.startswith("full")] == \
        ["full: network tiny has no free lease left"] * 2


def test_fixed_networks_hold_and_release(cloud: Cloud) -> None:
    blue = vnets.create_vnet(cloud, ADMIN, text="NAME = blue\nLEASES = [ IP = 10.0.2.5 ]\n"
                             "LEASES = [ IP = 10.0.2.6, MAC = 02:AA:00:00:00:06 ]")
    vnet, leases = vnets.get_vnet(cloud, ADMIN, vnet_id=blue)
    assert vnet.type == vnets.FIXED
    assert [(lease.ip, lease.mac) for lease in leases] == [("10.0.2.5", "02:00:0a:00:02:05"),
                                                           ("10.0.2.6", "02:aa:00:00:00:06")]
    vnets.hold(cloud, ADMIN, vnet_id=blue, text="LEASES = [ IP = 10.0.2.5 ]")
    vm_id = vms.create_vm(cloud, ADMIN, text=VM_TEXT + "NIC = [ NETWORK = blue ]")
    assert nics(cloud, ADMIN, vm_id)[0]["IP"] == "10.0.2.6"  # the held one is skipped
    with pytest.raises(Conflict, match="no free lease"):
        vms.create_vm(cloud, ADMIN, text=VM_TEXT + "NIC = [ NETWORK = blue ]")
    with pytest.raises(Conflict, match="in use"):
        vnets.rm_leases(cloud, ADMIN, vnet_id=blue, text="LEASES = [ IP = 10.0.2.6 ]")
    vnets.add_leases(cloud, ADMIN, vnet_id=blue, text="LEASES = [ IP = 10.0.2.7 ]")
    with pytest.raises(Conflict, match="already has"):
        vnets.add_leases(cloud, ADMIN, vnet_id=blue, text="LEASES = [ IP = 10.0.2.7 ]")
    vnets.hold(cloud, ADMIN, vnet_id=blue, text="LEASES = [ IP = 10.0.2.5 ]", on=False)
    with pytest.raises(Conflict, match="not on hold"):
        vnets.hold(cloud, ADMIN, vnet_id=blue, text="LEASES = [ IP = 10.0.2.5 ]", on=False)
    vnets.rm_leases(cloud, ADMIN, vnet_id=blue, text="LEASES = [ IP = 10.0.2.5 ]")
    assert used(cloud, blue) == {"10.0.2.6": vm_id, "10.0.2.7": None}
    vms.act(cloud, ADMIN, vm_id=vm_id, action="finalize")
    assert used(cloud, blue) == {"10.0.2.6": None, "10.0.2.7": None}
    vnets.delete_vnet(cloud, ADMIN, vnet_id=blue)
    with pytest.raises(NotFound):
        vnets.get_vnet(cloud, ADMIN, vnet_id=blue)


def test_ranged_hold_takes_an_address_out_of_the_range(cloud: Cloud) -> None:
    net = vnets.create_vnet(cloud, ADMIN, text="NAME = r\nNETWORK_ADDRESS = 10.3.0.0/30")
    vnets.hold(cloud, ADMIN, vnet_id=net, text="LEASES = [ IP = 10.3.0.1 ]")
    vm_id = vms.create_vm(cloud, ADMIN, text=VM_TEXT + "NIC = [ NETWORK = r ]")
    assert nics(cloud, ADMIN, vm_id)[0]["IP"] == "10.3.0.2"
    with pytest.raises(InvalidRequest, match="outside"):
        vnets.hold(cloud, ADMIN, vnet_id=net, text="LEASES = [ IP = 10.4.0.1 ]")
    with pytest.raises(InvalidRequest, match="RANGED"):
        vnets.add_leases(cloud, ADMIN, vnet_id=net, text="LEASES = [ IP = 10.3.0.1 ]")


def test_users_use_only_their_own_networks(cloud: Cloud) -> None:
    alice, bob = user(cloud, "alice"), user(cloud, "bob")
    mine = vnets.create_vnet(cloud, alice, text="NAME = a\nNETWORK_ADDRESS = 10.5.0.0/24")
    assert [v.id for v, _ in vnets.list_vnets(cloud, bob)] == []
    with pytest.raises(Forbidden):
        vms.create_vm(cloud, bob, text=VM_TEXT + f"NIC = [ NETWORK_ID = {mine} ]")
    with pytest.raises(NotFound):
        vms.create_vm(cloud, bob, text=VM_TEXT + "NIC = [ NETWORK = a ]")
    with pytest.raises(Forbidden):
        vnets.delete_vnet(cloud, bob, vnet_id=mine)
    with pytest.raises(Conflict, match="already have"):
        vnets.create_vnet(cloud, alice, text="NAME = a\nNETWORK_ADDRESS = 10.6.0.0/24")
    vnets.create_vnet(cloud, bob, text="NAME = a\nNETWORK_ADDRESS = 10.6.0.0/24")  # own name


def test_nics_attach_and_detach_while_off_a_host(cloud: Cloud) -> None:
    from core.errors import InvalidState
    from core.service import hosts, nics

    net = vnets.create_vnet(cloud, ADMIN, text="NAME = n\nNETWORK_ADDRESS = 10.11.0.0/29")
    vm_id = vms.create_vm(cloud, ADMIN, text=VM_TEXT + "NIC = [ NETWORK = n ]", hold=True)
    assert nics.attach_nic(cloud, ADMIN, vm_id=vm_id, network_id=net, ip="10.11.0.5") == 1
    assert [(n["NIC_ID"], n["IP"]) for n in nics_of(cloud, vm_id)] == [("0", "10.11.0.1"),
                                                                     ("1", "10.11.0.5")]
    assert used(cloud, net) == {"10.11.0.1": vm_id, "10.11.0.5": vm_id}
    nics.detach_nic(cloud, ADMIN, vm_id=vm_id, nic_id=0)
    assert used(cloud, net) == {"10.11.0.5": vm_id}
    with pytest.raises(NotFound):
        nics.detach_nic(cloud, ADMIN, vm_id=vm_id, nic_id=0)
    vms.act(cloud, ADMIN, vm_id=vm_id, action="release")  # PENDING: still off a host
    assert nics.attach_nic(cloud, ADMIN, vm_id=vm_id, network_id=net) == 2
    host = hosts.create_host(cloud, ADMIN, name="h1", im="dummy", vmm="dummy")
    vms.deploy(cloud, ADMIN, vm_id=vm_id, host_id=host)  # ACTIVE: its NICs stay
    with pytest.raises(InvalidState, match="stop it first"):
        nics.attach_nic(cloud, ADMIN, vm_id=vm_id, network_id=net)


def nics_of(cloud: Cloud, vm_id: int) -> list[dict[str, str]]:
    return nics(cloud, ADMIN, vm_id)
