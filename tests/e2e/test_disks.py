"""Disks after creation, through a live daemon and the dummy drivers: hotplug on a
running VM (HOTPLUG state, TM + VMM attach_disk/detach_disk), the same on a stopped VM
(TM on the front-end copy), on a VM not deployed (template only), saving a stopped VM's
disk into a new image, and every refusal with its reason."""

from __future__ import annotations

import json
import socket
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any

import pytest

from tests.live import FAST_CONF, LiveNubo, call, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def nubo(request: pytest.FixtureRequest,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveNubo]:
    db = request.getfixturevalue("postgres").create_database() \
        if request.param == "postgresql" else ""
    live = LiveNubo(tmp_path_factory.mktemp("disks"), db=db, conf=FAST_CONF)
    try:
        live.start()
        yield live
    finally:
        live.stop()



def refused(nubo: LiveNubo, method: str, *args: Any) -> str:
    ok, message, _code = getattr(nubo.rpc(), method)(nubo.session, *args)[:3]
    assert not ok, (method, message)
    return str(message)


def vm_doc(nubo: LiveNubo, vm_id: int) -> ET.Element:
    return ET.fromstring(call(nubo, "one.vm.info", vm_id))


def image_doc(nubo: LiveNubo, image_id: int) -> ET.Element:
    return ET.fromstring(call(nubo, "one.image.info", image_id))


def volume(nubo: LiveNubo, name: str) -> int:
    return int(call(nubo, "one.image.allocate",
                    f"NAME = {name}\nTYPE = DATABLOCK\nSIZE = 16\nPERSISTENT = YES", 1))


def disks(nubo: LiveNubo, vm_id: int) -> dict[str, dict[str, str]]:
    """DISK_ID -> the disk's attributes."""
    return {d.findtext("DISK_ID") or "": {c.tag: c.text or "" for c in d}
            for d in vm_doc(nubo, vm_id).findall("TEMPLATE/DISK")}


def dummy(nubo: LiveNubo, vm_id: int) -> dict[str, Any]:
    path = nubo.var / "datastores" / "0" / str(vm_id) / "dummy.json"
    return dict(json.loads(path.read_text()))


def running_vm(nubo: LiveNubo, extra: str = "") -> int:
    vm_id = int(call(nubo, "one.vm.allocate", "MEMORY = 32\nCPU = 0.1\n"
                     "DISK = [ TYPE = swap, SIZE = 8 ]\nCONTEXT = [ HOSTNAME = box ]\n" + extra))
    nubo.wait_vm(vm_id, "RUNNING")
    return vm_id



def log_text(nubo: LiveNubo, vm_id: int) -> str:
    return nubo.cli("vm", "log", str(vm_id)).stdout


def test_hotplug_on_a_running_vm(nubo: LiveNubo) -> None:
    vm_id = running_vm(nubo)
    image_id = volume(nubo, "data-hot")
    call(nubo, "one.vm.attach", vm_id, f"DISK = [ IMAGE_ID = {image_id}, TARGET = sdf ]")
    nubo.wait_vm(vm_id, "RUNNING")
    found = disks(nubo, vm_id)
    # the swap disk is 0, the context CD keeps 1: the new disk is 2
    assert found["2"]["IMAGE_ID"] == str(image_id) and found["2"]["TARGET"] == "sdf"
    assert "ATTACH" not in found["2"]
    assert dummy(nubo, vm_id)["disks"] == {"sdf": f"{nubo.var}/datastores/0/{vm_id}/disk.2"}
    assert image_doc(nubo, image_id).findtext("STATE") == "2"  # USED
    assert image_doc(nubo, image_id).findtext("RUNNING_VMS") == "1"
    log = log_text(nubo, vm_id)
    assert "New state is ACTIVE/HOTPLUG" in log and "attach_disk" in log

    # a persistent image is used by one VM at a time
    other = running_vm(nubo)
    assert "already used by a VM" in refused(
        nubo, "one.vm.attach", other, f"DISK = [ IMAGE_ID = {image_id} ]")
    assert "already has a disk on target sdf" in refused(
        nubo, "one.vm.attach", vm_id, f"DISK = [ IMAGE_ID = {volume(nubo, 'data-x')}, "
        "TARGET = sdf ]")

    call(nubo, "one.vm.detach", vm_id, 2)
    nubo.wait_vm(vm_id, "RUNNING")
    wait_until("the disk to go", lambda: "2" not in disks(nubo, vm_id))
    assert dummy(nubo, vm_id)["disks"] == {}
    assert image_doc(nubo, image_id).findtext("STATE") == "1"  # READY again
    assert image_doc(nubo, image_id).findtext("RUNNING_VMS") == "0"
    assert "disk 7" in refused(nubo, "one.vm.detach", vm_id, 7)

    # the image can move to the other VM now
    call(nubo, "one.vm.attach", other, "DISK = [ IMAGE = data-hot ]")
    nubo.wait_vm(other, "RUNNING")
    assert any(d.get("IMAGE_ID") == str(image_id) for d in disks(nubo, other).values())
    # ending the VM releases the image
    nubo.cli("vm", "shutdown", str(other))
    nubo.wait_vm(other, "DONE")
    assert image_doc(nubo, image_id).findtext("STATE") == "1"
    nubo.cli("vm", "shutdown", str(vm_id))


def test_a_failed_attach_leaves_the_vm_running_without_the_disk(nubo: LiveNubo) -> None:
    vm_id = running_vm(nubo, 'DUMMY_FAIL = "attach_disk"\n')
    image_id = volume(nubo, "data-fail")
    call(nubo, "one.vm.attach", vm_id, f"DISK = [ IMAGE_ID = {image_id} ]")
    wait_until("the attach to fail", lambda: "injected failure of attach_disk" in
             (vm_doc(nubo, vm_id).findtext("USER_TEMPLATE/ERROR") or ""))
    nubo.wait_vm(vm_id, "RUNNING")
    assert list(disks(nubo, vm_id)) == ["0"]
    assert image_doc(nubo, image_id).findtext("STATE") == "1"
    assert image_doc(nubo, image_id).findtext("RUNNING_VMS") == "0"
    # the copy made for the failed attach is removed
    assert f"tm/dummy/delete localhost:{nubo.var}/datastores/0/{vm_id}/disk.2" in \
        log_text(nubo, vm_id)
    nubo.cli("vm", "cancel", str(vm_id))


def test_a_failed_detach_keeps_the_disk(nubo: LiveNubo) -> None:
    vm_id = running_vm(nubo, 'DUMMY_FAIL = "detach_disk"\n')
    image_id = volume(nubo, "data-stuck")
    call(nubo, "one.vm.attach", vm_id, f"DISK = [ IMAGE_ID = {image_id} ]")
    wait_until("the attach", lambda: "ATTACH" not in disks(nubo, vm_id).get("2", {"ATTACH": 1}))
    call(nubo, "one.vm.detach", vm_id, 2)
    wait_until("the detach to fail", lambda: "injected failure of detach_disk" in
             (vm_doc(nubo, vm_id).findtext("USER_TEMPLATE/ERROR") or ""))
    nubo.wait_vm(vm_id, "RUNNING")
    assert disks(nubo, vm_id)["2"].get("DETACH") is None
    assert image_doc(nubo, image_id).findtext("STATE") == "2"
    nubo.cli("vm", "cancel", str(vm_id))
    nubo.wait_vm(vm_id, "DONE")
    assert image_doc(nubo, image_id).findtext("STATE") == "1"


def test_disks_of_a_stopped_vm_and_saving_one(nubo: LiveNubo) -> None:
    vm_id = running_vm(nubo)
    nubo.cli("vm", "stop", str(vm_id))
    nubo.wait_vm(vm_id, "STOPPED")
    image_id = volume(nubo, "data-cold")
    call(nubo, "one.vm.attach", vm_id, f"DISK = [ IMAGE_ID = {image_id} ]")
    wait_until("the attach", lambda: "ATTACH" not in disks(nubo, vm_id).get("2", {"ATTACH": 1}))
    assert vm_doc(nubo, vm_id).findtext("STATE") == "4"  # still STOPPED, no transition
    log = log_text(nubo, vm_id)
    assert "attach_disk" not in log  # nothing runs: only the front-end copy changes

    assert "disk 0 is a swap" in refused(nubo, "one.vm.savedisk", vm_id, 0, "swap", "")
    saved = int(call(nubo, "one.vm.savedisk", vm_id, 2, "golden", "DATABLOCK"))
    wait_until("the saved image", lambda: image_doc(nubo, saved).findtext("STATE") == "1")
    doc = image_doc(nubo, saved)
    assert doc.findtext("TYPE") == "2" and doc.findtext("TEMPLATE/SAVED_VM_ID") == str(vm_id)
    assert doc.findtext("SIZE") == "16"
    assert "SAVE_AS" not in disks(nubo, vm_id)["2"]
    # the stopped VM's files wait on the front-end: the copy is made there
    frontend_copy = f"{socket.gethostname()}:{nubo.var}/datastores/0/{vm_id}/disk.2"
    assert f"tm/dummy/cpds {frontend_copy} {nubo.var}/datastores/1/" in log_text(nubo, vm_id)
    assert "already have an image named golden" in refused(
        nubo, "one.vm.savedisk", vm_id, 2, "golden", "")

    call(nubo, "one.vm.detach", vm_id, 2)
    wait_until("the detach", lambda: "2" not in disks(nubo, vm_id))
    assert image_doc(nubo, image_id).findtext("STATE") == "1"

    nubo.cli("vm", "resume", str(vm_id))
    nubo.wait_vm(vm_id, "RUNNING")
    assert "stop it first" in refused(nubo, "one.vm.savedisk", vm_id, 0, "hot-save", "")
    nubo.cli("vm", "shutdown", str(vm_id))


def test_a_failed_save_marks_the_image_error(nubo: LiveNubo) -> None:
    base = int(call(nubo, "one.image.allocate", "NAME = base\nTYPE = DATABLOCK\nSIZE = 4", 1))
    vm_id = running_vm(nubo, f'DUMMY_FAIL = "cpds"\nDISK = [ IMAGE_ID = {base} ]\n')
    nubo.cli("vm", "stop", str(vm_id))
    nubo.wait_vm(vm_id, "STOPPED")
    saved = int(call(nubo, "one.vm.savedisk", vm_id, 1, "broken-save", ""))
    wait_until("the failed save", lambda: image_doc(nubo, saved).findtext("STATE") == "5")
    assert "injected failure of cpds" in (image_doc(nubo, saved).findtext("TEMPLATE/ERROR") or "")
    assert "SAVE_AS" not in disks(nubo, vm_id)["1"]
    nubo.cli("vm", "delete", str(vm_id))


def test_a_vm_not_deployed_changes_its_template_only(nubo: LiveNubo) -> None:
    vm_id = int(call(nubo, "one.vm.allocate", "MEMORY = 32\nCPU = 0.1\n"
                     "DISK = [ TYPE = swap, SIZE = 8 ]", True))  # on hold
    image_id = volume(nubo, "data-held")
    call(nubo, "one.vm.attach", vm_id, f"DISK = [ IMAGE_ID = {image_id} ]")
    assert disks(nubo, vm_id)["1"]["IMAGE_ID"] == str(image_id)
    assert disks(nubo, vm_id)["1"]["TARGET"] == "hdb"
    call(nubo, "one.vm.detach", vm_id, 1)
    assert list(disks(nubo, vm_id)) == ["0"]
    assert image_doc(nubo, image_id).findtext("STATE") == "1"
    assert "must hold one DISK" in refused(nubo, "one.vm.attach", vm_id, "CPU = 1")
    call(nubo, "one.vm.attach", vm_id, f"DISK = [ IMAGE_ID = {image_id} ]")
    nubo.cli("vm", "release", str(vm_id))
    nubo.wait_vm(vm_id, "RUNNING")
    assert "disk.1" in log_text(nubo, vm_id)  # deployed with it
    nubo.cli("vm", "delete", str(vm_id))
    nubo.wait_vm(vm_id, "DONE")
    assert image_doc(nubo, image_id).findtext("STATE") == "1"


def test_another_users_vm_and_image_are_out_of_reach(nubo: LiveNubo) -> None:
    vm_id = running_vm(nubo)
    call(nubo, "one.user.allocate", "mallory", "pw")
    theirs = nubo.rpc()
    ok, message, _ = theirs.one.vm.attach("mallory:pw", vm_id,
                                         "DISK = [ IMAGE_ID = 0 ]")[:3]
    assert not ok and "not authorized" in message
    ok, message, _ = theirs.one.vm.detach("mallory:pw", vm_id, 0)[:3]
    assert not ok and "not authorized" in message
    nubo.cli("vm", "cancel", str(vm_id))


def test_the_cli(nubo: LiveNubo) -> None:
    vm_id = running_vm(nubo)
    volume(nubo, "cli-data")
    out = nubo.cli("vm", "disk-attach", str(vm_id), "cli-data", "--target", "vdb", "--wait")
    assert out.stdout.strip() == "DISK_ID: 2 (target vdb)"
    table = nubo.cli("vm", "disks", str(vm_id)).stdout.splitlines()
    assert table[0].split() == ["ID", "TARGET", "TYPE", "IMAGE", "SIZE", "PERSISTENT", "BUSY"]
    assert table[-1].split() == ["2", "vdb", "DISK", "cli-data", "16M", "yes", "-"]
    rows = json.loads(nubo.cli("vm", "disks", str(vm_id), "--json").stdout)
    assert [(r["disk_id"], r["target"], r["persistent"]) for r in rows] == \
        [(0, "hda", False), (2, "vdb", True)]
    failed = nubo.cli("vm", "disk-attach", str(vm_id), "cli-data", check=False)
    assert failed.returncode == 1 and "already used by a VM" in failed.stderr
    assert "Traceback" not in failed.stderr
    nubo.cli("vm", "disk-detach", str(vm_id), "2", "--wait")
    assert [r["disk_id"] for r in json.loads(
        nubo.cli("vm", "disks", str(vm_id), "--json").stdout)] == [0]
    nubo.cli("vm", "stop", str(vm_id), "--wait")
    nubo.cli("vm", "disk-attach", str(vm_id), "cli-data", "--wait")
    saved = json.loads(nubo.cli("vm", "disk-saveas", str(vm_id), "2", "cli-copy", "--type",
                                "DATABLOCK", "--wait", "--json").stdout)
    assert image_doc(nubo, saved["id"]).findtext("STATE") == "1"
    usage = nubo.cli("vm", "disk-saveas", str(vm_id), "two", "x", check=False)
    assert usage.returncode == 1 and "invalid int value" in usage.stderr
    assert "disk-attach" in nubo.cli("vm", "--help").stdout
    nubo.cli("vm", "delete", str(vm_id))
