"""DescribeInstances by id, the hot path, against a live daemon: it runs as one unit of work
(core.db.one_unit) yet still reads the access key, the owner and the instance afresh on
every request."""

from __future__ import annotations

import pytest
from botocore.client import BaseClient
from botocore.exceptions import ClientError

from tests.apis.ec2.test_boto3 import client, code, keys
from tests.live import LiveNubo

pytestmark = pytest.mark.slow


def new_user(nubo: LiveNubo, name: str) -> tuple[int, BaseClient, str]:
    """A user, its EC2 client and an image of its own."""
    ok, uid, _ = nubo.rpc().one.user.allocate(nubo.session, name, name + "-pw", "core")
    assert ok, uid
    ok, image_id, _ = nubo.rpc().one.image.allocate(
        f"{name}:{name}-pw", f'NAME = "{name}"\nPATH = "/var/tmp/debian.img"\n', 1)
    assert ok, image_id
    return uid, client(nubo, keys(nubo, uid)), f"ami-{image_id:08x}"


def ids_of(answer: dict[str, list[dict[str, list[dict[str, str]]]]]) -> list[str]:
    return [i["InstanceId"] for r in answer["Reservations"] for i in r["Instances"]]


def test_deleted_user_is_refused_at_once(nubo: LiveNubo) -> None:
    uid, carol, ami = new_user(nubo, "carol")
    mine = carol.run_instances(ImageId=ami, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    assert ids_of(carol.describe_instances(InstanceIds=[mine])) == [mine]
    carol.terminate_instances(InstanceIds=[mine])
    carol.get_waiter("instance_terminated").wait(InstanceIds=[mine],
                                                 WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    carol.deregister_image(ImageId=ami)  # a user who still owns images is not deleted
    ok, err, _ = nubo.rpc().one.user.delete(nubo.session, uid)
    assert ok, err
    with pytest.raises(ClientError) as exc:  # the very next request: no cached key
        carol.describe_instances(InstanceIds=[mine])
    assert code(exc) == "AuthFailure"


def test_point_reads_stay_within_the_tenant(nubo: LiveNubo) -> None:
    _, dave, ami = new_user(nubo, "dave")
    _, erin, _ = new_user(nubo, "erin")
    theirs = dave.run_instances(ImageId=ami, MinCount=2, MaxCount=2)["Instances"]
    first, second = (i["InstanceId"] for i in theirs)
    answer = dave.describe_instances(InstanceIds=[first])
    assert ids_of(answer) == [first]
    assert answer["Reservations"][0]["Instances"][0]["SecurityGroups"][0]["GroupName"] == "default"
    with pytest.raises(ClientError) as exc:
        erin.describe_instances(InstanceIds=[first])
    assert code(exc) == "InvalidInstanceID.NotFound" and first in str(exc.value)
    with pytest.raises(ClientError) as exc:  # one of them not the caller's: none answered
        erin.describe_instances(InstanceIds=[first, second])
    assert code(exc) == "InvalidInstanceID.NotFound"
    admin = client(nubo, keys(nubo, 0))
    with pytest.raises(ClientError) as exc:  # oneadmin too sees only its own through EC2
        admin.describe_instances(InstanceIds=[first])
    assert code(exc) == "InvalidInstanceID.NotFound"


def test_point_read_sees_the_last_write(nubo: LiveNubo) -> None:
    _, frank, ami = new_user(nubo, "frank")
    mine = frank.run_instances(ImageId=ami, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    frank.create_tags(Resources=[mine], Tags=[{"Key": "env", "Value": "prod"}])
    found = frank.describe_instances(InstanceIds=[mine])["Reservations"][0]["Instances"][0]
    assert found["Tags"] == [{"Key": "env", "Value": "prod"}]
    frank.terminate_instances(InstanceIds=[mine])
    state = frank.describe_instances(InstanceIds=[mine])["Reservations"][0]["Instances"][0]
    assert state["State"]["Name"] in ("shutting-down", "terminated")  # still visible by id
