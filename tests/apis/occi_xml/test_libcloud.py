"""apache-libcloud's OpenNebula driver, unchanged, against a live daemon's OCCI-XML port.

The driver tolerates almost nothing: it cuts ids out of hrefs, calls int() on MEMORY and
SIZE, reads INSTANCE_TYPE's text without checking the element is there and counts only
204 as a destroyed node and 202 as an attached disk. api_version 3.8 (and 3.6, the same
calls) asks for each instance type by name; 3.2 reads them inline; 2.2 has a fixed table.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from libcloud.common.exceptions import BaseHTTPError
from libcloud.common.types import InvalidCredsError
from libcloud.compute.base import Node, NodeDriver
from libcloud.compute.types import NodeState

from tests.apis.occi_xml.conftest import User, state, wait_state
from tests.e2e.test_readme import block
from tests.live import LiveNubo

pytestmark = pytest.mark.slow
Connect = Callable[..., NodeDriver]
NUBO_TYPES = ["t2.nano", "t2.micro", "t2.small", "t2.medium", "m1.small", "m1.medium",
              "m1.large", "m5.large", "m5.xlarge", "c5.large", "r5.large", "small", "medium",
              "large"]


def launch(driver: NodeDriver, user: User, hostname: str, size: str = "t2.micro") -> Node:
    """A node with the user's image and network, named by its context."""
    (image,) = [i for i in driver.list_images() if i.id == str(user.image)]
    (size_,) = [s for s in driver.list_sizes() if s.name == size]
    networks = [n for n in driver.ex_list_networks() if n.id == str(user.network)]
    return driver.create_node(name=hostname, size=size_, image=image, networks=networks,
                              context={"hostname": hostname, "ssh_key": "ssh-ed25519 AAAA me"})


def running(nubo: LiveNubo, node: Node) -> None:
    """Until the VM runs (LCM RUNNING: libcloud's "running" is any ACTIVE state)."""
    nubo.wait_vm(int(node.id), "RUNNING")


def fetch(driver: NodeDriver, node: Node) -> Node:
    (seen,) = [n for n in driver.list_nodes() if n.id == node.id]
    return seen


@pytest.mark.parametrize("version", ["3.8", "3.2"])
def test_sizes_images_networks_locations(connect: Connect, alice: User, version: str) -> None:
    one = connect(alice, version)
    sizes = one.list_sizes()
    assert [s.name for s in sizes] == NUBO_TYPES
    micro = sizes[1]
    assert (micro.ram, micro.cpu, micro.vcpu, micro.disk, micro.price) == (1024, 0.5, 1.0, None,
                                                                          None)
    (image,) = one.list_images()
    assert (image.id, image.name, image.extra["type"], image.extra["size"]) == \
        (str(alice.image), "debian", "OS", "0")
    (network,) = one.ex_list_networks()
    assert (network.id, network.name, network.address, network.size) == \
        (str(alice.network), "lan", "10.1.0.0", "C")
    assert network.extra == {"public": "NO"}
    assert [loc.id for loc in one.list_locations()] == ["0"]  # static, no request


@pytest.mark.parametrize("version", ["3.8", "3.2"])
def test_create_list_reboot_destroy(nubo: LiveNubo, connect: Connect, alice: User,
                                    version: str) -> None:
    one = connect(alice, version)
    hostname = "web-" + version.replace(".", "")
    node = launch(one, alice, hostname)
    assert node.name == hostname  # libcloud sends an empty NAME: HOSTNAME names the VM
    assert node.state in (NodeState.PENDING, NodeState.RUNNING) and node.size.name == "t2.micro"
    assert node.image.id == str(alice.image) and node.image.extra["target"] == "hda"
    (nic,) = node.public_ips
    # libcloud sends the network's ADDRESS as the IP: read as "any free address"
    assert nic.id == str(alice.network) and nic.address.startswith("10.1.0.")
    assert nic.address != "10.1.0.0" and nic.extra["mac"].startswith("02:00:0a:01:00:")
    assert node.extra["context"] == {"hostname": hostname, "ssh_key": "ssh-ed25519 AAAA me"}
    running(nubo, node)
    seen = fetch(one, node)
    assert seen.state == NodeState.RUNNING and seen.public_ips[0].address == nic.address
    assert one.reboot_node(seen) is True
    running(nubo, node)
    assert one.destroy_node(seen) is True
    wait_state(one, node.id, "DONE")
    assert node.id not in [n.id for n in one.list_nodes()]


def test_state_changes(nubo: LiveNubo, connect: Connect, alice: User) -> None:
    one = connect(alice)
    node = launch(one, alice, "lc-states")
    running(nubo, node)
    for asked, reached in (("SUSPENDED", "SUSPENDED"), ("RESUME", "ACTIVE"),
                           ("STOPPED", "STOPPED"), ("RESUME", "ACTIVE")):
        assert one.ex_node_action(node, asked) is True
        wait_state(one, node.id, reached)
        if reached == "ACTIVE":
            running(nubo, node)
    assert fetch(one, node).state == NodeState.RUNNING
    assert one.ex_node_action(node, "SHUTDOWN") is True
    wait_state(one, node.id, "DONE")
    with pytest.raises(BaseHTTPError, match="not allowed in state DONE"):
        one.ex_node_action(node, "RESUME")  # ONE's failure code, 400


@pytest.mark.parametrize("asked", ["CANCEL", "DONE"])
def test_cancel_and_done(nubo: LiveNubo, connect: Connect, alice: User, asked: str) -> None:
    one = connect(alice)
    node = launch(one, alice, f"lc-{asked.lower()}")
    running(nubo, node)
    assert one.ex_node_action(node, asked) is True
    wait_state(one, node.id, "DONE")


def test_volumes_attach_detach(nubo: LiveNubo, connect: Connect, alice: User) -> None:
    one = connect(alice)
    volume = one.create_volume(size=64, name="lc-data")  # MB, in this dialect
    assert (volume.name, volume.size) == ("lc-data", 64)
    assert [(v.id, v.size) for v in one.list_volumes() if v.name == "lc-data"] == \
        [(volume.id, 64)]
    node = launch(one, alice, "lc-volumes")
    running(nubo, node)
    assert one.attach_volume(node, volume, "sdb") is True
    running(nubo, node)  # the hot-plug played out
    disks = fetch(one, node).image
    assert [(d.id, d.extra["target"], d.extra["disk_id"]) for d in disks] == \
        [(str(alice.image), "hda", "0"), (volume.id, "sdb", "2")]  # the context CD is 1
    with pytest.raises(BaseHTTPError, match="is used by"):
        one.destroy_volume(volume)  # 409
    assert one.detach_volume(volume) is True
    running(nubo, node)
    assert fetch(one, node).image.id == str(alice.image)  # one disk again
    assert one.destroy_volume(volume) is True
    assert volume.id not in [v.id for v in one.list_volumes()]
    assert one.destroy_node(node) is True


def test_save_as(nubo: LiveNubo, connect: Connect, alice: User) -> None:
    one = connect(alice)
    node = launch(one, alice, "lc-save")
    running(nubo, node)
    with pytest.raises(BaseHTTPError, match="STOPPED") as refused:
        one.ex_node_set_save_name(node, "lc-golden")
    assert refused.value.code == 400
    assert one.ex_node_action(node, "STOPPED") is True
    wait_state(one, node.id, "STOPPED")
    assert one.ex_node_set_save_name(fetch(one, node), "lc-golden") is True
    (golden,) = [i for i in one.list_images() if i.name == "lc-golden"]
    wait_storage(one, golden.id, "READY")
    assert one.destroy_node(node) is True
    assert one.connection.request(f"/storage/{golden.id}", method="DELETE").status == 204


def wait_storage(driver: NodeDriver, image_id: str, wanted: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    seen: Any = None
    while time.monotonic() < deadline:
        seen = driver.connection.request(f"/storage/{image_id}").object.findtext("STATE")
        if seen == wanted:
            return
        time.sleep(0.1)
    raise AssertionError(f"storage {image_id} did not reach {wanted}: {seen}")


def test_api_22_fixed_sizes(nubo: LiveNubo, connect: Connect, alice: User) -> None:
    one = connect(alice, "2.2")
    node = launch(one, alice, "lc-22", size="small")
    assert node.size.name == "small" and node.name == "lc-22"
    assert state(one, node.id) in ("PENDING", "ACTIVE")
    running(nubo, node)
    assert one.destroy_node(fetch(one, node)) is True  # 204


def test_credentials(connect: Connect, alice: User, bob: User) -> None:
    with pytest.raises(InvalidCredsError):
        connect(alice, password="wrong").list_nodes()
    with pytest.raises(InvalidCredsError):
        connect(alice, "3.2", password=bob.password).list_images()
    plain = connect(alice, plain_auth=True)  # 3.8's option: the password itself, no SHA1
    assert str(alice.image) in [i.id for i in plain.list_images()]


def test_users_see_their_own(nubo: LiveNubo, connect: Connect, alice: User,
                             bob: User) -> None:
    mine = launch(connect(alice), alice, "lc-alice")
    theirs = connect(bob)
    assert [i.id for i in theirs.list_images()] == [str(bob.image)]
    assert [n.id for n in theirs.ex_list_networks()] == [str(bob.network)]
    assert mine.id not in [n.id for n in theirs.list_nodes()]
    with pytest.raises(BaseHTTPError, match=f"compute {mine.id} does not exist"):
        theirs.destroy_node(mine)
    admin = connect(User("oneadmin", nubo.password, 0, 0))
    assert mine.id in [n.id for n in admin.list_nodes()]
    assert connect(alice).destroy_node(mine) is True


def test_readme_snippet(nubo: LiveNubo, tmp_path: Path) -> None:
    ok, image, _ = nubo.rpc().one.image.allocate(
        nubo.session, 'NAME = "base"\nPATH = "/var/tmp/base.img"\n', 1)
    assert ok, image
    code = block("python", "## Use it with libcloud's OpenNebula driver")
    code = code.replace("port=4568", f"port={nubo.occi_xml_port}")
    code = code.replace('"var/one_auth"', repr(str(nubo.var / "one_auth")))
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, text=True,
                            capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "web2" in result.stdout, result.stdout


def test_vms_made_elsewhere_are_readable(nubo: LiveNubo, connect: Connect, alice: User) -> None:
    """A VM from XML-RPC (no instance type, a volatile disk, no NIC) still parses."""
    ok, vm_id, _ = nubo.rpc().one.vm.allocate(
        alice.session, f'NAME = "rpc-made"\nMEMORY = 128\nCPU = 0.1\nDISK = [ IMAGE_ID = '
                       f'{alice.image} ]\nDISK = [ TYPE = swap, SIZE = 64 ]\n')
    assert ok, vm_id
    (node,) = [n for n in connect(alice, "3.2").list_nodes() if n.id == str(vm_id)]
    assert node.name == "rpc-made" and node.size is None and node.public_ips == []
    assert [(d.id, d.extra["type"]) for d in node.image] == [(str(alice.image), "DISK"),
                                                             ("", "swap")]
    assert connect(alice).destroy_node(node) is True
