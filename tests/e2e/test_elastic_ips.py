"""Elastic IPs reach their instance: 1:1 NAT made by the `fw` network driver on a lab host
(drivers/remotes/lib/nat_rules.py), driven through boto3 on Nubo's EC2 front door.

Lab host h1 has a private bridge carrying its network's GATEWAY (10.222.0.1), and an
uplink: a veth to an "outside" namespace (198.51.100.9) that routes the public block
203.0.113.0/24 via the host (198.51.100.1). A real qemu guest sits on the private
network in a security group that allows tcp/80 only. Allocating and associating an
address makes the outside reach the guest's web page at the public address; ICMP, not in
the group, stays dropped there until a rule allows it; disassociating takes the NAT and
the host's address away, associating again brings them back, terminating leaves nothing.

The test guest cannot start a connection itself, so SNAT is proved twice over: by the
conntrack entry of the outside's connection (the reply leaves from the public address),
and by a veth stand-in for a VM that the driver's own `post` maps to a second address: it
pings the outside, which has no route back to the private block, so the answer can only
come through the SNAT rule. Everything is read inside the lab's namespaces (curl, ping,
`iptables -S`, `ip addr`, /proc/net/nf_conntrack), never from Nubo."""

from __future__ import annotations

import base64
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.labcloud import Cloud, qemu_cloud, run, wait_until
from tests.e2e.test_secgroups import core_id, ec2
from tests.guest import guest_os

pytestmark = pytest.mark.slow
BOOT = 120.0
BRIDGE, GATEWAY, GUEST = "br-eip", "10.222.0.1", "10.222.0.2"
UPLINK, HOST_UP, OUTSIDE = "up-eip", "198.51.100.1", "198.51.100.9"
PUBLIC = ("203.0.113.5", "203.0.113.6")
STAND_IN, STAND_IN_IP, STAND_IN_VM = "one-900-0", "10.222.0.50", "900"
FW = Path(__file__).resolve().parents[2] / "drivers" / "remotes" / "vnm" / "fw"


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    conf = 'EC2_PUBLIC_NETWORK = "public"\n'
    with qemu_cloud(tmp_path_factory, "eip", 1, vnm="fw", extra=lambda lab: conf) as made:
        host = made.lab.host("h1").netns
        # the private bridge carries the network's GATEWAY: the operator's part
        run("ip", "-n", host, "link", "add", BRIDGE, "type", "bridge")
        run("ip", "-n", host, "addr", "add", f"{GATEWAY}/24", "dev", BRIDGE)
        run("ip", "-n", host, "link", "set", BRIDGE, "up")
        # the uplink: the outside routes the public block via the host
        outside = made.veth("outside", f"{OUTSIDE}/24", port=UPLINK)
        run("ip", "-n", host, "addr", "add", f"{HOST_UP}/24", "dev", UPLINK)
        run("ip", "-n", outside, "route", "add", "203.0.113.0/24", "via", HOST_UP)
        made.endpoint(BRIDGE, STAND_IN, f"{STAND_IN_IP}/24")
        run("ip", "-n", f"{made.lab.prefix}-{STAND_IN}", "route", "add", "default", "via",
            GATEWAY)
        yield made


def nat(cloud: Cloud) -> list[str]:
    return [line for line in cloud.in_host("iptables", "-t", "nat", "-S").splitlines()
            if "one-" in line]


def routed(cloud: Cloud) -> list[str]:
    return [line for line in cloud.in_host("iptables", "-S", "FORWARD").splitlines()
            if "! --physdev-is-bridged" in line]


def on_lo(cloud: Cloud) -> str:
    return cloud.in_host("ip", "-4", "-o", "addr", "show", "dev", "lo")


def conntrack(cloud: Cloud) -> str:
    return cloud.in_host("cat", "/proc/net/nf_conntrack")


def test_an_elastic_ip_reaches_its_instance(cloud: Cloud,
                                            tmp_path_factory: pytest.TempPathFactory) -> None:
    client = ec2(cloud)
    cloud.call("one.vn.allocate", 'NAME = "public"\nTYPE = FIXED\nBRIDGE = "br-public"\n'
               + "".join(f'LEASES = [ IP = "{ip}" ]\n' for ip in PUBLIC), -1)
    net = cloud.call("one.vn.allocate", f'NAME = "private"\nTYPE = FIXED\nBRIDGE = "{BRIDGE}"\n'
                     f'GATEWAY = "{GATEWAY}"\nNETWORK_MASK = "255.255.255.0"\n'
                     f'LEASES = [ IP = "{GUEST}" ]\n', -1)
    web = client.create_security_group(GroupName="web", Description="web")["GroupId"]
    client.authorize_security_group_ingress(GroupId=web, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 80, "ToPort": 80,
         "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
    vm_id = int(cloud.call(
        "one.vm.allocate", 'NAME = "guest"\nCPU = "0.1"\nMEMORY = "96"\n'
        + guest_os(tmp_path_factory.mktemp("eip-guest")) + f'NIC = [ NETWORK_ID = "{net}" ]\n'
        'CONTEXT = [ HOSTNAME = "$NAME", ETH0_IP = "$NIC[IP]", ETH0_MASK = "255.255.255.0", '
        f'ETH0_GATEWAY = "{GATEWAY}" ]\nSECURITY_GROUPS = "{core_id(web)}"\n'))
    instance = f"i-{vm_id:08x}"
    wait_until("the guest up", lambda: "NUBO-NET-UP" in cloud.console(vm_id), BOOT)
    public = client.allocate_address(Domain="vpc")
    ip = public["PublicIp"]
    assert ip in PUBLIC
    assert cloud.web("outside", ip) == ""  # not associated: nothing there

    association = client.associate_address(InstanceId=instance,
                                           AllocationId=public["AllocationId"])
    wait_until("the guest at its public address",
               lambda: "hello from guest" in cloud.web("outside", ip), 60)
    assert f"-A one-{vm_id}-0-dnat -d {ip}/32 -j DNAT --to-destination {GUEST}" in nat(cloud)
    assert (f"-A one-{vm_id}-0-snat -s {GUEST}/32 ! -o {BRIDGE} -j SNAT --to-source {ip}"
            in nat(cloud))
    assert f"inet {ip}/32" in on_lo(cloud)
    assert cloud.in_host("sysctl", "-n", "net.ipv4.ip_forward").strip() == "1"
    # the outside's connection, DNATed on the way in, leaves the guest's side from the
    # public address on the way back
    assert any(f"src={OUTSIDE} dst={ip} " in line and f"src={GUEST} dst={OUTSIDE} " in line
               for line in conntrack(cloud).splitlines()), conntrack(cloud)

    # the group applies through the public address: ICMP only once a rule allows it
    assert not cloud.ping("outside", ip)
    icmp = [{"IpProtocol": "icmp", "FromPort": -1, "ToPort": -1,
             "IpRanges": [{"CidrIp": f"{OUTSIDE}/32"}]}]
    client.authorize_security_group_ingress(GroupId=web, IpPermissions=icmp)
    wait_until("ICMP allowed through the public address", lambda: cloud.ping("outside", ip), 60)
    client.revoke_security_group_ingress(GroupId=web, IpPermissions=icmp)
    wait_until("ICMP dropped again", lambda: not cloud.ping("outside", ip), 60)
    assert len(routed(cloud)) == 2, routed(cloud)  # the group chains' routed jumps

    client.disassociate_address(AssociationId=association["AssociationId"])
    wait_until("the public address gone", lambda: cloud.web("outside", ip) == "", 60)
    wait_until("the NAT gone", lambda: nat(cloud) == [], 30)  # update_sg may still run
    assert f"inet {ip}/32" not in on_lo(cloud)
    assert any(f"-N one-{vm_id}-0-i" in line for line in cloud.in_host("iptables", "-S")
               .splitlines())  # the VM keeps its group...
    assert len(routed(cloud)) == 2, routed(cloud)  # ...for routed traffic too
    # routed to its private address, without NAT: the group still decides
    private = ["ip", "-n", f"{cloud.lab.prefix}-outside", "route"]
    run(*private, "add", "10.222.0.0/24", "via", HOST_UP)
    try:
        assert "hello from guest" in cloud.web("outside", GUEST)
        assert not cloud.ping("outside", GUEST)
    finally:
        run(*private, "del", "10.222.0.0/24", "via", HOST_UP)

    client.associate_address(InstanceId=instance, AllocationId=public["AllocationId"])
    wait_until("the guest at its public address again",
               lambda: "hello from guest" in cloud.web("outside", ip), 60)
    assert f"inet {ip}/32" in on_lo(cloud)

    client.terminate_instances(InstanceIds=[instance])
    cloud.nubo.wait_vm(vm_id, "DONE", timeout=BOOT)
    assert nat(cloud) == [] and routed(cloud) == []
    assert [line for line in cloud.in_host("iptables", "-S").splitlines() if "one-" in line] == []
    assert f"inet {ip}/32" not in on_lo(cloud)
    assert cloud.web("outside", ip) == ""


def driver(cloud: Cloud, action: str, public: str) -> None:
    """The fw driver's `action` run by hand on h1 for VM 900, whose NIC 0 is the stand-in
    (its tap `one-900-0` is the stand-in's veth), mapped to `public` ("" for none)."""
    nic = (f"<NIC><NIC_ID>0</NIC_ID><IP>{STAND_IN_IP}</IP><BRIDGE>{BRIDGE}</BRIDGE>"
           f"<NETWORK_ID>1</NETWORK_ID>" + (f"<PUBLIC_IP>{public}</PUBLIC_IP>" if public else "")
           + "</NIC>")
    doc = base64.b64encode(f"<VM><ID>{STAND_IN_VM}</ID><TEMPLATE>{nic}</TEMPLATE></VM>".encode())
    run("ip", "netns", "exec", cloud.lab.host("h1").netns, sys.executable, str(FW / action),
        doc.decode(), f"one-{STAND_IN_VM}")


def test_what_a_vm_starts_leaves_from_its_public_address(cloud: Cloud) -> None:
    """SNAT with real traffic: the outside has no route to the private block, so the
    stand-in's ping is answered only through its public address."""
    public = PUBLIC[1]
    assert cloud.at_endpoint(STAND_IN, "ping", "-c", "1", "-W", "2", OUTSIDE).returncode != 0
    driver(cloud, "post", public)
    try:
        assert cloud.at_endpoint(STAND_IN, "ping", "-c", "1", "-W", "3",
                                 OUTSIDE).returncode == 0
        assert any(f"src={STAND_IN_IP} dst={OUTSIDE} " in line and f"dst={public} " in line
                   for line in conntrack(cloud).splitlines()), conntrack(cloud)
        driver(cloud, "update_sg", "")  # disassociated: the VM's mapping goes
        assert not any(f"one-{STAND_IN_VM}-" in line for line in nat(cloud))
        assert f"inet {public}/32" not in on_lo(cloud)
        assert cloud.at_endpoint(STAND_IN, "ping", "-c", "1", "-W", "2",
                                 OUTSIDE).returncode != 0
    finally:
        driver(cloud, "clean", "")
