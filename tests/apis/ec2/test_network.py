"""Security groups and Elastic IPs through boto3, against a live daemon with a public
network and a default subnet (tests/apis/ec2/test_subnets.py has more of both)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from botocore.client import BaseClient
from botocore.exceptions import ClientError

from tests.apis.ec2.test_boto3 import client, keys
from tests.live import FAST_CONF, LiveNubo, call, wait_until

pytestmark = pytest.mark.slow
FAST = {"Delay": 1, "MaxAttempts": 5}
NET_CONF = FAST_CONF + 'EC2_PUBLIC_NETWORK = "public"\nEC2_DEFAULT_NETWORK = "lan"\n'
# the admin's networks: the Elastic IPs' (FIXED, three addresses) and a published one
# every user may launch into, the default subnet
PUBLIC = ('NAME = public\nTYPE = FIXED\nLEASES = [ IP = 192.0.2.10 ]\n'
          'LEASES = [ IP = 192.0.2.11 ]\nLEASES = [ IP = 192.0.2.12 ]\n')
LAN = "NAME = lan\nNETWORK_ADDRESS = 10.20.0.0/24\nPUBLIC = YES\n"


def networked(factory: pytest.TempPathFactory) -> Iterator[LiveNubo]:
    """A daemon with the networks above (NET_CONF)."""
    live = LiveNubo(factory.mktemp("nubo"), conf=NET_CONF)
    try:
        live.start()
        call(live, "one.vn.allocate", PUBLIC)
        call(live, "one.vn.allocate", LAN)
        yield live
    finally:
        live.stop()


@pytest.fixture(scope="module")
def nubo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveNubo]:
    yield from networked(tmp_path_factory)


@pytest.fixture(scope="module")
def ec2(nubo: LiveNubo) -> BaseClient:
    return client(nubo, keys(nubo, 0))


@pytest.fixture(scope="module")
def bob(nubo: LiveNubo) -> Iterator[BaseClient]:
    ok, uid, _ = nubo.rpc().one.user.allocate(nubo.session, "bob", "bob-pw", "core")
    assert ok, uid
    yield client(nubo, keys(nubo, uid))


@pytest.fixture(scope="module")
def ami(ec2: BaseClient) -> str:
    return str(ec2.register_image(Name="debian", ImageLocation="/var/tmp/debian.img")["ImageId"])


def fails(code: str, call: Callable[..., Any], **kwargs: Any) -> str:
    """Call and expect a ClientError with this code; returns the message."""
    with pytest.raises(ClientError) as err:
        call(**kwargs)
    assert err.value.response["Error"]["Code"] == code, err.value.response["Error"]
    return str(err.value.response["Error"]["Message"])


def group(ec2: BaseClient, group_id: str) -> dict[str, Any]:
    found = ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"]
    assert len(found) == 1
    return dict(found[0])


def ids_of(response: dict[str, Any]) -> list[str]:
    return [g["GroupId"] for g in response["SecurityGroups"]]


def test_create_describe_delete(ec2: BaseClient) -> None:
    fails("DryRunOperation", ec2.create_security_group, GroupName="web", Description="w",
          DryRun=True)
    made = ec2.create_security_group(
        GroupName="web", Description="web servers",
        TagSpecifications=[{"ResourceType": "security-group",
                            "Tags": [{"Key": "env", "Value": "prod"}]}])
    web = made["GroupId"]
    assert web.startswith("sg-") and made["Tags"] == [{"Key": "env", "Value": "prod"}]
    ec2.get_waiter("security_group_exists").wait(GroupIds=[web], WaiterConfig=FAST)
    row = group(ec2, web)
    assert (row["GroupName"], row["Description"], row["VpcId"], row["OwnerId"]) == \
        ("web", "web servers", "vpc-00000001", "000000000000")
    assert row["IpPermissions"] == []
    assert row["IpPermissionsEgress"] == [{"IpProtocol": "-1", "IpRanges": [
        {"CidrIp": "0.0.0.0/0"}], "Ipv6Ranges": [], "PrefixListIds": [], "UserIdGroupPairs": []}]
    everything = ec2.describe_security_groups()["SecurityGroups"]
    default = next(g for g in everything if g["GroupName"] == "default")
    assert default["IpPermissions"][0]["UserIdGroupPairs"][0]["GroupId"] == default["GroupId"]
    assert ids_of(ec2.describe_security_groups(GroupNames=["web"])) == [web]
    for name, values in (("group-name", ["w*"]), ("tag:env", ["prod"]), ("tag-key", ["env"]),
                         ("description", ["web servers"]), ("vpc-id", ["vpc-00000001"]),
                         ("owner-id", ["000000000000"]), ("group-id", [web]),
                         ("egress.ip-permission.cidr", ["0.0.0.0/0"])):
        found = ec2.describe_security_groups(Filters=[{"Name": name, "Values": values}])
        assert web in ids_of(found), name
    assert ids_of(ec2.describe_security_groups(
        Filters=[{"Name": "group-name", "Values": ["nope"]}])) == []
    tagged = ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [web]}])["Tags"]
    assert tagged == [{"ResourceId": web, "ResourceType": "security-group", "Key": "env",
                       "Value": "prod"}]
    fails("InvalidGroup.Duplicate", ec2.create_security_group, GroupName="WEB", Description="")
    fails("InvalidParameterValue", ec2.create_security_group, GroupName="sg-x", Description="")
    fails("InvalidVpcID.NotFound", ec2.create_security_group, GroupName="x", Description="",
          VpcId="vpc-12345678")
    fails("InvalidParameterValue", ec2.describe_security_groups,
          Filters=[{"Name": "no-such-filter", "Values": ["x"]}])
    fails("CannotDelete", ec2.delete_security_group, GroupName="default")
    fails("DryRunOperation", ec2.delete_security_group, GroupId=web, DryRun=True)
    assert ec2.delete_security_group(GroupId=web)["GroupId"] == web
    fails("InvalidGroup.NotFound", ec2.describe_security_groups, GroupIds=[web])
    fails("InvalidGroup.NotFound", ec2.describe_security_groups, GroupNames=["web"])
    fails("InvalidGroup.NotFound", ec2.delete_security_group, GroupId=web)
    fails("InvalidGroupId.Malformed", ec2.describe_security_groups, GroupIds=["web"])
    fails("DryRunOperation", ec2.describe_security_groups, DryRun=True)
    fails("DryRunOperation", ec2.describe_addresses, DryRun=True)
    assert ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [web]}])["Tags"] == []


def test_pagination(ec2: BaseClient) -> None:
    made = [ec2.create_security_group(GroupName=f"page-{n}", Description="")["GroupId"]
            for n in range(7)]
    pages = list(ec2.get_paginator("describe_security_groups").paginate(
        Filters=[{"Name": "group-name", "Values": ["page-*"]}],
        PaginationConfig={"PageSize": 5}))
    assert [len(p["SecurityGroups"]) for p in pages] == [5, 2]
    assert [g for p in pages for g in ids_of(p)] == made
    for group_id in made:
        ec2.delete_security_group(GroupId=group_id)


def test_ingress_and_egress_rules(ec2: BaseClient) -> None:
    app = ec2.create_security_group(GroupName="app", Description="")["GroupId"]
    peer = ec2.create_security_group(GroupName="peer", Description="")["GroupId"]
    permissions = [
        {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22,
         "IpRanges": [{"CidrIp": "10.0.0.0/8", "Description": "ssh"}],
         "Ipv6Ranges": [{"CidrIpv6": "2001:db8::/32"}]},
        {"IpProtocol": "tcp", "FromPort": 5432, "ToPort": 5432,
         "UserIdGroupPairs": [{"GroupId": peer}]}]
    fails("DryRunOperation", ec2.authorize_security_group_ingress, GroupId=app,
          IpPermissions=permissions, DryRun=True)
    added = ec2.authorize_security_group_ingress(GroupId=app, IpPermissions=permissions)
    rules = added["SecurityGroupRules"]
    assert added["Return"] is True and len(rules) == 3
    assert {r.get("CidrIpv4") or r.get("CidrIpv6") or r["ReferencedGroupInfo"]["GroupId"]
            for r in rules} == {"10.0.0.0/8", "2001:db8::/32", peer}
    assert all(r["SecurityGroupRuleId"].startswith("sgr-") and not r["IsEgress"] for r in rules)
    # the old flat form, by group name
    ec2.authorize_security_group_ingress(GroupName="app", IpProtocol="udp", FromPort=53,
                                         ToPort=53, CidrIp="0.0.0.0/0")
    row = group(ec2, app)
    by_port = {p.get("FromPort"): p for p in row["IpPermissions"]}
    assert by_port[22]["IpRanges"] == [{"CidrIp": "10.0.0.0/8", "Description": "ssh"}]
    assert by_port[22]["Ipv6Ranges"] == [{"CidrIpv6": "2001:db8::/32"}]
    assert by_port[5432]["UserIdGroupPairs"] == [
        {"GroupId": peer, "GroupName": "peer", "UserId": "000000000000"}]
    assert by_port[53]["IpProtocol"] == "udp"
    for name, value in (("ip-permission.from-port", "5432"), ("ip-permission.group-id", peer),
                        ("ip-permission.cidr", "10.0.0.0/8"), ("ip-permission.protocol", "udp"),
                        ("ip-permission.ipv6-cidr", "2001:db8::/32")):
        found = ec2.describe_security_groups(Filters=[{"Name": name, "Values": [value]}])
        assert ids_of(found) == [app], name
    fails("InvalidPermission.Duplicate", ec2.authorize_security_group_ingress, GroupId=app,
          IpPermissions=[{"IpProtocol": "6", "FromPort": 22, "ToPort": 22,
                          "IpRanges": [{"CidrIp": "10.0.0.0/8"}]}])
    fails("InvalidGroup.NotFound", ec2.authorize_security_group_ingress, GroupId=app,
          IpPermissions=[{"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": "sg-7fffffff"}]}])
    fails("InvalidParameterValue", ec2.authorize_security_group_ingress, GroupId=app,
          IpProtocol="tcp", FromPort=1, ToPort=2, CidrIp="10.0.0.1/8")
    fails("InvalidParameterValue", ec2.authorize_security_group_ingress, GroupId=app,
          IpPermissions=[{"IpProtocol": "tcp", "IpRanges": [{"CidrIp": "1.2.3.4/32"}]}])
    fails("DependencyViolation", ec2.delete_security_group, GroupId=peer)  # app names it
    fails("InvalidPermission.NotFound", ec2.revoke_security_group_ingress, GroupId=app,
          IpPermissions=[{"IpProtocol": "tcp", "FromPort": 23, "ToPort": 23,
                          "IpRanges": [{"CidrIp": "10.0.0.0/8"}]}])
    fails("DryRunOperation", ec2.revoke_security_group_ingress, GroupId=app,
          IpProtocol="udp", FromPort=53, ToPort=53, CidrIp="0.0.0.0/0", DryRun=True)
    gone = ec2.revoke_security_group_ingress(GroupId=app, IpProtocol="udp", FromPort=53,
                                             ToPort=53, CidrIp="0.0.0.0/0")
    assert [r["CidrIpv4"] for r in gone["RevokedSecurityGroupRules"]] == ["0.0.0.0/0"]
    by_group = next(r for r in rules if "ReferencedGroupInfo" in r)["SecurityGroupRuleId"]
    gone = ec2.revoke_security_group_ingress(GroupId=app, SecurityGroupRuleIds=[by_group])
    assert gone["RevokedSecurityGroupRules"][0]["ReferencedGroupId"] == peer
    fails("InvalidSecurityGroupRuleId.NotFound", ec2.revoke_security_group_ingress,
          GroupId=app, SecurityGroupRuleIds=[by_group])
    assert {p["FromPort"] for p in group(ec2, app)["IpPermissions"]} == {22}
    # egress
    fails("DryRunOperation", ec2.authorize_security_group_egress, GroupId=app,
          IpPermissions=[{"IpProtocol": "icmp", "FromPort": -1, "ToPort": -1,
                          "IpRanges": [{"CidrIp": "192.168.0.0/16"}]}], DryRun=True)
    out = ec2.authorize_security_group_egress(
        GroupId=app, IpPermissions=[{"IpProtocol": "icmp", "FromPort": 8, "ToPort": -1,
                                     "IpRanges": [{"CidrIp": "192.168.0.0/16"}]}])
    assert out["SecurityGroupRules"][0]["IsEgress"] is True
    fails("InvalidPermission.Duplicate", ec2.authorize_security_group_egress, GroupId=app,
          IpPermissions=[{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
    fails("DryRunOperation", ec2.revoke_security_group_egress, GroupId=app, DryRun=True,
          IpPermissions=[{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
    ec2.revoke_security_group_egress(
        GroupId=app, IpPermissions=[{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
    egress = group(ec2, app)["IpPermissionsEgress"]
    assert [(p["IpProtocol"], p["FromPort"], p["ToPort"]) for p in egress] == [("icmp", 8, -1)]
    found = ec2.describe_security_groups(
        Filters=[{"Name": "egress.ip-permission.protocol", "Values": ["icmp"]}])
    assert ids_of(found) == [app]
    ec2.delete_security_group(GroupId=app)
    ec2.delete_security_group(GroupId=peer)


def test_instances_carry_their_groups(ec2: BaseClient, ami: str) -> None:
    web = ec2.create_security_group(GroupName="front", Description="")["GroupId"]
    fails("InvalidGroup.NotFound", ec2.run_instances, ImageId=ami, MinCount=1, MaxCount=1,
          SecurityGroups=["no-such-group"])
    fails("InvalidGroup.NotFound", ec2.run_instances, ImageId=ami, MinCount=1, MaxCount=1,
          SecurityGroupIds=["sg-7fffffff"])
    run = ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1, SecurityGroups=["front"])
    vm = run["Instances"][0]["InstanceId"]
    expected = [{"GroupId": web, "GroupName": "front"}]
    assert run["Instances"][0]["SecurityGroups"] == expected and run["Groups"] == expected
    plain = ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1)["Instances"][0]
    assert [g["GroupName"] for g in plain["SecurityGroups"]] == ["default"]
    found = ec2.describe_instances(Filters=[{"Name": "instance.group-id", "Values": [web]}])
    assert [i["InstanceId"] for r in found["Reservations"] for i in r["Instances"]] == [vm]
    by_id = ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1, SecurityGroupIds=[web])
    other = by_id["Instances"][0]["InstanceId"]
    assert by_id["Instances"][0]["SecurityGroups"] == expected
    fails("DependencyViolation", ec2.delete_security_group, GroupId=web)
    ec2.terminate_instances(InstanceIds=[vm, other, plain["InstanceId"]])
    ec2.get_waiter("instance_terminated").wait(InstanceIds=[vm, other],
                                               WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    ec2.delete_security_group(GroupId=web)


def test_elastic_ips(ec2: BaseClient, ami: str) -> None:
    fails("DryRunOperation", ec2.allocate_address, Domain="vpc", DryRun=True)
    first = ec2.allocate_address(Domain="vpc")
    second = ec2.allocate_address(
        Domain="vpc", TagSpecifications=[{"ResourceType": "elastic-ip",
                                          "Tags": [{"Key": "role", "Value": "spare"}]}])
    assert first["AllocationId"].startswith("eipalloc-") and first["Domain"] == "vpc"
    assert first["PublicIp"] == "192.0.2.10"
    run = ec2.run_instances(ImageId=ami, MinCount=2, MaxCount=2)
    vm, vm2 = (i["InstanceId"] for i in run["Instances"])
    fails("DryRunOperation", ec2.associate_address, InstanceId=vm,
          AllocationId=first["AllocationId"], DryRun=True)
    assoc = ec2.associate_address(InstanceId=vm, AllocationId=first["AllocationId"])
    assert assoc["AssociationId"].startswith("eipassoc-")
    inst = ec2.describe_instances(InstanceIds=[vm])["Reservations"][0]["Instances"][0]
    assert inst["PublicIpAddress"] == first["PublicIp"]
    found = ec2.describe_instances(Filters=[{"Name": "ip-address",
                                             "Values": [first["PublicIp"]]}])
    assert [i["InstanceId"] for r in found["Reservations"] for i in r["Instances"]] == [vm]
    listed = ec2.describe_addresses(AllocationIds=[first["AllocationId"]])["Addresses"]
    assert (listed[0]["InstanceId"], listed[0]["AssociationId"]) == (vm, assoc["AssociationId"])
    fails("Resource.AlreadyAssociated", ec2.associate_address, InstanceId=vm2,
          AllocationId=first["AllocationId"], AllowReassociation=False)
    moved = ec2.associate_address(InstanceId=vm2, PublicIp=first["PublicIp"])
    assert moved["AssociationId"] != assoc["AssociationId"]
    fails("InvalidAssociationID.NotFound", ec2.disassociate_address,
          AssociationId=assoc["AssociationId"])  # the old association is gone
    fails("InvalidIPAddress.InUse", ec2.release_address, AllocationId=first["AllocationId"])
    tagged = ec2.describe_addresses(Filters=[{"Name": "tag:role", "Values": ["spare"]}])
    assert [a["PublicIp"] for a in tagged["Addresses"]] == [second["PublicIp"]]
    by_vm = ec2.describe_addresses(Filters=[{"Name": "instance-id", "Values": [vm2]}])
    assert [a["PublicIp"] for a in by_vm["Addresses"]] == [first["PublicIp"]]
    fails("DryRunOperation", ec2.disassociate_address, AssociationId=moved["AssociationId"],
          DryRun=True)
    ec2.disassociate_address(AssociationId=moved["AssociationId"])
    ec2.disassociate_address(PublicIp=first["PublicIp"])  # idempotent
    inst = ec2.describe_instances(InstanceIds=[vm2])["Reservations"][0]["Instances"][0]
    assert "PublicIpAddress" not in inst
    fails("DryRunOperation", ec2.release_address, AllocationId=first["AllocationId"],
          DryRun=True)
    ec2.release_address(AllocationId=first["AllocationId"])
    ec2.release_address(PublicIp=second["PublicIp"])
    fails("InvalidAllocationID.NotFound", ec2.describe_addresses,
          AllocationIds=[first["AllocationId"]])
    fails("InvalidAddress.NotFound", ec2.describe_addresses, PublicIps=[second["PublicIp"]])
    fails("InvalidAllocationID.NotFound", ec2.release_address,
          AllocationId=first["AllocationId"])
    fails("InvalidAllocationID.Malformed", ec2.release_address, AllocationId="eip-1")
    fails("InvalidParameterValue", ec2.allocate_address, Domain="vpc", Address="203.0.113.9")
    ec2.terminate_instances(InstanceIds=[vm, vm2])


def test_two_users(ec2: BaseClient, bob: BaseClient, ami: str) -> None:
    mine = ec2.create_security_group(GroupName="private", Description="")["GroupId"]
    address = ec2.allocate_address(Domain="vpc")
    vm = ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    assert mine not in ids_of(bob.describe_security_groups())
    assert [g["GroupName"] for g in bob.describe_security_groups()["SecurityGroups"]] == \
        ["default"]
    assert bob.describe_addresses()["Addresses"] == []
    fails("InvalidGroup.NotFound", bob.describe_security_groups, GroupIds=[mine])
    fails("InvalidGroup.NotFound", bob.describe_security_groups, GroupNames=["private"])
    fails("InvalidGroup.NotFound", bob.delete_security_group, GroupId=mine)
    fails("InvalidGroup.NotFound", bob.authorize_security_group_ingress, GroupId=mine,
          IpProtocol="tcp", FromPort=1, ToPort=1, CidrIp="0.0.0.0/0")
    fails("InvalidGroup.NotFound", bob.revoke_security_group_egress, GroupId=mine,
          IpPermissions=[{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
    bobs = bob.create_security_group(GroupName="private", Description="his own")["GroupId"]
    fails("InvalidGroup.NotFound", bob.authorize_security_group_ingress, GroupId=bobs,
          IpPermissions=[{"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": mine}]}])
    his_ami = bob.register_image(Name="bobs", ImageLocation="/var/tmp/bobs.img")["ImageId"]
    fails("InvalidGroup.NotFound", bob.run_instances, ImageId=his_ami, MinCount=1, MaxCount=1,
          SecurityGroupIds=[mine])
    fails("InvalidGroup.NotFound", bob.run_instances, ImageId=his_ami, MinCount=1, MaxCount=1,
          SecurityGroups=["missing"])
    fails("InvalidAllocationID.NotFound", bob.describe_addresses,
          AllocationIds=[address["AllocationId"]])
    fails("InvalidAddress.NotFound", bob.describe_addresses, PublicIps=[address["PublicIp"]])
    fails("InvalidAllocationID.NotFound", bob.associate_address, InstanceId=vm,
          AllocationId=address["AllocationId"])
    fails("InvalidAddress.NotFound", bob.disassociate_address, PublicIp=address["PublicIp"])
    fails("InvalidAllocationID.NotFound", bob.release_address,
          AllocationId=address["AllocationId"])
    assoc = ec2.associate_address(InstanceId=vm, AllocationId=address["AllocationId"])
    fails("InvalidAssociationID.NotFound", bob.disassociate_address,
          AssociationId=assoc["AssociationId"])
    his = bob.allocate_address(Domain="vpc")
    assert his["PublicIp"] != address["PublicIp"]
    fails("InvalidInstanceID.NotFound", bob.associate_address, InstanceId=vm,
          AllocationId=his["AllocationId"])
    bob.release_address(AllocationId=his["AllocationId"])
    bob.delete_security_group(GroupId=bobs)
    ec2.disassociate_address(AssociationId=assoc["AssociationId"])
    ec2.release_address(AllocationId=address["AllocationId"])
    ec2.terminate_instances(InstanceIds=[vm])
    ec2.get_waiter("instance_terminated").wait(InstanceIds=[vm],
                                               WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    ec2.delete_security_group(GroupId=mine)


def test_rule_changes_reach_running_instances(ec2: BaseClient, ami: str, nubo: LiveNubo) -> None:
    web = ec2.create_security_group(GroupName="live", Description="")["GroupId"]
    run = ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1, SecurityGroupIds=[web])
    vm = run["Instances"][0]["InstanceId"]
    ec2.get_waiter("instance_running").wait(InstanceIds=[vm],
                                            WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    ec2.authorize_security_group_ingress(GroupId=web, IpProtocol="tcp", FromPort=22,
                                         ToPort=22, CidrIp="10.0.0.0/8")
    queued = f"Queued driver work: update_sg (security group {int(web[3:], 16)})"
    wait_until("the refilter in the VM's log",
               lambda: queued in nubo.cli("vm", "log", str(int(vm[2:], 16))).stdout)
    ec2.terminate_instances(InstanceIds=[vm])
    ec2.get_waiter("instance_terminated").wait(InstanceIds=[vm],
                                               WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    ec2.delete_security_group(GroupId=web)
