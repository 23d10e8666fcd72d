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
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.apis.ec2.test_boto3 import client, keys
from tests.e2e.labcloud import Cloud, qemu_cloud, wait_until
from tests.guest import guest_os

pytestmark = pytest.mark.slow
BOOT = 120.0
BRIDGE = "ovs-sg"
VLAN = 100
ALLOWED, OTHER = "10.222.0.99", "10.222.0.98"  # the endpoints
GUESTS = {"opened": "10.222.1.2", "closed": "10.222.2.2"}
NETWORK = f'VLAN = "YES"\nVLAN_ID = "{VLAN}"\n'
STANDIN = ("901", "02:00:0a:de:03:05", "10.222.3.5")  # id, MAC, IP of the stand-in VM
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


def standin_doc(*rules: tuple[str, str, str, str]) -> str:
    """The stand-in VM's document: in a group, with these (RULE_TYPE, PROTOCOL, RANGE,
    NETWORK) rules."""
    vm_id, mac, ip = STANDIN
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
