"""EC2 security groups enforced by the `fw` network driver on a lab host: groups made with
boto3 through Nubo's EC2 front door, real qemu guests in them, reached with curl and ping
from veth endpoints on the guests' bridge (a guest adds nothing on the calling side: the
filtering happens on the bridge).

A guest in `web` (tcp/80 from one endpoint's address, ICMP from anywhere) answers that
endpoint's curl and everyone's ping, and nobody else's curl; a guest in a group without
ingress rules answers nothing. Authorizing and revoking rules while the guests run takes
effect without restarting them (update_sg). The chains exist while the guests run and go
with them. Read with curl, ping and `iptables -S` inside the lab's namespaces."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.apis.ec2.test_boto3 import client, keys
from tests.e2e.labcloud import Cloud, qemu_cloud, wait_until
from tests.guest import guest_os

pytestmark = pytest.mark.slow
BOOT = 120.0
BRIDGE = "br-sg"
ALLOWED, OTHER = "10.221.0.99", "10.221.0.98"  # the endpoints
GUESTS = {"opened": "10.221.1.2", "closed": "10.221.2.2"}


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    with qemu_cloud(tmp_path_factory, "sg", 1, vnm="fw") as made:
        made.endpoint(BRIDGE, "ep-a", f"{ALLOWED}/16")
        made.endpoint(BRIDGE, "ep-b", f"{OTHER}/16")
        yield made


def ec2(cloud: Cloud) -> Any:
    return client(cloud.nubo, keys(cloud.nubo, 0))


def core_id(group_id: str) -> int:
    return int(group_id.removeprefix("sg-"), 16)


def chains(cloud: Cloud) -> list[str]:
    return [line for line in cloud.in_host("iptables", "-S").splitlines() if "one-" in line]


def test_ingress_rules_allow_and_deny_as_configured(cloud: Cloud,
                                                   tmp_path_factory: pytest.TempPathFactory
                                                   ) -> None:
    client = ec2(cloud)
    web = client.create_security_group(GroupName="web", Description="web")["GroupId"]
    closed = client.create_security_group(GroupName="shut", Description="none")["GroupId"]
    client.authorize_security_group_ingress(GroupId=web, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 80, "ToPort": 80,
         "IpRanges": [{"CidrIp": f"{ALLOWED}/32"}]},
        {"IpProtocol": "icmp", "FromPort": -1, "ToPort": -1,
         "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
    os_vector = guest_os(tmp_path_factory.mktemp("sg-guest"))
    guests = {}
    for name, group in (("opened", web), ("closed", closed)):
        guests[name] = cloud.guest_on(name, name, os_vector, bridge=BRIDGE, ip=GUESTS[name],
                                      mask="255.255.0.0",
                                      extra=f'SECURITY_GROUPS = "{core_id(group)}"\n')
    for name, vm_id in guests.items():
        wait_until(f"{name} up", lambda v=vm_id: "NUBO-NET-UP" in cloud.console(v), BOOT)
    found = chains(cloud)
    for vm_id in guests.values():
        assert f"-N one-{vm_id}-0-i" in found and f"-N one-{vm_id}-0-o" in found, found
    opened, shut = GUESTS["opened"], GUESTS["closed"]

    assert "hello from opened" in cloud.web("ep-a", opened)  # tcp/80 from its block
    assert cloud.web("ep-b", opened) == ""  # tcp/80, but not from that block
    assert cloud.ping("ep-a", opened) and cloud.ping("ep-b", opened)  # ICMP from anywhere
    assert cloud.web("ep-a", shut) == "" and not cloud.ping("ep-a", shut)  # no rules: nothing

    # rules changed while the guests run reach them without a restart
    client.authorize_security_group_ingress(GroupId=closed, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 80, "ToPort": 80,
         "IpRanges": [{"CidrIp": "10.221.0.0/24"}]}])
    wait_until("tcp/80 opened on the running guest",
               lambda: "hello from closed" in cloud.web("ep-b", shut), 60)
    assert not cloud.ping("ep-b", shut)  # only what the new rule allows
    client.revoke_security_group_ingress(GroupId=web, IpPermissions=[
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
    assert chains(cloud) == []


def test_a_vm_cannot_use_another_users_group(cloud: Cloud) -> None:
    """SECURITY_GROUPS names groups the creator owns: another user's is refused."""
    group = ec2(cloud).create_security_group(GroupName="admins", Description="x")["GroupId"]
    cloud.nubo.cli("user", "create", "eve", "eve-secret")
    eve = cloud.nubo.rpc()
    ok, error, _ = eve.one.vm.allocate("eve:eve-secret", 'CPU = "0.1"\nMEMORY = "64"\n'
                                       f'SECURITY_GROUPS = "{core_id(group)}"\n', False)
    assert not ok and "security group" in error, error
    ok, error, _ = eve.one.vm.allocate("eve:eve-secret", 'CPU = "0.1"\nMEMORY = "64"\n'
                                       'SECURITY_GROUPS = "web; rm"\n', False)
    assert not ok and "SECURITY_GROUPS" in error, error
