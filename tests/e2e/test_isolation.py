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

import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterator

import pytest

from drivers.lab import Lab
from tests.e2e.labcloud import Cloud, qemu_cloud, wait_until
from tests.guest import guest_os
from tests.strict import missing

pytestmark = pytest.mark.slow
BOOT = 120.0
BRIDGE = "br-iso"
# network -> (guest address, endpoint address, endpoint MAC: OpenNebula's for that address)
NETWORKS = {"red": ("10.218.1.2", "10.218.1.99", "02:00:0a:da:01:63"),
            "blue": ("10.218.2.2", "10.218.2.99", "02:00:0a:da:02:63")}


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check)  # noqa: S603


def endpoint(lab: Lab, name: str) -> str:
    """The namespace of the endpoint on network `name` (named under the lab's prefix, so
    that Lab.destroy() removes it whatever happens)."""
    return f"{lab.prefix}-ep-{name}"


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    if run("sh", "-c", "command -v ebtables", check=False).returncode:
        missing("ebtables (scripts/system-deps installs it)")
    with qemu_cloud(tmp_path_factory, "iso", 1, vnm="ebtables") as made:
        host = made.lab.host("h1").netns
        run("ip", "-n", host, "link", "add", BRIDGE, "type", "bridge")
        run("ip", "-n", host, "link", "set", BRIDGE, "up")
        for name, (_, address, mac) in NETWORKS.items():
            ns = endpoint(made.lab, name)
            run("ip", "netns", "add", ns)
            run("ip", "-n", host, "link", "add", f"ep-{name}", "type", "veth", "peer", "name",
                "eth0", "netns", ns)
            run("ip", "-n", host, "link", "set", f"ep-{name}", "master", BRIDGE, "up")
            run("ip", "-n", ns, "link", "set", "eth0", "address", mac, "up")
            run("ip", "-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
        yield made


def fetch(cloud: Cloud, network: str, address: str) -> str:
    """What port 80 of `address` answers the endpoint of `network` ("" when nothing)."""
    done = run("ip", "netns", "exec", endpoint(cloud.lab, network), "curl", "-s",
               "--max-time", "4", f"http://{address}/", check=False)
    return done.stdout.strip()


def ping(cloud: Cloud, network: str, address: str) -> bool:
    return run("ip", "netns", "exec", endpoint(cloud.lab, network), "ping", "-c", "1", "-W",
               "3", address, check=False).returncode == 0


def rules(cloud: Cloud) -> list[str]:
    listing = run("ip", "netns", "exec", cloud.lab.host("h1").netns, "ebtables", "-L",
                  "FORWARD").stdout
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
    assert "hello from red1" in fetch(cloud, "red", red)
    assert "hello from blue1" in fetch(cloud, "blue", blue)
    assert ping(cloud, "red", red) and not ping(cloud, "blue", blue)  # Blue: ICMP = drop
    # a netmask that covers both networks gets no closer to the other's guest
    for name in NETWORKS:
        ns = endpoint(cloud.lab, name)
        run("ip", "-n", ns, "addr", "flush", "dev", "eth0")
        run("ip", "-n", ns, "addr", "add", f"{NETWORKS[name][1]}/16", "dev", "eth0")
    assert fetch(cloud, "red", blue) == ""
    assert fetch(cloud, "blue", red) == ""
    assert "hello from red1" in fetch(cloud, "red", red)  # its own still answers

    cloud.call("one.vm.action", "shutdown", guests["red"])
    cloud.nubo.wait_vm(guests["red"], "DONE", timeout=BOOT)
    left = rules(cloud)
    assert not any(f"one-{guests['red']}-0" in rule for rule in left), left
    assert sum(f"one-{guests['blue']}-0" in rule for rule in left) == 2
    assert "network driver" not in cloud.nubo.cli("vm", "log", str(guests["red"])).stdout
    cloud.call("one.vm.action", "cancel", guests["blue"])
    cloud.nubo.wait_vm(guests["blue"], "DONE", timeout=BOOT)
    assert rules(cloud) == []
    iptables = run("ip", "netns", "exec", cloud.lab.host("h1").netns, "iptables", "-S").stdout
    assert "one-" not in iptables, iptables
