"""The `ovswitch` network driver on two lab hosts, each running Open vSwitch with the
userspace datapath (this kernel has no OVS module): one bridge per host, the two joined by
a veth "cable" plugged into both bridges as a trunk port.

Networks A (VLAN_ID 100) and B (VLAN_ID 200, white list TCP 80 and ICMP = drop) share the
bridges. Their guests are real (qemu on h1, the test guest serving `hello from <name>` on
port 80); the other end of each conversation is a veth endpoint on h2, an access port of
its network's VLAN, so every packet crosses the trunk tagged. A's endpoint reaches A's
guest, and h2's trunk port sees frames tagged 100 (counted by a test flow matching
dl_vlan=100); B's endpoint, in the same IP subnet, reaches neither A's guest nor anything
but port 80 of B's, whose pings the driver's flows drop. A counting iptables rule in h1's
FORWARD chain stays at zero: iptables never sees what OVS switches, which is why the
driver filters with OpenFlow flows.

Anti-spoofing needs a sender that lies, which the test guest never does: a veth endpoint
on h1 is plugged in as if it were NIC 0 of VM 900 (its host-side end named as the qemu
driver names taps, the driver's pre, post and clean run on it by hand with a VM document
written here); it reaches A's endpoint with its own MAC and IP and not with another IP or
MAC. Ports, tags and cookie-marked flows are read with ovs-vsctl and ovs-ofctl inside the
hosts' namespaces, never from Nubo; they go when the guests go.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from drivers.lab import LabHost, LabUnavailable
from tests.e2e.labcloud import Cloud, qemu_cloud, wait_until
from tests.guest import guest_os
from tests.strict import missing

pytestmark = pytest.mark.slow
BOOT = 120.0
BRIDGE = "ovsbr0"
TRUNK = "trunk"
SUBNET = "10.220.0"
# network -> (VLAN id, filters, guest address, endpoint address on h2)
NETWORKS = {"A": (100, "", f"{SUBNET}.2", f"{SUBNET}.99"),
            "B": (200, 'WHITE_PORTS_TCP = "80"\nICMP = "drop"\n', f"{SUBNET}.3",
                  f"{SUBNET}.98")}
SPOOFER = ("900", "02:00:0a:dc:00:05", f"{SUBNET}.5")  # the stand-in VM: id, MAC, IP
DRIVER = Path(__file__).resolve().parents[2] / "drivers" / "remotes" / "vnm" / "ovswitch"
COUNTER = 0x7E57  # the cookie of the test's own flow on h2's trunk


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check)  # noqa: S603


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    if shutil.which("ovs-vsctl") is None:
        missing("Open vSwitch (ovs-vsctl, package openvswitch-switch)")
    with qemu_cloud(tmp_path_factory, "ovs", 2, vnm="ovswitch") as made:
        h1, h2 = made.lab.host("h1"), made.lab.host("h2")
        for host in (h1, h2):
            try:
                host.start_ovs()
            except LabUnavailable as exc:
                missing(f"Open vSwitch ({exc})")
            host.ovs("ovs-vsctl", "add-br", BRIDGE, "--", "set", "bridge", BRIDGE,
                     "datapath_type=netdev")
        run("ip", "-n", h1.netns, "link", "add", TRUNK, "type", "veth", "peer", "name", TRUNK,
            "netns", h2.netns)
        for host in (h1, h2):
            run("ip", "-n", host.netns, "link", "set", TRUNK, "up")
            host.ovs("ovs-vsctl", "add-port", BRIDGE, TRUNK)  # no tag: a trunk
        for name, (vlan, _, _, address) in NETWORKS.items():
            made.ovs_endpoint(BRIDGE, f"ep{name}", f"{address}/24", tag=vlan, host="h2")
        h2.ovs("ovs-ofctl", "add-flow", BRIDGE, f"cookie={COUNTER:#x},priority=60000,"
               f"in_port={TRUNK},dl_vlan=100,actions=NORMAL")
        yield made


def cookie_flows(host: LabHost, vm_id: int | str, nic: int = 0) -> list[str]:
    mark = 0x6E75 << 48 | int(vm_id) << 16 | nic
    listing = host.ovs("ovs-ofctl", "dump-flows", BRIDGE, f"cookie={mark:#x}/-1")
    return [line for line in listing.splitlines() if "cookie=" in line]


def dropped(host: LabHost, vm_id: int | str) -> int:
    """Packets the NIC's drop flows have dropped so far."""
    return sum(int(line.split("n_packets=")[1].split(",")[0])
               for line in cookie_flows(host, vm_id) if line.endswith("actions=drop"))


def counted(host: LabHost) -> int:
    line = host.ovs("ovs-ofctl", "dump-flows", BRIDGE, f"cookie={COUNTER:#x}/-1")
    return int(line.split("n_packets=")[1].split(",")[0])


def guest(cloud: Cloud, name: str, os_vector: str) -> int:
    vlan, filters, address, _ = NETWORKS[name]
    net = cloud.call("one.vn.allocate", f'NAME = "{name}"\nTYPE = FIXED\nBRIDGE = "{BRIDGE}"\n'
                     f'VLAN = "YES"\nVLAN_ID = "{vlan}"\nLEASES = [ IP = "{address}" ]\n'
                     + filters, -1)
    return int(cloud.call(
        "one.vm.allocate", f'NAME = "{name.lower()}1"\nCPU = "0.1"\nMEMORY = "96"\n' + os_vector
        + f'NIC = [ NETWORK_ID = "{net}" ]\nREQUIREMENTS = "NAME = \\"h1\\""\n'
        'CONTEXT = [ HOSTNAME = "$NAME", ETH0_IP = "$NIC[IP]", ETH0_MASK = "255.255.255.0" ]\n'))


def spoofer_doc() -> str:
    vm_id, mac, ip = SPOOFER
    xml = (f"<VM><ID>{vm_id}</ID><TEMPLATE><NIC><NIC_ID>0</NIC_ID><BRIDGE>{BRIDGE}</BRIDGE>"
           f"<MAC>{mac}</MAC><IP>{ip}</IP><NETWORK_ID>0</NETWORK_ID><VLAN>YES</VLAN>"
           "<VLAN_ID>100</VLAN_ID></NIC></TEMPLATE></VM>")
    return base64.b64encode(xml.encode()).decode()


def test_vlans_across_hosts_filters_and_cleanup(cloud: Cloud,
                                                tmp_path_factory: pytest.TempPathFactory
                                                ) -> None:
    h1, h2 = cloud.lab.host("h1"), cloud.lab.host("h2")
    run("ip", "netns", "exec", h1.netns, "iptables", "-w", "-I", "FORWARD", "-m", "comment",
        "--comment", "ovs-probe")  # counts, decides nothing
    os_vector = guest_os(tmp_path_factory.mktemp("ovs-guest"))
    guests = {name: guest(cloud, name, os_vector) for name in NETWORKS}
    for name, vm_id in guests.items():
        wait_until(f"{name}'s guest up", lambda v=vm_id: "NUBO-NET-UP" in cloud.console(v),
                   BOOT)
    assert cloud.qemu_hosts(guests["A"]) == ["h1"] == cloud.qemu_hosts(guests["B"])
    for name, vm_id in guests.items():
        tap = f"one-{vm_id}-0"
        assert h1.ovs("ovs-vsctl", "get", "port", tap, "tag").strip() == str(NETWORKS[name][0])
        assert len(cookie_flows(h1, vm_id)) == (6 if name == "A" else 6 + 8)

    a_ip, b_ip = NETWORKS["A"][2], NETWORKS["B"][2]
    before = counted(h2)
    assert "hello from a1" in cloud.web("epA", a_ip)
    assert cloud.ping("epA", a_ip)
    assert counted(h2) > before  # A's frames crossed the trunk tagged 100
    assert "hello from b1" in cloud.web("epB", b_ip)  # white list: port 80
    assert not cloud.ping("epB", b_ip)  # ICMP = drop
    assert cloud.web("epB", a_ip) == "" and not cloud.ping("epB", a_ip)  # B cannot reach A
    assert cloud.web("epA", b_ip) == ""
    probe = run("ip", "netns", "exec", h1.netns, "iptables", "-w", "-L", "FORWARD", "-v", "-x",
                "-n").stdout
    assert [line.split()[0] for line in probe.splitlines() if "ovs-probe" in line] == ["0"]

    # a sender that lies: a veth standing in for NIC 0 of VM 900 on network A
    vm_id, mac, ip = SPOOFER
    spoof = cloud.veth("spoof", f"{ip}/24", port=f"one-{vm_id}-0", mac=mac)
    for action in ("pre", "post"):
        h1.ovs("python3", str(DRIVER / action), spoofer_doc(), f"one-{vm_id}")
    h1.ovs("python3", str(DRIVER / "update_sg"), spoofer_doc(), f"one-{vm_id}")  # twice: same
    assert len(cookie_flows(h1, vm_id)) == 6

    def reaches() -> bool:
        return run("ip", "netns", "exec", spoof, "ping", "-c", "1", "-W", "3",
                   NETWORKS["A"][3], check=False).returncode == 0

    assert reaches()
    def readdress(address: str) -> None:
        run("ip", "-n", spoof, "addr", "flush", "dev", "eth0")
        run("ip", "-n", spoof, "addr", "add", f"{address}/24", "dev", "eth0")

    before = dropped(h1, vm_id)
    readdress(f"{SUBNET}.6")
    assert not reaches()  # another IP (its ARP included)
    assert dropped(h1, vm_id) > before
    readdress(ip)
    assert reaches()
    before = dropped(h1, vm_id)
    run("ip", "-n", spoof, "link", "set", "eth0", "address", "02:00:0a:dc:00:66")
    assert not reaches()  # another MAC
    assert dropped(h1, vm_id) > before
    h1.ovs("python3", str(DRIVER / "clean"), spoofer_doc())
    assert cookie_flows(h1, vm_id) == []
    assert f"one-{vm_id}-0" not in h1.ovs("ovs-vsctl", "list-ports", BRIDGE).split()

    cloud.call("one.vm.action", "shutdown", guests["A"])  # through the ACPI button
    cloud.call("one.vm.action", "cancel", guests["B"])
    for vm_id in guests.values():
        cloud.nubo.wait_vm(vm_id, "DONE", timeout=BOOT)
    ports = h1.ovs("ovs-vsctl", "list-ports", BRIDGE).split()
    for vm_id in guests.values():
        assert cookie_flows(h1, vm_id) == []
        assert f"one-{vm_id}-0" not in ports
    assert ports == [TRUNK]
