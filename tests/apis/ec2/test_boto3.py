"""boto3, unchanged, against a live daemon's EC2 Query API."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.client import BaseClient
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.live import LiveNubo

pytestmark = pytest.mark.slow


def keys(nubo: LiveNubo, uid: int, session: str | None = None) -> tuple[str, str]:
    ok, pair, _ = nubo.rpc().one.user.ec2keys(session or nubo.session, uid)
    assert ok, pair
    return pair[0], pair[1]


def client(nubo: LiveNubo, pair: tuple[str, str], *, region: str = "us-east-1",
           path: str = "", **config: Any) -> BaseClient:
    return boto3.client(
        "ec2", endpoint_url=f"http://127.0.0.1:{nubo.port}{path}", region_name=region,
        aws_access_key_id=pair[0], aws_secret_access_key=pair[1],
        config=Config(retries={"max_attempts": 1}, **config))


@pytest.fixture(scope="module")
def ec2(nubo: LiveNubo) -> BaseClient:
    return client(nubo, keys(nubo, 0))


@pytest.fixture(scope="module")
def ami(nubo: LiveNubo) -> str:
    ok, image_id, _ = nubo.rpc().one.image.allocate(
        nubo.session, 'NAME = "debian"\nPATH = "/var/tmp/debian.img"\n', 1)
    assert ok, image_id
    return f"ami-{image_id:08x}"


@pytest.fixture(scope="module")
def bob(nubo: LiveNubo) -> Iterator[BaseClient]:
    ok, uid, _ = nubo.rpc().one.user.allocate(nubo.session, "bob", "bob-pw", "core")
    assert ok, uid
    yield client(nubo, keys(nubo, uid))


def test_regions_and_zones_name_the_signed_region(nubo: LiveNubo) -> None:
    ec2 = client(nubo, keys(nubo, 0), region="nubo-west")
    assert [r["RegionName"] for r in ec2.describe_regions()["Regions"]] == ["nubo-west"]
    zones = ec2.describe_availability_zones()["AvailabilityZones"]
    assert [(z["ZoneName"], z["State"]) for z in zones] == [("nubo-westa", "available")]


def test_run_describe_tag_stop_start_terminate(ec2: BaseClient, ami: str) -> None:
    run = ec2.run_instances(ImageId=ami, MinCount=2, MaxCount=2, InstanceType="t2.micro",
                            TagSpecifications=[{"ResourceType": "instance",
                                                "Tags": [{"Key": "Name", "Value": "web"}]}])
    ids = [i["InstanceId"] for i in run["Instances"]]
    assert len(ids) == 2 and run["ReservationId"].startswith("r-")
    assert all(i["State"]["Name"] == "pending" for i in run["Instances"])
    ec2.create_tags(Resources=ids, Tags=[{"Key": "env", "Value": "test"}])  # read-your-writes
    ec2.get_waiter("instance_running").wait(InstanceIds=ids,
                                            WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    found = ec2.describe_instances(Filters=[{"Name": "tag:env", "Values": ["te*"]},
                                            {"Name": "instance-state-name",
                                             "Values": ["running", "stopped"]}])
    instances = [i for r in found["Reservations"] for i in r["Instances"]]
    assert sorted(i["InstanceId"] for i in instances) == sorted(ids)
    assert {t["Key"]: t["Value"] for t in instances[0]["Tags"]} == {"Name": "web", "env": "test"}
    assert instances[0]["InstanceType"] == "t2.micro"
    ec2.stop_instances(InstanceIds=ids[:1])
    ec2.get_waiter("instance_stopped").wait(InstanceIds=ids[:1],
                                            WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    ec2.start_instances(InstanceIds=ids[:1])
    ec2.get_waiter("instance_running").wait(InstanceIds=ids[:1],
                                            WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    ec2.reboot_instances(InstanceIds=ids[:1])
    changes = ec2.terminate_instances(InstanceIds=ids)["TerminatingInstances"]
    assert {c["PreviousState"]["Name"] for c in changes} == {"running"}
    ec2.get_waiter("instance_terminated").wait(InstanceIds=ids,
                                               WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    # terminated instances stay visible for a while
    states = {i["State"]["Name"] for r in ec2.describe_instances(InstanceIds=ids)["Reservations"]
              for i in r["Instances"]}
    assert states == {"terminated"}


def test_client_token_makes_run_idempotent(ec2: BaseClient, ami: str) -> None:
    first = ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1, ClientToken="tok-1")
    again = ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1, ClientToken="tok-1")
    assert again["ReservationId"] == first["ReservationId"]
    assert [i["InstanceId"] for i in again["Instances"]] == \
        [i["InstanceId"] for i in first["Instances"]]
    with pytest.raises(ClientError) as err:
        ec2.run_instances(ImageId=ami, MinCount=2, MaxCount=2, ClientToken="tok-1")
    assert err.value.response["Error"]["Code"] == "IdempotentParameterMismatch"
    ec2.terminate_instances(InstanceIds=[i["InstanceId"] for i in first["Instances"]])


def code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return str(exc.value.response["Error"]["Code"])


def test_errors(nubo: LiveNubo, ec2: BaseClient, ami: str) -> None:
    with pytest.raises(ClientError) as err:
        ec2.describe_instances(InstanceIds=["i-7fffffff"])
    assert code(err) == "InvalidInstanceID.NotFound"
    with pytest.raises(ClientError) as err:
        ec2.describe_instances(InstanceIds=["bogus"])
    assert code(err) == "InvalidInstanceID.Malformed"
    with pytest.raises(ClientError) as err:
        ec2.describe_instances(Filters=[{"Name": "no-such-filter", "Values": ["x"]}])
    assert code(err) == "InvalidParameterValue" and "no-such-filter" in str(err.value)
    with pytest.raises(ClientError) as err:
        ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1, DryRun=True)
    assert code(err) == "DryRunOperation"
    with pytest.raises(ClientError) as err:
        ec2.run_instances(ImageId="ami-7fffffff", MinCount=1, MaxCount=1)
    assert code(err) == "InvalidAMIID.NotFound"
    with pytest.raises(ClientError) as err:
        ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1, InstanceType="x9.huge")
    assert code(err) == "InvalidParameterValue"
    bad = client(nubo, ("AKIANOSUCHKEY", "secret"))
    with pytest.raises(ClientError) as err:
        bad.describe_instances()
    assert code(err) == "AuthFailure"
    wrong = client(nubo, (keys(nubo, 0)[0], "not-the-secret"))
    with pytest.raises(ClientError) as err:
        wrong.describe_instances()
    assert code(err) == "AuthFailure"


def test_users_see_only_their_own(ec2: BaseClient, bob: BaseClient, ami: str) -> None:
    run = ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1)
    mine = run["Instances"][0]["InstanceId"]
    listed = [i["InstanceId"] for r in bob.describe_instances()["Reservations"]
              for i in r["Instances"]]
    assert mine not in listed
    with pytest.raises(ClientError) as err:
        bob.terminate_instances(InstanceIds=[mine])
    assert code(err) == "InvalidInstanceID.NotFound"
    with pytest.raises(ClientError) as err:
        bob.run_instances(ImageId=ami, MinCount=1, MaxCount=1)  # oneadmin's image
    assert code(err) == "InvalidAMIID.NotFound"
    ec2.terminate_instances(InstanceIds=[mine])


def test_key_pairs(ec2: BaseClient) -> None:
    made = ec2.create_key_pair(KeyName="k1")
    assert made["KeyMaterial"].startswith("-----BEGIN RSA PRIVATE KEY-----")
    with pytest.raises(ClientError) as err:
        ec2.create_key_pair(KeyName="k1")
    assert code(err) == "InvalidKeyPair.Duplicate"
    listed = ec2.describe_key_pairs(KeyNames=["k1"])["KeyPairs"]
    assert listed[0]["KeyFingerprint"] == made["KeyFingerprint"]
    ec2.delete_key_pair(KeyName="k1")
    with pytest.raises(ClientError) as err:
        ec2.describe_key_pairs(KeyNames=["k1"])
    assert code(err) == "InvalidKeyPair.NotFound"


def test_pagination_and_sigv2(nubo: LiveNubo, ec2: BaseClient, ami: str) -> None:
    made = [ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
            for _ in range(6)]
    pages = list(ec2.get_paginator("describe_instances").paginate(
        Filters=[{"Name": "instance-id", "Values": made}], PaginationConfig={"PageSize": 5}))
    seen = [i["InstanceId"] for p in pages for r in p["Reservations"] for i in r["Instances"]]
    assert sorted(seen) == sorted(made) and len(pages) >= 2
    v2 = client(nubo, keys(nubo, 0), signature_version="v2", path="/ec2/")
    listed = [i["InstanceId"] for r in v2.describe_instances(InstanceIds=made)["Reservations"]
              for i in r["Instances"]]
    assert sorted(listed) == sorted(made)
    ec2.terminate_instances(InstanceIds=made)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        states = {i["State"]["Name"] for r in ec2.describe_instances(InstanceIds=made)[
            "Reservations"] for i in r["Instances"]}
        if states == {"terminated"}:
            break
        time.sleep(0.2)
    assert states == {"terminated"}


def test_images_register_describe_deregister(ec2: BaseClient, bob: BaseClient) -> None:
    image_id = ec2.register_image(Name="alpine", ImageLocation="/var/tmp/alpine.img",
                                  Description="tiny")["ImageId"]
    found = ec2.describe_images(ImageIds=[image_id])["Images"]
    assert (found[0]["Name"], found[0]["State"], found[0]["Description"]) == \
        ("alpine", "available", "tiny")
    assert image_id in [i["ImageId"] for i in ec2.describe_images(Owners=["self"])["Images"]]
    assert image_id not in [i["ImageId"] for i in bob.describe_images()["Images"]]
    attr = ec2.describe_image_attribute(ImageId=image_id, Attribute="description")
    assert attr["Description"]["Value"] == "tiny"
    ec2.get_waiter("image_available").wait(ImageIds=[image_id],
                                           WaiterConfig={"Delay": 1, "MaxAttempts": 5})
    ec2.deregister_image(ImageId=image_id)
    with pytest.raises(ClientError) as err:
        ec2.describe_images(ImageIds=[image_id])
    assert code(err) == "InvalidAMIID.NotFound"


def test_instance_attributes_and_console(ec2: BaseClient, ami: str) -> None:
    run = ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1, InstanceType="t2.micro",
                            UserData="#!/bin/sh\necho hi\n")
    vm = run["Instances"][0]["InstanceId"]
    attr = ec2.describe_instance_attribute(InstanceId=vm, Attribute="instanceType")
    assert attr["InstanceType"]["Value"] == "t2.micro"
    user_data = ec2.describe_instance_attribute(InstanceId=vm, Attribute="userData")
    assert user_data["UserData"]["Value"]  # base64 of the script, as EC2 returns it
    groups = ec2.describe_instance_attribute(InstanceId=vm, Attribute="groupSet")["Groups"]
    described = ec2.describe_instances(InstanceIds=[vm])["Reservations"][0]["Instances"][0]
    assert groups == [{"GroupId": g["GroupId"], "GroupName": g["GroupName"]}
                      for g in described["SecurityGroups"]]
    assert [g["GroupName"] for g in groups] == ["default"]
    ec2.get_waiter("instance_running").wait(InstanceIds=[vm],
                                            WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    with pytest.raises(ClientError) as err:
        ec2.modify_instance_attribute(InstanceId=vm, InstanceType={"Value": "t2.medium"})
    assert code(err) == "IncorrectInstanceState"
    ec2.stop_instances(InstanceIds=[vm])
    ec2.get_waiter("instance_stopped").wait(InstanceIds=[vm],
                                            WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    ec2.modify_instance_attribute(InstanceId=vm, InstanceType={"Value": "t2.medium"})
    inst = ec2.describe_instances(InstanceIds=[vm])["Reservations"][0]["Instances"][0]
    assert inst["InstanceType"] == "t2.medium"
    console = ec2.get_console_output(InstanceId=vm)
    assert console["InstanceId"] == vm  # the dummy driver writes no console: empty output
    types = {t["InstanceType"]: t for t in ec2.describe_instance_types()["InstanceTypes"]}
    assert types["t2.medium"]["VCpuInfo"]["DefaultVCpus"] == 2
    ec2.terminate_instances(InstanceIds=[vm])


def test_throttling(tmp_path_factory: pytest.TempPathFactory) -> None:
    from tests.live import FAST_CONF

    live = LiveNubo(tmp_path_factory.mktemp("throttled"),
                    conf=FAST_CONF + "EC2_RATE = 1\nEC2_BURST = 3\n")
    try:
        live.start()
        ec2 = client(live, keys(live, 0))
        codes = []
        for _ in range(6):
            try:
                ec2.describe_regions()
                codes.append("ok")
            except ClientError as exc:
                codes.append(exc.response["Error"]["Code"])
                assert exc.response["ResponseMetadata"]["HTTPStatusCode"] == 503
        assert codes[:3] == ["ok"] * 3 and "RequestLimitExceeded" in codes[3:]
    finally:
        live.stop()


def test_public_images(nubo: LiveNubo, ec2: BaseClient, bob: BaseClient) -> None:
    ok, image_id, _ = nubo.rpc().one.image.allocate(nubo.session, 'NAME = "golden"\n'
                                                   'PATH = "/var/tmp/golden.img"\n', 1)
    assert ok, image_id
    ami = f"ami-{image_id:08x}"
    assert ami not in str(bob.describe_images())
    ec2.modify_image_attribute(ImageId=ami, LaunchPermission={"Add": [{"Group": "all"}]})
    attribute = ec2.describe_image_attribute(ImageId=ami, Attribute="launchPermission")
    assert attribute["LaunchPermissions"] == [{"Group": "all"}]
    (seen,) = bob.describe_images(ImageIds=[ami])["Images"]
    assert (seen["Public"], seen["OwnerId"]) == (True, "000000000000")
    assert ami not in str(bob.describe_images(Owners=["self"]))
    assert ami in str(bob.describe_images(Owners=["000000000000"]))
    assert ami in str(bob.describe_images(ExecutableUsers=["all"]))
    run = bob.run_instances(ImageId=ami, MinCount=1, MaxCount=1)["Instances"][0]
    assert run["ImageId"] == ami
    with pytest.raises(ClientError) as err:
        bob.deregister_image(ImageId=ami)
    assert code(err) == "UnauthorizedOperation"
    with pytest.raises(ClientError) as err:
        bob.modify_image_attribute(ImageId=ami, LaunchPermission={"Remove": [{"Group": "all"}]})
    assert code(err) == "UnauthorizedOperation"
    with pytest.raises(ClientError) as err:
        ec2.modify_image_attribute(ImageId=ami, LaunchPermission={"Add": [{"UserId": "1"}]})
    assert code(err) == "InvalidParameterValue"
    ec2.modify_image_attribute(ImageId=ami, Attribute="launchPermission",
                               OperationType="remove", UserGroups=["all"])
    with pytest.raises(ClientError) as err:
        bob.describe_images(ImageIds=[ami])
    assert code(err) == "InvalidAMIID.NotFound"
    bob.terminate_instances(InstanceIds=[run["InstanceId"]])
