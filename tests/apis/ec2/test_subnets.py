"""The default VPC's subnets (virtual networks), instances' network interfaces and Elastic
IPs as leases of the public network, through boto3 against a live daemon."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.client import BaseClient

from tests.apis.ec2.test_boto3 import client, keys
from tests.apis.ec2.test_network import fails, networked
from tests.live import LiveNubo, call, wait_until

pytestmark = pytest.mark.slow
RUNNING = {"Delay": 1, "MaxAttempts": 30}


@pytest.fixture(scope="module")
def nubo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveNubo]:
    yield from networked(tmp_path_factory)


@pytest.fixture(scope="module")
def ec2(nubo: LiveNubo) -> BaseClient:
    return client(nubo, keys(nubo, 0))


@pytest.fixture(scope="module")
def carol(nubo: LiveNubo) -> BaseClient:
    uid = call(nubo, "one.user.allocate", "carol", "carol-pw", "core")
    return client(nubo, keys(nubo, uid))


@pytest.fixture(scope="module")
def ami(ec2: BaseClient) -> str:
    return str(ec2.register_image(Name="debian", ImageLocation="/var/tmp/debian.img")["ImageId"])


def vnet_id(nubo: LiveNubo, name: str) -> int:
    pool = ET.fromstring(call(nubo, "one.vnpool.info", -2, -1, -1))
    return next(int(v.findtext("ID") or -1) for v in pool.iter("VNET") if v.findtext("NAME") == name)


def leases(nubo: LiveNubo, name: str) -> dict[str, str]:
    """ip -> VID of the network's used leases, as one.vn.info shows them (-1: held)."""
    doc = ET.fromstring(call(nubo, "one.vn.info", vnet_id(nubo, name)))
    return {lease.findtext("IP") or "": lease.findtext("VID") or ""
            for lease in doc.iter("LEASE") if lease.findtext("USED") == "1"}


def vm_nics(nubo: LiveNubo, instance_id: str) -> list[dict[str, str]]:
    doc = ET.fromstring(call(nubo, "one.vm.info", int(instance_id[2:], 16)))
    return [{child.tag: child.text or "" for child in nic} for nic in doc.iter("NIC")]


def subnet_of(ec2: BaseClient, name: str, nubo: LiveNubo) -> dict[str, Any]:
    wanted = f"subnet-{vnet_id(nubo, name):08x}"
    return dict(ec2.describe_subnets(SubnetIds=[wanted])["Subnets"][0])


def instance(ec2: BaseClient, instance_id: str) -> dict[str, Any]:
    return dict(ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]
                ["Instances"][0])


def test_networks_are_subnets_of_the_default_vpc(ec2: BaseClient, carol: BaseClient,
                                                 nubo: LiveNubo) -> None:
    lan = subnet_of(ec2, "lan", nubo)
    assert (lan["CidrBlock"], lan["VpcId"], lan["State"], lan["DefaultForAz"],
            lan["MapPublicIpOnLaunch"], lan["AvailableIpAddressCount"]) == \
        ("10.20.0.0/24", "vpc-00000001", "available", True, False, 254)
    assert lan["AvailabilityZone"] == "us-east-1a" and lan["Tags"] == []
    listed = [s["SubnetId"] for s in ec2.describe_subnets()["Subnets"]]
    assert listed == [lan["SubnetId"]]  # the public network holds addresses: no subnet
    # a user's own network is its subnet, not another user's
    uid = carol.describe_security_groups()["SecurityGroups"][0]["OwnerId"]
    ok, own, _ = nubo.rpc().one.vn.allocate(
        "carol:carol-pw", "NAME = own\nTYPE = FIXED\nLEASES = [ IP = 172.16.5.3 ]\n"
        "LEASES = [ IP = 172.16.5.9 ]")
    assert ok, own
    mine = f"subnet-{own:08x}"
    seen = {s["SubnetId"]: s for s in carol.describe_subnets()["Subnets"]}
    assert list(seen) == [lan["SubnetId"], mine]
    assert (seen[mine]["CidrBlock"], seen[mine]["AvailableIpAddressCount"],
            seen[mine]["DefaultForAz"], seen[mine]["OwnerId"]) == ("172.16.5.0/28", 2, False, uid)
    assert mine in [s["SubnetId"] for s in ec2.describe_subnets()["Subnets"]]  # the admin's
    message = fails("InvalidSubnetID.NotFound", carol.describe_subnets,
                    SubnetIds=["subnet-7fffffff"])
    assert message == "The subnet ID 'subnet-7fffffff' does not exist"
    fails("InvalidSubnetID.Malformed", carol.describe_subnets, SubnetIds=["sub-1"])
    for name, values, expected in (
            ("default-for-az", ["true"], [lan["SubnetId"]]),
            ("cidr-block", ["172.16.*"], [mine]), ("vpc-id", ["vpc-00000001"], [lan["SubnetId"], mine]),
            ("subnet-id", [mine], [mine]), ("availability-zone", ["us-east-1a"],
                                            [lan["SubnetId"], mine]),
            ("state", ["available"], [lan["SubnetId"], mine])):
        found = carol.describe_subnets(Filters=[{"Name": name, "Values": values}])["Subnets"]
        assert [s["SubnetId"] for s in found] == expected, name
    vpc = carol.describe_vpcs()["Vpcs"]
    assert [(v["VpcId"], v["IsDefault"], v["CidrBlock"]) for v in vpc] == \
        [("vpc-00000001", True, "0.0.0.0/0")]  # 10.20.0.0/24 and 172.16.5.0/28 apart
    assert ec2.describe_vpcs(VpcIds=["vpc-00000001"])["Vpcs"][0]["CidrBlock"] == "0.0.0.0/0"
    fails("InvalidVpcID.NotFound", ec2.describe_vpcs, VpcIds=["vpc-00000002"])
    nubo.rpc().one.vn.delete("carol:carol-pw", own)
    assert [v["CidrBlock"] for v in carol.describe_vpcs()["Vpcs"]] == ["10.20.0.0/24"]


def test_instances_get_nics_on_their_subnets(ec2: BaseClient, ami: str, nubo: LiveNubo) -> None:
    lan = subnet_of(ec2, "lan", nubo)
    plain = ec2.run_instances(ImageId=ami, MinCount=2, MaxCount=2)["Instances"]
    assert [i["SubnetId"] for i in plain] == [lan["SubnetId"]] * 2  # the default subnet
    assert [i["PrivateIpAddress"] for i in plain] == ["10.20.0.1", "10.20.0.2"]
    chosen = ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1, SubnetId=lan["SubnetId"],
                               PrivateIpAddress="10.20.0.77")["Instances"][0]
    seen = instance(ec2, chosen["InstanceId"])
    (interface,) = seen["NetworkInterfaces"]
    assert (seen["VpcId"], seen["SubnetId"], seen["PrivateIpAddress"]) == \
        ("vpc-00000001", lan["SubnetId"], "10.20.0.77")
    assert (interface["MacAddress"], interface["PrivateIpAddress"], interface["SubnetId"],
            interface["Attachment"]["DeviceIndex"], interface["Status"]) == \
        ("02:00:0a:14:00:4d", "10.20.0.77", lan["SubnetId"], 0, "in-use")
    assert [g["GroupName"] for g in interface["Groups"]] == ["default"]
    assert "Association" not in interface
    assert leases(nubo, "lan")["10.20.0.77"] == str(int(chosen["InstanceId"][2:], 16))
    assert subnet_of(ec2, "lan", nubo)["AvailableIpAddressCount"] == 251
    by_nic = ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1, NetworkInterfaces=[
        {"DeviceIndex": 0, "SubnetId": lan["SubnetId"], "PrivateIpAddress": "10.20.0.88"}])
    assert by_nic["Instances"][0]["PrivateIpAddress"] == "10.20.0.88"
    found = ec2.describe_instances(Filters=[{"Name": "network-interface.addresses."
                                             "private-ip-address", "Values": ["10.20.0.8?"]}])
    assert [i["PrivateIpAddress"] for r in found["Reservations"] for i in r["Instances"]] == \
        ["10.20.0.88"]
    message = fails("InvalidIPAddress.InUse", ec2.run_instances, ImageId=ami, MinCount=1,
                    MaxCount=1, SubnetId=lan["SubnetId"], PrivateIpAddress="10.20.0.77")
    assert message == "Address 10.20.0.77 is in use."
    fails("InvalidParameterValue", ec2.run_instances, ImageId=ami, MinCount=1, MaxCount=1,
          SubnetId=lan["SubnetId"], PrivateIpAddress="10.99.0.5")
    fails("InvalidParameterCombination", ec2.run_instances, ImageId=ami, MinCount=2,
          MaxCount=2, PrivateIpAddress="10.20.0.99")
    fails("InvalidParameterCombination", ec2.run_instances, ImageId=ami, MinCount=1,
          MaxCount=1, SubnetId=lan["SubnetId"], NetworkInterfaces=[
              {"DeviceIndex": 0, "SubnetId": lan["SubnetId"]}])
    fails("InvalidSubnetID.NotFound", ec2.run_instances, ImageId=ami, MinCount=1, MaxCount=1,
          SubnetId="subnet-7fffffff")
    public = f"subnet-{vnet_id(nubo, 'public'):08x}"  # addresses, not a subnet
    fails("InvalidSubnetID.NotFound", ec2.run_instances, ImageId=ami, MinCount=1, MaxCount=1,
          SubnetId=public)
    ended = [i["InstanceId"] for i in plain] + [chosen["InstanceId"],
                                                by_nic["Instances"][0]["InstanceId"]]
    ec2.terminate_instances(InstanceIds=ended)
    ec2.get_waiter("instance_terminated").wait(InstanceIds=ended, WaiterConfig=RUNNING)
    assert leases(nubo, "lan") == {}
    assert instance(ec2, chosen["InstanceId"])["NetworkInterfaces"] == []


def test_a_full_subnet(ec2: BaseClient, ami: str, nubo: LiveNubo) -> None:
    tiny = call(nubo, "one.vn.allocate", "NAME = tiny\nTYPE = FIXED\nLEASES = [ IP = 10.30.0.5 ]")
    subnet = f"subnet-{tiny:08x}"
    first = ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1, SubnetId=subnet)
    assert first["Instances"][0]["PrivateIpAddress"] == "10.30.0.5"
    fails("InsufficientFreeAddressesInSubnet", ec2.run_instances, ImageId=ami, MinCount=1,
          MaxCount=1, SubnetId=subnet)
    done = first["Instances"][0]["InstanceId"]
    ec2.terminate_instances(InstanceIds=[done])
    ec2.get_waiter("instance_terminated").wait(InstanceIds=[done], WaiterConfig=RUNNING)
    call(nubo, "one.vn.delete", tiny)


def test_elastic_ips_are_leases_of_the_public_network(ec2: BaseClient, ami: str,
                                                      nubo: LiveNubo) -> None:
    first = ec2.allocate_address(Domain="vpc")
    assert first["PublicIp"] == "192.0.2.10"
    assert leases(nubo, "public") == {"192.0.2.10": "-1"}  # held: no VM gets it
    fails("InvalidParameterValue", ec2.allocate_address, Domain="vpc", Address="192.0.2.10")
    fails("InvalidParameterValue", ec2.allocate_address, Domain="vpc", Address="192.0.2.99")
    second = ec2.allocate_address(Domain="vpc", Address="192.0.2.12")
    third = ec2.allocate_address(Domain="vpc")
    assert third["PublicIp"] == "192.0.2.11"
    message = fails("AddressLimitExceeded", ec2.allocate_address, Domain="vpc")
    assert "no free lease" in message
    ec2.release_address(AllocationId=third["AllocationId"])
    ec2.release_address(AllocationId=second["AllocationId"])
    assert leases(nubo, "public") == {"192.0.2.10": "-1"}
    run = ec2.run_instances(ImageId=ami, MinCount=2, MaxCount=2)
    vm, vm2 = (i["InstanceId"] for i in run["Instances"])
    ec2.get_waiter("instance_running").wait(InstanceIds=[vm, vm2], WaiterConfig=RUNNING)
    assoc = ec2.associate_address(InstanceId=vm, AllocationId=first["AllocationId"])
    assert [n.get("PUBLIC_IP") for n in vm_nics(nubo, vm)] == ["192.0.2.10"]
    seen = instance(ec2, vm)
    assert seen["PublicIpAddress"] == "192.0.2.10"
    assert seen["NetworkInterfaces"][0]["Association"]["PublicIp"] == "192.0.2.10"
    listed = ec2.describe_addresses(PublicIps=["192.0.2.10"])["Addresses"][0]
    assert (listed["InstanceId"], listed["PrivateIpAddress"], listed["NetworkInterfaceId"]) == \
        (vm, seen["PrivateIpAddress"], seen["NetworkInterfaces"][0]["NetworkInterfaceId"])
    queued = "Queued driver work: update_sg (elastic IP 192.0.2.10)"
    wait_until("the refilter in the log", lambda: queued in nubo.cli(
        "vm", "log", str(int(vm[2:], 16))).stdout)
    ec2.associate_address(InstanceId=vm2, AllocationId=first["AllocationId"])  # moves it
    assert [n.get("PUBLIC_IP") for n in vm_nics(nubo, vm)] == [None]
    assert [n.get("PUBLIC_IP") for n in vm_nics(nubo, vm2)] == ["192.0.2.10"]
    assert "PublicIpAddress" not in instance(ec2, vm)
    wait_until("the refilter of the second", lambda: queued in nubo.cli(
        "vm", "log", str(int(vm2[2:], 16))).stdout)
    fails("InvalidAssociationID.NotFound", ec2.disassociate_address,
          AssociationId=assoc["AssociationId"])
    ec2.disassociate_address(PublicIp="192.0.2.10")
    assert [n.get("PUBLIC_IP") for n in vm_nics(nubo, vm2)] == [None]
    ec2.associate_address(InstanceId=vm, AllocationId=first["AllocationId"])
    ec2.terminate_instances(InstanceIds=[vm, vm2])  # the association ends with the VM
    ec2.get_waiter("instance_terminated").wait(InstanceIds=[vm, vm2], WaiterConfig=RUNNING)
    assert [n.get("PUBLIC_IP") for n in vm_nics(nubo, vm)] == [None]
    assert "InstanceId" not in ec2.describe_addresses()["Addresses"][0]
    assert leases(nubo, "public") == {"192.0.2.10": "-1"}  # still the owner's
    ec2.release_address(AllocationId=first["AllocationId"])
    assert leases(nubo, "public") == {}


def test_an_address_needs_an_interface(ec2: BaseClient, ami: str, nubo: LiveNubo) -> None:
    address = ec2.allocate_address(Domain="vpc")
    bare = call(nubo, "one.vm.allocate", 'NAME = "bare"\nCPU = 0.1\nMEMORY = 64\n')
    instance_id = f"i-{bare:08x}"
    message = fails("InvalidInstanceID", ec2.associate_address, InstanceId=instance_id,
                    AllocationId=address["AllocationId"])
    assert "no network interface" in message
    assert "SubnetId" not in instance(ec2, instance_id)
    call(nubo, "one.vm.action", "finalize", bare)
    ec2.release_address(AllocationId=address["AllocationId"])


def test_users_and_their_addresses(ec2: BaseClient, carol: BaseClient, ami: str,
                                   nubo: LiveNubo) -> None:
    address = ec2.allocate_address(Domain="vpc")
    hers = carol.allocate_address(Domain="vpc")
    assert hers["PublicIp"] != address["PublicIp"]
    her_ami = carol.register_image(Name="hers", ImageLocation="/var/tmp/hers.img")["ImageId"]
    her_vm = carol.run_instances(ImageId=her_ami, MinCount=1, MaxCount=1)["Instances"][0]
    assert her_vm["SubnetId"] == subnet_of(ec2, "lan", nubo)["SubnetId"]  # published: hers too
    fails("InvalidAllocationID.NotFound", carol.associate_address,
          InstanceId=her_vm["InstanceId"], AllocationId=address["AllocationId"])
    fails("InvalidInstanceID.NotFound", ec2.associate_address,
          InstanceId=her_vm["InstanceId"], AllocationId=address["AllocationId"])
    carol.associate_address(InstanceId=her_vm["InstanceId"], AllocationId=hers["AllocationId"])
    assert [a["PublicIp"] for a in carol.describe_addresses()["Addresses"]] == [hers["PublicIp"]]
    carol.terminate_instances(InstanceIds=[her_vm["InstanceId"]])
    carol.get_waiter("instance_terminated").wait(InstanceIds=[her_vm["InstanceId"]],
                                                 WaiterConfig=RUNNING)
    carol.release_address(AllocationId=hers["AllocationId"])
    ec2.release_address(AllocationId=address["AllocationId"])
    assert leases(nubo, "public") == {}


def test_without_a_public_network_addresses_are_unsupported(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    bare = LiveNubo(tmp_path_factory.mktemp("nubo"))
    try:
        bare.start()
        plain = client(bare, keys(bare, 0))
        message = fails("Unsupported", plain.allocate_address, Domain="vpc")
        assert "Elastic IPs are not configured" in message
        assert plain.describe_subnets()["Subnets"] == []
        assert plain.describe_vpcs()["Vpcs"][0]["CidrBlock"] == "10.0.0.0/16"
        ami_id = plain.register_image(Name="plain", ImageLocation="/var/tmp/plain.img")["ImageId"]
        run = plain.run_instances(ImageId=ami_id, MinCount=1, MaxCount=1)["Instances"][0]
        assert "SubnetId" not in run and run["NetworkInterfaces"] == []  # no default subnet
        fails("VPCIdNotSpecified", plain.run_instances, ImageId=ami_id, MinCount=1,
              MaxCount=1, PrivateIpAddress="10.0.0.5")
    finally:
        bare.stop()
