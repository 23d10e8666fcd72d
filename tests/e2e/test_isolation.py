"""The seed's network-isolation hands-on on a lab host, with the `ebtables` network driver:
guests on networks Red and Blue share one bridge; each network reaches its own guest and
not the other's, also after widening its netmask; the rules exist while a guest runs and
go with it; Blue's `ICMP = drop` (the fw part of the driver) stops pings to its guest.

The guests are real (qemu, the test guest serving `hello from <hostname>` on port 80).
The other end of each conversation is a veth endpoint in a namespace of its own on the
same bridge, with a MAC and an address of its network, as a VM of that network would have
(a guest adds nothing there: the filtering happens on the bridge). Rules are read with
`ebtables -L` inside the host's namespace, never from Nubo.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator

import pytest

from tests.e2e.labcloud import Cloud, qemu_cloud, run, wait_until
from tests.guest import guest_os
from tests.strict import missing

pytestmark = pytest.mark.slow
BOOT = 120.0
BRIDGE = "br-iso"
# network -> (guest address, endpoint address, endpoint MAC: OpenNebula's for that address)
NETWORKS = {"red": ("10.218.1.2", "10.218.1.99", "02:00:0a:da:01:63"),
            "blue": ("10.218.2.2", "10.218.2.99", "02:00:0a:da:02:63")}


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    if run("sh", "-c", "command -v ebtables", check=False).returncode:
        missing("ebtables (scripts/system-deps installs it)")
    with qemu_cloud(tmp_path_factory, "iso", 1, vnm="ebtables") as made:
        for name, (_, address, mac) in NETWORKS.items():
            made.endpoint(BRIDGE, f"ep-{name}", f"{address}/24", mac=mac)
        yield made


def rules(cloud: Cloud) -> list[str]:
    listing = cloud.in_host("ebtables", "-L", "FORWARD")
    return [line for line in listing.splitlines() if line.startswith("-")]


def test_red_and_blue_reach_their_own_guest_only(cloud: Cloud,
                                                 tmp_path_factory: pytest.TempPathFactory
                                                 ) -> None:
    os_vector = guest_os(tmp_path_factory.mktemp("iso-guest"))
    guests = {}
    for name, (address, _, _) in NETWORKS.items():
        icmp = 'ICMP = "drop"\n' if name == "blue" else ""  # the fw part of the driver
        guests[name] = cloud.guest_on(name, f"{name}1", os_vector, bridge=BRIDGE, ip=address,
                                      filters=icmp)
    for name, vm_id in guests.items():
        wait_until(f"{name}1 up on its network", lambda v=vm_id: "NUBO-NET-UP" in
                   cloud.console(v), BOOT)
    found = rules(cloud)
    for vm_id in guests.values():
        mac = ET.fromstring(cloud.call("one.vm.info", vm_id)).findtext("TEMPLATE/NIC/MAC")
        prefix = ":".join((mac or "").split(":")[:5])
        assert f"-s ! {prefix}:00/ff:ff:ff:ff:ff:00 -o one-{vm_id}-0 -j DROP" in found, found
        assert f"-s ! {mac} -i one-{vm_id}-0 -j DROP" in found, found

    red, blue = NETWORKS["red"][0], NETWORKS["blue"][0]
    assert "hello from red1" in cloud.web("ep-red", red)
    assert "hello from blue1" in cloud.web("ep-blue", blue)
    assert cloud.ping("ep-red", red) and not cloud.ping("ep-blue", blue)  # Blue: ICMP = drop
    # a netmask that covers both networks gets no closer to the other's guest
    for name in NETWORKS:
        cloud.at_endpoint(f"ep-{name}", "ip", "addr", "flush", "dev", "eth0")
        cloud.at_endpoint(f"ep-{name}", "ip", "addr", "add", f"{NETWORKS[name][1]}/16", "dev",
                          "eth0")
    assert cloud.web("ep-red", blue) == ""
    assert cloud.web("ep-blue", red) == ""
    assert "hello from red1" in cloud.web("ep-red", red)  # its own still answers

    cloud.call("one.vm.action", "shutdown", guests["red"])
    cloud.nubo.wait_vm(guests["red"], "DONE", timeout=BOOT)
    left = rules(cloud)
    assert not any(f"one-{guests['red']}-0" in rule for rule in left), left
    assert sum(f"one-{guests['blue']}-0" in rule for rule in left) == 2
    assert "network driver" not in cloud.nubo.cli("vm", "log", str(guests["red"])).stdout
    cloud.call("one.vm.action", "cancel", guests["blue"])
    cloud.nubo.wait_vm(guests["blue"], "DONE", timeout=BOOT)
    assert rules(cloud) == []
    iptables = cloud.in_host("iptables", "-S")
    assert "one-" not in iptables, iptables
