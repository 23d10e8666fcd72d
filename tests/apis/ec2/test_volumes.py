"""Volumes, snapshots and CreateImage through boto3 against a live daemon: each call is
checked against what the core then holds (images, VM disks, the dummy hypervisor's
record of hot-plugged disks)."""

from __future__ import annotations

import json
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.client import BaseClient
from botocore.exceptions import ClientError

from tests.apis.ec2.test_boto3 import client, keys
from tests.live import LiveNubo

pytestmark = pytest.mark.slow
FAST = {"Delay": 1, "MaxAttempts": 30}


@pytest.fixture(scope="module")
def ec2(nubo: LiveNubo) -> BaseClient:
    return client(nubo, keys(nubo, 0))


@pytest.fixture(scope="module")
def carol(nubo: LiveNubo) -> Iterator[BaseClient]:
    ok, uid, _ = nubo.rpc().one.user.allocate(nubo.session, "carol", "carol-pw", "core")
    assert ok, uid
    yield client(nubo, keys(nubo, uid))


@pytest.fixture(scope="module")
def ami(nubo: LiveNubo) -> str:
    ok, image_id, _ = nubo.rpc().one.image.allocate(
        nubo.session, 'NAME = "vol-test-os"\nPATH = "/var/tmp/os.img"\nSIZE = 2048\n', 1)
    assert ok, image_id
    return f"ami-{image_id:08x}"


def code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return str(exc.value.response["Error"]["Code"])


def image_doc(nubo: LiveNubo, public_id: str) -> ET.Element:
    ok, doc, _ = nubo.rpc().one.image.info(nubo.session, int(public_id.split("-")[1], 16))
    assert ok, doc
    return ET.fromstring(doc)


def vm_disks(nubo: LiveNubo, instance_id: str) -> list[dict[str, str]]:
    ok, doc, _ = nubo.rpc().one.vm.info(nubo.session, int(instance_id.split("-")[1], 16))
    assert ok, doc
    return [{c.tag: c.text or "" for c in d} for d in ET.fromstring(doc).findall("TEMPLATE/DISK")]


def running(ec2: BaseClient, ami: str) -> str:
    instance = ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1,
                                 InstanceType="t2.micro")["Instances"][0]["InstanceId"]
    ec2.get_waiter("instance_running").wait(InstanceIds=[instance], WaiterConfig=FAST)
    return str(instance)


def volume(ec2: BaseClient, volume_id: str) -> dict[str, Any]:
    return dict(ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0])


def test_volume_lifecycle_on_a_running_instance(nubo: LiveNubo, ec2: BaseClient,
                                                ami: str) -> None:
    created = ec2.create_volume(Size=2, AvailabilityZone="us-east-1a", VolumeType="gp3",
                                TagSpecifications=[{"ResourceType": "volume",
                                                    "Tags": [{"Key": "Name", "Value": "db"}]}])
    vol = created["VolumeId"]
    assert vol.startswith("vol-") and created["Size"] == 2 and created["State"] == "available"
    assert created["VolumeType"] == "gp3" and created["Tags"] == [{"Key": "Name", "Value": "db"}]
    doc = image_doc(nubo, vol)  # a persistent DATABLOCK image of 2 GiB in the core
    assert (doc.findtext("TYPE"), doc.findtext("PERSISTENT"), doc.findtext("SIZE")) == \
        ("2", "1", "2048")
    ec2.get_waiter("volume_available").wait(VolumeIds=[vol], WaiterConfig=FAST)

    instance = running(ec2, ami)
    attached = ec2.attach_volume(VolumeId=vol, InstanceId=instance, Device="/dev/sdf")
    assert (attached["InstanceId"], attached["Device"]) == (instance, "/dev/sdf")
    assert attached["State"] in ("attaching", "attached")
    ec2.get_waiter("volume_in_use").wait(VolumeIds=[vol], WaiterConfig=FAST)
    nubo.wait_vm(int(instance.split("-")[1], 16), "RUNNING")
    seen = volume(ec2, vol)
    assert seen["State"] == "in-use"
    assert [(a["InstanceId"], a["Device"], a["State"]) for a in seen["Attachments"]] == \
        [(instance, "/dev/sdf", "attached")]
    disk = [d for d in vm_disks(nubo, instance) if d.get("TARGET") == "sdf"]
    assert len(disk) == 1 and disk[0]["CLONE"] == "NO" and "ATTACH" not in disk[0]
    record = json.loads((nubo.var / "datastores" / "0" / str(int(instance[2:], 16)) /
                         "dummy.json").read_text())
    assert list(record["disks"]) == ["sdf"]  # the hypervisor has it plugged

    described = ec2.describe_instances(InstanceIds=[instance])["Reservations"][0]["Instances"][0]
    assert [(m["DeviceName"], m["Ebs"]["VolumeId"], m["Ebs"]["Status"])
            for m in described["BlockDeviceMappings"]] == [("/dev/sdf", vol, "attached")]
    attribute = ec2.describe_instance_attribute(InstanceId=instance,
                                                Attribute="blockDeviceMapping")
    assert attribute["BlockDeviceMappings"][0]["Ebs"]["VolumeId"] == vol
    by_filter = ec2.describe_volumes(Filters=[{"Name": "attachment.instance-id",
                                               "Values": [instance]}])["Volumes"]
    assert [v["VolumeId"] for v in by_filter] == [vol]

    with pytest.raises(ClientError) as err:
        ec2.delete_volume(VolumeId=vol)
    assert code(err) == "VolumeInUse"
    other = running(ec2, ami)
    with pytest.raises(ClientError) as err:
        ec2.attach_volume(VolumeId=vol, InstanceId=other, Device="/dev/sdg")
    assert code(err) == "VolumeInUse"
    with pytest.raises(ClientError) as err:
        ec2.detach_volume(VolumeId=vol, InstanceId=other)
    assert code(err) == "InvalidAttachment.NotFound"

    detached = ec2.detach_volume(VolumeId=vol)
    assert detached["State"] in ("detaching", "detached")
    ec2.get_waiter("volume_available").wait(VolumeIds=[vol], WaiterConfig=FAST)
    assert not [d for d in vm_disks(nubo, instance) if d.get("TARGET") == "sdf"]
    record = json.loads((nubo.var / "datastores" / "0" / str(int(instance[2:], 16)) /
                         "dummy.json").read_text())
    assert record["disks"] == {}
    with pytest.raises(ClientError) as err:
        ec2.detach_volume(VolumeId=vol)
    assert code(err) == "IncorrectState"

    ec2.delete_volume(VolumeId=vol)
    with pytest.raises(ClientError) as err:
        ec2.describe_volumes(VolumeIds=[vol])
    assert code(err) == "InvalidVolume.NotFound"
    ec2.terminate_instances(InstanceIds=[instance, other])


def test_terminating_the_instance_frees_its_volume(nubo: LiveNubo, ec2: BaseClient,
                                                   ami: str) -> None:
    vol = ec2.create_volume(Size=1, AvailabilityZone="us-east-1a")["VolumeId"]
    instance = running(ec2, ami)
    ec2.attach_volume(VolumeId=vol, InstanceId=instance, Device="xvdh")
    ec2.get_waiter("volume_in_use").wait(VolumeIds=[vol], WaiterConfig=FAST)
    ec2.terminate_instances(InstanceIds=[instance])
    ec2.get_waiter("instance_terminated").wait(InstanceIds=[instance], WaiterConfig=FAST)
    ec2.get_waiter("volume_available").wait(VolumeIds=[vol], WaiterConfig=FAST)
    assert volume(ec2, vol)["Attachments"] == []


def test_attach_to_a_stopped_instance(nubo: LiveNubo, ec2: BaseClient, ami: str) -> None:
    vol = ec2.create_volume(Size=1, AvailabilityZone="us-east-1a")["VolumeId"]
    instance = running(ec2, ami)
    ec2.stop_instances(InstanceIds=[instance])
    ec2.get_waiter("instance_stopped").wait(InstanceIds=[instance], WaiterConfig=FAST)
    ec2.attach_volume(VolumeId=vol, InstanceId=instance, Device="/dev/sdf")
    ec2.get_waiter("volume_in_use").wait(VolumeIds=[vol], WaiterConfig=FAST)
    ec2.start_instances(InstanceIds=[instance])
    ec2.get_waiter("instance_running").wait(InstanceIds=[instance], WaiterConfig=FAST)
    assert volume(ec2, vol)["Attachments"][0]["State"] == "attached"
    ec2.terminate_instances(InstanceIds=[instance])


def test_snapshots_and_volumes_from_them(nubo: LiveNubo, ec2: BaseClient) -> None:
    vol = ec2.create_volume(Size=3, AvailabilityZone="us-east-1a")["VolumeId"]
    snap = ec2.create_snapshot(VolumeId=vol, Description="nightly",
                               TagSpecifications=[{"ResourceType": "snapshot",
                                                   "Tags": [{"Key": "k", "Value": "v"}]}])
    sid = snap["SnapshotId"]
    assert sid.startswith("snap-") and snap["VolumeId"] == vol and snap["VolumeSize"] == 3
    assert snap["Description"] == "nightly" and snap["State"] == "completed"
    ec2.get_waiter("snapshot_completed").wait(SnapshotIds=[sid], WaiterConfig=FAST)
    doc = image_doc(nubo, sid)
    assert doc.findtext("TEMPLATE/SNAPSHOT_OF") == str(int(vol[4:], 16))
    assert doc.findtext("PERSISTENT") == "0"

    listed = ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]
    assert sid in [s["SnapshotId"] for s in listed]
    assert ec2.describe_snapshots(OwnerIds=["999999999999"])["Snapshots"] == []
    by_volume = ec2.describe_snapshots(Filters=[{"Name": "volume-id", "Values": [vol]}])
    assert [s["SnapshotId"] for s in by_volume["Snapshots"]] == [sid]
    tagged = ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [sid]}])["Tags"]
    assert [(t["ResourceType"], t["Key"]) for t in tagged] == [("snapshot", "k")]

    restored = ec2.create_volume(SnapshotId=sid, AvailabilityZone="us-east-1a")
    assert restored["SnapshotId"] == sid and restored["Size"] == 3
    bigger = ec2.create_volume(SnapshotId=sid, Size=5, AvailabilityZone="us-east-1a")
    assert bigger["Size"] == 5
    with pytest.raises(ClientError) as err:
        ec2.create_volume(SnapshotId=sid, Size=1, AvailabilityZone="us-east-1a")
    assert code(err) == "InvalidParameterValue"

    # snapshots and volumes are not AMIs, nor each other
    assert sid not in str(ec2.describe_images(Owners=["self"]))
    assert "snap-" + vol[4:] not in [s["SnapshotId"] for s in ec2.describe_snapshots()["Snapshots"]]
    with pytest.raises(ClientError) as err:
        ec2.describe_volumes(VolumeIds=["vol-" + sid[5:]])
    assert code(err) == "InvalidVolume.NotFound"
    with pytest.raises(ClientError) as err:
        ec2.run_instances(ImageId="ami-" + vol[4:], MinCount=1, MaxCount=1)
    assert code(err) == "InvalidAMIID.NotFound"

    ec2.delete_snapshot(SnapshotId=sid)
    with pytest.raises(ClientError) as err:
        ec2.describe_snapshots(SnapshotIds=[sid])
    assert code(err) == "InvalidSnapshot.NotFound"
    for v in (vol, restored["VolumeId"], bigger["VolumeId"]):
        ec2.delete_volume(VolumeId=v)


def test_create_volume_client_token(ec2: BaseClient) -> None:
    first = ec2.create_volume(Size=1, AvailabilityZone="us-east-1a", ClientToken="vol-tok-1")
    again = ec2.create_volume(Size=1, AvailabilityZone="us-east-1a", ClientToken="vol-tok-1")
    assert first["VolumeId"] == again["VolumeId"]
    with pytest.raises(ClientError) as err:
        ec2.create_volume(Size=2, AvailabilityZone="us-east-1a", ClientToken="vol-tok-1")
    assert code(err) == "IdempotentParameterMismatch"

    # the same token sent by 8 clients at once creates one volume
    results: list[str] = []
    errors: list[BaseException] = []

    def create() -> None:
        try:
            results.append(ec2.create_volume(Size=4, AvailabilityZone="us-east-1a",
                                              ClientToken="vol-tok-race")["VolumeId"])
        except BaseException as exc:  # noqa: BLE001 - asserted below
            errors.append(exc)

    threads = [threading.Thread(target=create) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(results) == 8 and len(set(results)) == 1
    sized = [v for v in ec2.describe_volumes()["Volumes"] if v["Size"] == 4]
    assert [v["VolumeId"] for v in sized] == results[:1]


def test_volume_pagination_and_filters(ec2: BaseClient) -> None:
    made = [ec2.create_volume(Size=7, AvailabilityZone="us-east-1a")["VolumeId"]
            for _ in range(6)]
    pages = ec2.get_paginator("describe_volumes").paginate(
        Filters=[{"Name": "size", "Values": ["7"]}], PaginationConfig={"PageSize": 5})
    seen = [v["VolumeId"] for page in pages for v in page["Volumes"]]
    assert seen == made
    with pytest.raises(ClientError) as err:
        ec2.describe_volumes(Filters=[{"Name": "colour", "Values": ["blue"]}])
    assert code(err) == "InvalidParameterValue"
    with pytest.raises(ClientError) as err:
        ec2.describe_volumes(VolumeIds=["vol-xyz"])
    assert code(err) == "InvalidVolumeID.Malformed"
    for v in made:
        ec2.delete_volume(VolumeId=v)


def test_volumes_are_private(ec2: BaseClient, carol: BaseClient, ami: str) -> None:
    vol = ec2.create_volume(Size=1, AvailabilityZone="us-east-1a")["VolumeId"]
    assert vol not in str(carol.describe_volumes())
    for call in (lambda: carol.describe_volumes(VolumeIds=[vol]),
                 lambda: carol.delete_volume(VolumeId=vol),
                 lambda: carol.create_snapshot(VolumeId=vol)):
        with pytest.raises(ClientError) as err:
            call()
        assert code(err) == "InvalidVolume.NotFound"
    instance = running(ec2, ami)
    carols = carol.create_volume(Size=1, AvailabilityZone="us-east-1a")["VolumeId"]
    with pytest.raises(ClientError) as err:
        carol.attach_volume(VolumeId=carols, InstanceId=instance, Device="/dev/sdf")
    assert code(err) == "InvalidInstanceID.NotFound"
    ec2.terminate_instances(InstanceIds=[instance])
    ec2.delete_volume(VolumeId=vol)


def test_dry_run(ec2: BaseClient) -> None:
    before = len(ec2.describe_volumes()["Volumes"])
    vol = ec2.create_volume(Size=1, AvailabilityZone="us-east-1a")["VolumeId"]
    for call in (lambda: ec2.create_volume(Size=1, AvailabilityZone="us-east-1a", DryRun=True),
                 lambda: ec2.create_snapshot(VolumeId=vol, DryRun=True),
                 lambda: ec2.delete_volume(VolumeId=vol, DryRun=True)):
        with pytest.raises(ClientError) as err:
            call()
        assert code(err) == "DryRunOperation"
    assert len(ec2.describe_volumes()["Volumes"]) == before + 1
    assert ec2.describe_snapshots(Filters=[{"Name": "volume-id", "Values": [vol]}])[
        "Snapshots"] == []
    ec2.delete_volume(VolumeId=vol)


def test_create_image_from_a_stopped_instance(nubo: LiveNubo, ec2: BaseClient,
                                              ami: str) -> None:
    instance = running(ec2, ami)
    with pytest.raises(ClientError) as err:
        ec2.create_image(InstanceId=instance, Name="too-early")
    assert code(err) == "IncorrectInstanceState"
    ec2.stop_instances(InstanceIds=[instance])
    ec2.get_waiter("instance_stopped").wait(InstanceIds=[instance], WaiterConfig=FAST)
    new = ec2.create_image(InstanceId=instance, Name="web-golden", Description="from web")
    ec2.get_waiter("image_available").wait(ImageIds=[new["ImageId"]], WaiterConfig=FAST)
    image = ec2.describe_images(ImageIds=[new["ImageId"]])["Images"][0]
    assert (image["Name"], image["Description"], image["State"]) == \
        ("web-golden", "from web", "available")
    doc = image_doc(nubo, new["ImageId"])
    assert doc.findtext("SIZE") == "2048"
    assert doc.findtext("TEMPLATE/SAVED_VM_ID") == str(int(instance[2:], 16))
    with pytest.raises(ClientError) as err:
        ec2.create_image(InstanceId=instance, Name="web-golden")
    assert code(err) == "InvalidAMIName.Duplicate"
    # the new AMI boots
    child = running(ec2, new["ImageId"])
    ec2.terminate_instances(InstanceIds=[instance, child])
