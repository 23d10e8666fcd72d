"""The `fw` network driver on a lab host: guests on networks with white and black port
lists and ICMP = drop, reached from a veth endpoint on the same bridge. A white list lets
its ports through and drops the rest of the protocol, a black list drops its ports, ICMP =
drop stops pings; the chains exist while the guests run and go with them. Read with curl,
ping and `iptables -S` inside the lab's namespaces, never from Nubo."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.labcloud import Cloud, qemu_cloud, wait_until
from tests.guest import guest_os

pytestmark = pytest.mark.slow
BOOT = 120.0
BRIDGE = "br-fw"
ENDPOINT_IP = "10.219.0.99"
# network -> (its filter attributes, the guest's address)
NETWORKS = {
    "web": ('WHITE_PORTS_TCP = "80"\nICMP = "drop"\n', "10.219.1.2"),
    "noweb": ('BLACK_PORTS_TCP = "80"\n', "10.219.2.2"),
    "mail": ('WHITE_PORTS_TCP = "22:25,443"\nBLACK_PORTS_TCP = "443"\n', "10.219.3.2"),
}


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    with qemu_cloud(tmp_path_factory, "fw", 1, vnm="fw") as made:
        made.endpoint(BRIDGE, "ep", f"{ENDPOINT_IP}/16")
        yield made


def chains(cloud: Cloud) -> list[str]:
    return [line for line in cloud.in_host("iptables", "-S").splitlines() if "one-" in line]


def test_white_and_black_ports_and_icmp(cloud: Cloud,
                                        tmp_path_factory: pytest.TempPathFactory) -> None:
    os_vector = guest_os(tmp_path_factory.mktemp("fw-guest"))
    guests = {}
    for name, (filters, address) in NETWORKS.items():
        guests[name] = cloud.guest_on(name, name, os_vector, bridge=BRIDGE, ip=address,
                                      mask="255.255.0.0", filters=filters)
    for name, vm_id in guests.items():
        wait_until(f"{name} up", lambda v=vm_id: "NUBO-NET-UP" in cloud.console(v), BOOT)
    found = chains(cloud)
    for vm_id in guests.values():
        assert any(f"--physdev-out one-{vm_id}-0 " in line for line in found), found

    web_ip, noweb_ip, mail_ip = (NETWORKS[n][1] for n in ("web", "noweb", "mail"))
    assert "hello from" in cloud.web("ep", web_ip)  # white 80...
    assert not cloud.ping("ep", web_ip)  # ...and ICMP dropped
    assert cloud.web("ep", noweb_ip) == "" and cloud.ping("ep", noweb_ip)  # black 80
    assert cloud.web("ep", mail_ip) == "" and cloud.ping("ep", mail_ip)  # 80 not on its white list

    for vm_id in guests.values():
        cloud.call("one.vm.action", "cancel", vm_id)
    for vm_id in guests.values():
        cloud.nubo.wait_vm(vm_id, "DONE", timeout=BOOT)
    assert chains(cloud) == []
