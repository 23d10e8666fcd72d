"""EC2 security groups enforced by the `ovswitch` network driver as OpenFlow flows: one lab
host running Open vSwitch (userspace datapath), real qemu guests on an OVS bridge in
groups made with boto3 through Nubo's EC2 front door, reached with curl and ping from veth
endpoints that are access ports of the guests' VLAN on the same bridge.

A guest in `web` (tcp/80 from one endpoint's address, ICMP from anywhere) answers that
endpoint's curl and everyone's ping, and nobody else's curl, also once its group lost the
default allow-all egress rule (its answers belong to connections the endpoints started);
a guest in a group without ingress rules answers nothing. Rules authorized and revoked
while the guests run take effect without a restart (update_sg). The groups combine with
the network's port filters: with ICMP = drop on its network, a guest whose group allows
ICMP still drops pings, at the port filter's flow.

Outbound rules need a guest that starts connections, which the test guest never does: a
veth endpoint stands in for NIC 0 of VM 901 (as in test_ovswitch.py), the driver's pre,
post, update_sg and clean run on it by hand with a VM document written here. It reaches
what its outbound rules allow (ping one endpoint; TCP to port 80, refused by the endpoint
rather than dropped), not the rest, and the answers come back although it has no inbound
rule. Flows are read with ovs-ofctl inside the host's namespace; they go with the guests.

IPv6 alike, with a second stand-in (VM 902) and the endpoints given ULA addresses (no
duplicate address detection) and a web server on `::` port 8080 in the stand-in: tcp/8080
passes over IPv6 from ep-a's /128 only and over IPv4 from ep-b's /32 only (each family its
own rules); ICMPv6 echo is dropped until update_sg adds an ICMPV6 rule for ep-b; neighbour
discovery passes both ways although the stand-in has no outbound IPv6 rule.
"""

from __future__ import annotations

import base64
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.apis.ec2.test_boto3 import client, keys
from tests.e2e.labcloud import Cloud, qemu_cloud, run, wait_until
from tests.guest import guest_os

pytestmark = pytest.mark.slow
BOOT = 120.0
BRIDGE = "ovs-sg"
VLAN = 100
ALLOWED, OTHER = "10.222.0.99", "10.222.0.98"  # the endpoints
GUESTS = {"opened": "10.222.1.2", "closed": "10.222.2.2"}
NETWORK = f'VLAN = "YES"\nVLAN_ID = "{VLAN}"\n'
STANDIN = ("901", "02:00:0a:de:03:05", "10.222.3.5")  # id, MAC, IP of the stand-in VM
STANDIN6 = ("902", "02:00:0a:de:03:06", "10.222.3.6")  # the IPv6 one, with fd00:222::6
V6 = {"902": "fd00:222::6", "ep-a": "fd00:222::99", "ep-b": "fd00:222::98"}
DRIVER = Path(__file__).resolve().parents[2] / "drivers" / "remotes" / "vnm" / "ovswitch"


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    with qemu_cloud(tmp_path_factory, "osg", 1, vnm="ovswitch") as made:
        made.ovs_bridge(BRIDGE)
        made.ovs_endpoint(BRIDGE, "ep-a", f"{ALLOWED}/16", tag=VLAN)
        made.ovs_endpoint(BRIDGE, "ep-b", f"{OTHER}/16", tag=VLAN)
        yield made


def core_id(group_id: str) -> int:
    return int(group_id.removeprefix("sg-"), 16)


def mark(vm_id: int | str) -> int:
    return 0x6E75 << 48 | int(vm_id) << 16  # NIC 0's cookie


def packets(cloud: Cloud, vm_id: int | str, table: int, *parts: str) -> int:
    """Packets so far through the NIC's flows of `table` whose text has all `parts`."""
    total = 0
    for line in cloud.ovs_flows(BRIDGE, mark(vm_id)):
        if f"table={table}," in line and all(part in line for part in parts):
            total += int(line.split("n_packets=")[1].split(",")[0])
    return total


def tcp(cloud: Cloud, name: str, address: str, port: int) -> int:
    """curl's exit status from endpoint `name`: 7 refused (the SYN got there and the RST
    back), 28 timed out (dropped), 0 answered."""
    return cloud.at_endpoint(name, "curl", "-s", "--max-time", "3",
                             f"http://{address}:{port}/").returncode


def test_groups_allow_and_deny_guests_on_an_ovs_bridge(cloud: Cloud,
                                                      tmp_path_factory: pytest.TempPathFactory
                                                      ) -> None:
    ec2 = client(cloud.nubo, keys(cloud.nubo, 0))
    web = ec2.create_security_group(GroupName="web", Description="web")["GroupId"]
    shut = ec2.create_security_group(GroupName="shut", Description="none")["GroupId"]
    ec2.authorize_security_group_ingress(GroupId=web, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 80, "ToPort": 80,
         "IpRanges": [{"CidrIp": f"{ALLOWED}/32"}]},
        {"IpProtocol": "icmp", "FromPort": -1, "ToPort": -1,
         "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
    ec2.revoke_security_group_egress(GroupId=web, IpPermissions=[
        {"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])  # no outbound rule
    os_vector = guest_os(tmp_path_factory.mktemp("osg-guest"))
    guests = {}
    for name, group, filters in (("opened", web, ""), ("closed", shut, 'ICMP = "drop"\n')):
        guests[name] = cloud.guest_on(name, name, os_vector, bridge=BRIDGE, ip=GUESTS[name],
                                      mask="255.255.0.0", filters=NETWORK + filters,
                                      extra=f'SECURITY_GROUPS = "{core_id(group)}"\n')
    for name, vm_id in guests.items():
        wait_until(f"{name} up", lambda v=vm_id: "NUBO-NET-UP" in cloud.console(v), BOOT)
    opened, closed = GUESTS["opened"], GUESTS["closed"]
    flows = cloud.ovs_flows(BRIDGE, mark(guests["opened"]))
    assert any(f"nw_src={ALLOWED},tp_dst=80" in line for line in flows), flows
    assert [line for line in flows if "table=1," in line and "priority=40000" in line] == []

    assert "hello from opened" in cloud.web("ep-a", opened)  # tcp/80 from its block
    assert cloud.web("ep-b", opened) == ""  # tcp/80, but not from that block
    assert packets(cloud, guests["opened"], 2, "actions=drop") > 0  # the group dropped it
    assert cloud.ping("ep-a", opened) and cloud.ping("ep-b", opened)  # ICMP from anywhere
    assert cloud.web("ep-a", closed) == "" and not cloud.ping("ep-a", closed)

    # rules changed while the guests run reach them without a restart
    ec2.authorize_security_group_ingress(GroupId=shut, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 80, "ToPort": 80,
         "IpRanges": [{"CidrIp": "10.222.0.0/24"}]},
        {"IpProtocol": "icmp", "FromPort": -1, "ToPort": -1,
         "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
    wait_until("tcp/80 opened on the running guest",
               lambda: "hello from closed" in cloud.web("ep-b", closed), 60)
    before = packets(cloud, guests["closed"], 3, "icmp", "actions=drop")
    assert not cloud.ping("ep-b", closed)  # the group allows it, ICMP = drop does not
    assert packets(cloud, guests["closed"], 3, "icmp", "actions=drop") > before
    ec2.revoke_security_group_ingress(GroupId=web, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 80, "ToPort": 80,
         "IpRanges": [{"CidrIp": f"{ALLOWED}/32"}]}])
    wait_until("tcp/80 closed on the running guest",
               lambda: cloud.web("ep-a", opened) == "", 60)
    assert cloud.ping("ep-a", opened)  # the ICMP rule stays
    log = cloud.nubo.cli("vm", "log", str(guests["opened"])).stdout
    assert "update_sg" in log, log

    for vm_id in guests.values():
        cloud.call("one.vm.action", "cancel", vm_id)
    for vm_id in guests.values():
        cloud.nubo.wait_vm(vm_id, "DONE", timeout=BOOT)
        assert cloud.ovs_flows(BRIDGE, mark(vm_id)) == []


def standin_doc(*rules: tuple[str, str, str, str], who: tuple[str, str, str] = STANDIN
                ) -> str:
    """The stand-in VM's document: in a group, with these (RULE_TYPE, PROTOCOL, RANGE,
    NETWORK) rules."""
    vm_id, mac, ip = who
    vectors = "".join(
        f"<SECURITY_GROUP_RULE><SECURITY_GROUP_ID>9</SECURITY_GROUP_ID><RULE_TYPE>{kind}"
        f"</RULE_TYPE><PROTOCOL>{proto}</PROTOCOL>" + (f"<RANGE>{span}</RANGE>" if span else "")
        + f"<NETWORK>{block}</NETWORK></SECURITY_GROUP_RULE>" for kind, proto, span, block in rules)
    xml = (f"<VM><ID>{vm_id}</ID><TEMPLATE><SECURITY_GROUPS>9</SECURITY_GROUPS>{vectors}"
           f"<NIC><NIC_ID>0</NIC_ID><BRIDGE>{BRIDGE}</BRIDGE><MAC>{mac}</MAC><IP>{ip}</IP>"
           f"<NETWORK_ID>0</NETWORK_ID><VLAN>YES</VLAN><VLAN_ID>{VLAN}</VLAN_ID></NIC>"
           "</TEMPLATE></VM>")
    return base64.b64encode(xml.encode()).decode()


def test_outbound_rules_on_a_stand_in_vm(cloud: Cloud) -> None:
    vm_id, mac, ip = STANDIN
    port = f"one-{vm_id}-0"  # the tap's name for NIC 0 of the VM
    host = cloud.lab.host("h1")

    def act(action: str, doc: str) -> None:
        host.ovs("python3", str(DRIVER / action), doc, f"one-{vm_id}")

    def ping(address: str) -> bool:
        return cloud.at_endpoint(port, "ping", "-c", "1", "-W", "3", address).returncode == 0

    rules = [("outbound", "ICMP", "", f"{ALLOWED}/32"), ("outbound", "TCP", "80:80", "0.0.0.0/0")]
    cloud.ovs_endpoint(BRIDGE, port, f"{ip}/16", mac=mac)  # pre tags it and marks it ours
    act("pre", standin_doc(*rules))
    act("post", standin_doc(*rules))
    flows = cloud.ovs_flows(BRIDGE, mark(vm_id))
    assert any("table=1," in line and f"nw_dst={ALLOWED} " in line for line in flows), flows

    assert ping(ALLOWED)  # allowed out; the answer is established, so it comes in
    before = packets(cloud, vm_id, 1, "actions=drop")
    assert not ping(OTHER)  # no outbound rule for it
    assert packets(cloud, vm_id, 1, "actions=drop") > before
    assert tcp(cloud, port, OTHER, 80) == 7  # reached: the endpoint refuses
    assert tcp(cloud, port, OTHER, 81) == 28  # dropped on the way out
    assert not cloud.ping("ep-a", ip)  # no inbound rule

    rules += [("inbound", "ICMP", "", f"{ALLOWED}/32"), ("outbound", "ALL", "", f"{OTHER}/32")]
    act("update_sg", standin_doc(*rules))
    assert ping(OTHER)
    assert tcp(cloud, port, OTHER, 81) == 7
    assert cloud.ping("ep-a", ip) and not cloud.ping("ep-b", ip)
    act("clean", standin_doc(*rules))
    assert cloud.ovs_flows(BRIDGE, mark(vm_id)) == []
    assert port not in host.ovs("ovs-vsctl", "list-ports", BRIDGE).split()


def test_ipv6_rules_on_a_stand_in_vm(cloud: Cloud, tmp_path: Path) -> None:
    vm_id, mac, ip = STANDIN6
    port, a6, b6, mine = f"one-{vm_id}-0", V6["ep-a"], V6["ep-b"], V6[vm_id]
    host = cloud.lab.host("h1")

    def act(action: str, *rules: tuple[str, str, str, str]) -> None:
        host.ovs("python3", str(DRIVER / action), standin_doc(*rules, who=STANDIN6),
                 f"one-{vm_id}")

    def web(name: str, address: str) -> str:
        url = f"http://[{address}]:8080/" if ":" in address else f"http://{address}:8080/"
        return cloud.at_endpoint(name, "curl", "-s", "-g", "--max-time", "3", url
                                 ).stdout.strip()

    def ping6(name: str, address: str) -> bool:
        return cloud.at_endpoint(name, "ping", "-6", "-c", "1", "-W", "2", address
                                 ).returncode == 0

    def resolved(name: str, address: str) -> bool:
        """Whether `name` found `address`'s link-layer address (neighbour discovery)."""
        return "lladdr" in cloud.at_endpoint(name, "ip", "-6", "neigh", "show", address).stdout

    def forget() -> None:
        for name in (port, "ep-a", "ep-b"):
            cloud.at_endpoint(name, "ip", "-6", "neigh", "flush", "dev", "eth0")

    stand_in = cloud.ovs_endpoint(BRIDGE, port, f"{ip}/16", mac=mac)
    for name, address in ((port, mine), ("ep-a", a6), ("ep-b", b6)):
        run("ip", "-n", f"{cloud.lab.prefix}-{name}", "addr", "replace", f"{address}/64",
            "dev", "eth0", "nodad")
    (tmp_path / "index.html").write_text("hello from the stand-in\n")
    server = subprocess.Popen(  # noqa: S603
        ["ip", "netns", "exec", stand_in, sys.executable, "-m", "http.server", "--bind", "::",
         "--directory", str(tmp_path), "8080"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        web6 = ("inbound", "TCP", "8080:8080", f"{a6}/128")
        web4 = ("inbound", "TCP", "8080:8080", f"{OTHER}/32")
        act("pre", web6, web4)  # tagged: the endpoints' VLAN
        wait_until("the stand-in's web server", lambda: "hello" in web("ep-b", mine), 20)
        assert ping6("ep-a", mine)  # unfiltered before post

        act("post", web6, web4)
        flows = cloud.ovs_flows(BRIDGE, mark(vm_id))
        assert any(all(part in line for part in ("tcp6", f"ipv6_src={a6},", "tp_dst=8080"))
                   for line in flows), flows
        forget()
        assert "hello" in web("ep-a", mine)
        before = packets(cloud, vm_id, 2, "ipv6,", "actions=drop")
        assert web("ep-b", mine) == ""  # tcp/8080 over IPv6, but not from that block
        assert packets(cloud, vm_id, 2, "ipv6,", "actions=drop") > before
        assert "hello" in web("ep-b", ip) and web("ep-a", ip) == ""  # IPv4: its own rules
        # neighbour discovery both ways: the stand-in's advertisements reached ep-b, which
        # was refused, and ep-b's reached the stand-in, whose echo then went nowhere
        assert resolved("ep-b", mine) and resolved("ep-a", mine)
        assert not ping6(port, b6)  # no outbound IPv6 rule
        assert resolved(port, b6)
        assert packets(cloud, vm_id, 1, "icmp6", "icmp_type=136") > 0
        assert packets(cloud, vm_id, 2, "icmp6", "icmp_type=136") > 0
        assert not ping6("ep-a", mine) and not ping6("ep-b", mine)  # no ICMPV6 rule

        act("update_sg", web6, web4, ("inbound", "ICMPV6", "", f"{b6}/128"))
        assert ping6("ep-b", mine) and not ping6("ep-a", mine)
        assert "hello" in web("ep-a", mine) and web("ep-b", mine) == ""  # the rest as it was
        act("clean", web6, web4)
        assert cloud.ovs_flows(BRIDGE, mark(vm_id)) == []
    finally:
        server.terminate()
        server.wait(10)
