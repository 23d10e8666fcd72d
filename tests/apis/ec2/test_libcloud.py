"""apache-libcloud's EC2 driver, unchanged, against a live daemon's EC2 Query API.

libcloud sends every call as a GET with the parameters in the query string, signs with
SigV2 by default for us-east-1 (SigV4 when asked), and reads responses with namespaced
XPath, so a wrong namespace or element order shows up here as empty lists or wrong
booleans rather than as errors.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from libcloud.common.types import InvalidCredsError
from libcloud.compute.base import Node, NodeDriver, NodeImage, NodeSize, StorageVolume
from libcloud.compute.providers import get_driver
from libcloud.compute.types import NodeState, Provider, StorageVolumeState, VolumeSnapshotState

from tests.live import LiveNubo

pytestmark = pytest.mark.slow


def keys(nubo: LiveNubo, uid: int = 0) -> tuple[str, str]:
    ok, pair, _ = nubo.rpc().one.user.ec2keys(nubo.session, uid)
    assert ok, pair
    return pair[0], pair[1]


@pytest.fixture(scope="module")
def connect(nubo: LiveNubo) -> Iterator[Callable[..., NodeDriver]]:
    """Makes EC2 drivers for the test daemon; closes their HTTP sessions at the end."""
    made: list[NodeDriver] = []

    def make(pair: tuple[str, str] | None = None, signature_version: str = "2") -> NodeDriver:
        access, secret = pair or keys(nubo)
        driver = get_driver(Provider.EC2)(access, secret, secure=False, host="127.0.0.1",
                                          port=nubo.port, region="us-east-1",
                                          signature_version=signature_version)
        made.append(driver)
        return driver

    yield make
    for driver in made:
        http = getattr(driver.connection, "connection", None)
        if http is not None:
            http.session.close()


@pytest.fixture(scope="module")
def ec2(connect: Callable[..., NodeDriver]) -> NodeDriver:
    return connect()


@pytest.fixture(scope="module")
def ami(nubo: LiveNubo) -> str:
    ok, image_id, _ = nubo.rpc().one.image.allocate(
        nubo.session, 'NAME = "debian"\nPATH = "/var/tmp/debian.img"\n', 1)
    assert ok, image_id
    return f"ami-{image_id:08x}"


def micro(driver: NodeDriver) -> NodeSize:
    """libcloud's size table is static; t2.micro is also in Nubo's instance-type table."""
    (size,) = [s for s in driver.list_sizes() if s.id == "t2.micro"]
    return size


def wait_state(driver: NodeDriver, node: Node, state: str, timeout: float = 30.0) -> Node:
    deadline = time.monotonic() + timeout
    seen: Any = None
    while time.monotonic() < deadline:
        (seen,) = driver.list_nodes(ex_node_ids=[node.id])
        if seen.state == state:
            return seen
        time.sleep(0.2)
    raise AssertionError(f"{node.id} did not reach {state}: {seen and seen.state}")


def md5_fingerprint(public_openssh: str) -> str:
    digest = hashlib.md5(base64.b64decode(public_openssh.split()[1]),
                         usedforsecurity=False).hexdigest()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def test_locations_images_sizes(ec2: NodeDriver, ami: str) -> None:
    (location,) = ec2.list_locations()
    assert (location.name, location.availability_zone.name,
            location.availability_zone.region_name) == ("us-east-1a", "us-east-1a", "us-east-1")
    mine = ec2.list_images(ex_owner="self")
    assert [(i.id, i.name, i.extra["state"]) for i in mine] == [(ami, "debian", "available")]
    assert [i.id for i in ec2.list_images(ex_image_ids=[ami])] == [ami]
    assert micro(ec2).ram == 1024


def test_create_list_reboot_destroy(ec2: NodeDriver, ami: str) -> None:
    node = ec2.create_node(name="lc-web", size=micro(ec2), image=NodeImage(ami, None, ec2))
    assert node.id.startswith("i-") and node.state == NodeState.PENDING
    assert node.extra["instance_type"] == "t2.micro" and node.extra["tags"] == {"Name": "lc-web"}
    running = wait_state(ec2, node, NodeState.RUNNING)
    assert running.name == "lc-web" and running.extra["image_id"] == ami
    assert node.id in [n.id for n in ec2.list_nodes()]
    assert ec2.reboot_node(running) is True
    assert ec2.destroy_node(running) is True
    wait_state(ec2, node, NodeState.TERMINATED)


def test_destroy_reports_the_new_state(ec2: NodeDriver, ami: str) -> None:
    """destroy_node reads the first <name> of the answer: currentState comes first."""
    node = ec2.create_node(name="lc-gone", size=micro(ec2), image=NodeImage(ami, None, ec2))
    assert ec2.destroy_node(node) is True


def test_create_with_location_key_and_user_data(ec2: NodeDriver, ami: str) -> None:
    pair = ec2.create_key_pair("lc-launch")
    (location,) = ec2.list_locations()
    (image,) = ec2.list_images(ex_owner="self")
    assert image.id == ami
    nodes = ec2.create_node(name="lc-pair", size=micro(ec2), image=image, location=location,
                            ex_keyname="lc-launch", ex_userdata="#!/bin/sh\necho hello\n",
                            ex_mincount=2, ex_maxcount=2)
    assert len(nodes) == 2
    assert {(n.extra["key_name"], n.extra["availability"]) for n in nodes} == \
        {("lc-launch", "us-east-1a")}
    for node in nodes:
        ec2.destroy_node(node)
    ec2.delete_key_pair(pair)


def test_stop_and_start(ec2: NodeDriver, ami: str) -> None:
    node = ec2.create_node(name="lc-stop", size=micro(ec2), image=NodeImage(ami, None, ec2))
    node = wait_state(ec2, node, NodeState.RUNNING)
    assert ec2.stop_node(node) is True
    node = wait_state(ec2, node, NodeState.STOPPED)
    assert ec2.start_node(node) is True
    wait_state(ec2, node, NodeState.RUNNING)
    ec2.destroy_node(node)


def test_tags(ec2: NodeDriver, ami: str) -> None:
    node = ec2.create_node(name="lc-tags", size=micro(ec2), image=NodeImage(ami, None, ec2))
    assert ec2.ex_describe_tags(node) == {"Name": "lc-tags"}
    assert ec2.ex_create_tags(node, {"env": "test", "team": "a"}) is True
    assert ec2.ex_describe_tags(node) == {"Name": "lc-tags", "env": "test", "team": "a"}
    assert ec2.ex_delete_tags(node, {"team": "a"}) is True
    assert ec2.ex_describe_tags(node) == {"Name": "lc-tags", "env": "test"}
    ec2.destroy_node(node)


def test_key_pairs(ec2: NodeDriver) -> None:
    made = ec2.create_key_pair("lc-made")
    assert made.private_key.startswith("-----BEGIN RSA PRIVATE KEY-----")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    imported = ec2.import_key_pair_from_string("lc-imported", public + " me@laptop")
    assert imported.fingerprint == md5_fingerprint(public)
    listed = {k.name: k.fingerprint for k in ec2.list_key_pairs()}
    assert listed["lc-made"] == made.fingerprint
    assert listed["lc-imported"] == imported.fingerprint
    assert ec2.delete_key_pair(made) is True
    assert ec2.delete_key_pair(imported) is True
    assert not {"lc-made", "lc-imported"} & {k.name for k in ec2.list_key_pairs()}


def test_get_key_pair_by_name(ec2: NodeDriver) -> None:
    """get_key_pair sends DescribeKeyPairs with a bare `KeyName` (no `.1`), as AWS allows."""
    made = ec2.create_key_pair("lc-named")
    assert ec2.get_key_pair("lc-named").fingerprint == made.fingerprint
    ec2.delete_key_pair(made)


def test_sigv4(connect: Callable[..., NodeDriver], ami: str) -> None:
    v4 = connect(signature_version="4")
    assert [loc.name for loc in v4.list_locations()] == ["us-east-1a"]
    assert [i.id for i in v4.list_images(ex_owner="self")] == [ami]
    node = v4.create_node(name="lc-v4", size=micro(v4), image=NodeImage(ami, None, v4))
    assert node.extra["tags"] == {"Name": "lc-v4"}
    made = v4.create_key_pair("lc-v4")
    assert made.name in [k.name for k in v4.list_key_pairs()]
    assert v4.delete_key_pair(made) is True
    v4.destroy_node(node)


@pytest.mark.parametrize("version", ["2", "4"])
def test_wrong_secret(connect: Callable[..., NodeDriver], nubo: LiveNubo, version: str) -> None:
    wrong = connect((keys(nubo)[0], "not-the-secret"), signature_version=version)
    with pytest.raises(InvalidCredsError):
        wrong.list_locations()


def wait_volume(driver: NodeDriver, volume_id: str, state: StorageVolumeState,
                attachment: str | None = None, timeout: float = 30.0) -> StorageVolume:
    """Until the volume is in `state` (and its attachment in `attachment`, if given)."""
    deadline = time.monotonic() + timeout
    seen: Any = None
    while time.monotonic() < deadline:
        seen = next(v for v in driver.list_volumes() if v.id == volume_id)
        if seen.state == state and attachment in (None, seen.extra["attachment_status"]):
            return seen  # type: ignore[no-any-return]
        time.sleep(0.2)
    raise AssertionError(f"{volume_id} did not reach {state}: {seen and seen.state}")


def test_volumes_and_snapshots(ec2: NodeDriver, ami: str) -> None:
    volume = ec2.create_volume(2, "lc-data")  # a location is picked from list_locations
    assert volume.id.startswith("vol-") and volume.size == 2 and volume.name == "lc-data"
    assert volume.state == StorageVolumeState.AVAILABLE
    assert volume.extra["tags"] == {"Name": "lc-data"}
    node = wait_state(ec2, ec2.create_node(name="lc-vol", size=micro(ec2),
                                           image=NodeImage(ami, None, ec2)), NodeState.RUNNING)
    assert ec2.attach_volume(node, volume, "/dev/sdf") is True
    in_use = wait_volume(ec2, volume.id, StorageVolumeState.INUSE, "attached")
    assert (in_use.name, in_use.extra["device"], in_use.extra["instance_id"]) == \
        ("lc-data", "/dev/sdf", node.id)
    assert [v.id for v in ec2.list_volumes(node=node)] == [volume.id]

    snapshot = ec2.create_volume_snapshot(volume, name="lc-snap")
    assert snapshot.id.startswith("snap-") and snapshot.size == 2
    assert snapshot.state == VolumeSnapshotState.AVAILABLE
    assert [s.id for s in ec2.list_volume_snapshots(volume)] == [snapshot.id]
    assert snapshot.id in [s.id for s in ec2.list_snapshots(owner="self")]
    copy = ec2.create_volume(2, "lc-copy", snapshot=snapshot)
    assert copy.extra["snapshot_id"] == snapshot.id

    assert ec2.detach_volume(volume) is True
    wait_volume(ec2, volume.id, StorageVolumeState.AVAILABLE)
    assert ec2.list_volumes(node=node) == []
    assert ec2.destroy_volume_snapshot(snapshot) is True
    assert ec2.destroy_volume(volume) is True
    assert ec2.destroy_volume(copy) is True
    assert volume.id not in [v.id for v in ec2.list_volumes()]
    ec2.destroy_node(node)


def test_create_image_from_a_stopped_node(ec2: NodeDriver, ami: str) -> None:
    node = wait_state(ec2, ec2.create_node(name="lc-img", size=micro(ec2),
                                           image=NodeImage(ami, None, ec2)), NodeState.RUNNING)
    ec2.stop_node(node)
    node = wait_state(ec2, node, NodeState.STOPPED)
    image = ec2.create_image(node, "lc-golden", description="saved by libcloud")
    assert image.id.startswith("ami-") and image.id != ami
    deadline = time.monotonic() + 30
    while ec2.get_image(image.id).extra["state"] != "available":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert ec2.get_image(image.id).name == "lc-golden"
    assert ec2.delete_image(ec2.get_image(image.id)) is True
    ec2.destroy_node(node)
