"""Images copied into an `fs` datastore by a live daemon (core.image_copies): registered
LOCKED, copied in the background by datastore/fs/cp or made by mkfs, READY with the
driver's SOURCE and SIZE, or ERROR with its message; deleted with rm, cloned with cp;
refused to VMs while LOCKED; finished after the daemon is killed in the middle of a copy.
Real files under the test's tmp dir, a gzip one, http URLs served on 127.0.0.1.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import httpx
import pyone
import pytest
from botocore.exceptions import ClientError

from tests.apis.ec2.test_boto3 import client, keys
from tests.apis.occi.client import INFRA
from tests.drivers.conftest import SYSTEM_PATH
from tests.live import FAST_CONF, LiveNubo, call
from tests.strict import missing
from tests.web import serving

pytestmark = pytest.mark.slow

MB = 1 << 20
TOOLS = ("python3", "md5sum", "gzip", "curl", "blkid", "mkfs.ext4")
LOCKED, READY, ERROR = 4, 1, 5
OS_TPL = "http://schemas.nubo.cloud/occi/os_tpl#"


@pytest.fixture(scope="module")
def web() -> Iterator[tuple[str, dict[str, bytes]]]:
    """An http server on loopback and the files it serves (add to the dict)."""
    with serving() as served:
        yield served


# --- the daemon ---------------------------------------------------------------------------------


class FsNubo(LiveNubo):
    """A daemon whose default datastore is `fs`; every copy logs its progress."""

    def env(self) -> dict[str, str]:
        env = super().env()
        env["NUBO_DS_PROGRESS_MB"] = "0"
        return env


def fs_conf() -> str:
    assert "DEFAULT_DS_MAD = dummy" in FAST_CONF
    return FAST_CONF.replace("DEFAULT_DS_MAD = dummy", "DEFAULT_DS_MAD = fs")


def need_tools() -> None:
    for tool in TOOLS:
        if shutil.which(tool, path=SYSTEM_PATH["PATH"]) is None:
            missing(f"{tool} (for the datastore driver)")


@pytest.fixture(scope="module")
def nubo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FsNubo]:
    need_tools()
    live = FsNubo(tmp_path_factory.mktemp("ds-nubo"), conf=fs_conf())
    try:
        live.start()
        yield live
    finally:
        live.stop()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("user-files")


@pytest.fixture(scope="module")
def one(nubo: LiveNubo) -> pyone.OneServer:
    return pyone.OneServer(nubo.url, session=nubo.session)



def info(nubo: LiveNubo, image_id: int) -> ET.Element:
    return ET.fromstring(call(nubo, "one.image.info", image_id))


def state(nubo: LiveNubo, image_id: int) -> int:
    return int(info(nubo, image_id).findtext("STATE") or -1)


def settle(nubo: LiveNubo, image_id: int, timeout: float = 60) -> ET.Element:
    """The image document once it is no longer LOCKED."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        doc = info(nubo, image_id)
        if doc.findtext("STATE") != str(LOCKED):
            return doc
        time.sleep(0.1)
    raise AssertionError(f"image {image_id} still LOCKED:\n" + nubo.log_path.read_text()[-3000:])


def register(nubo: LiveNubo, text: str, ds: int = 1) -> int:
    return int(call(nubo, "one.image.allocate", text, ds))


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def store(nubo: LiveNubo, ds: int = 1) -> Path:
    return nubo.var / "datastores" / str(ds)


def wait_gone(path: Path, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while path.exists():
        assert time.monotonic() < deadline, f"{path} is still there"
        time.sleep(0.1)


def cli(nubo: LiveNubo, *args: str) -> subprocess.CompletedProcess[str]:
    result = nubo.cli(*args, check=False)
    assert "Traceback" not in result.stderr, result.stderr
    return result


# --- copies ---------------------------------------------------------------------------------------


def test_a_file_is_copied_into_the_datastore(nubo: LiveNubo, files: Path) -> None:
    data = os.urandom(3 * MB + 5)
    src = write(files / "disk.raw", data)
    image_id = register(nubo, f'NAME = "file"\nPATH = "{src}"\n')
    doc = settle(nubo, image_id)
    assert doc.findtext("STATE") == str(READY), ET.tostring(doc)
    source = Path(doc.findtext("SOURCE") or "")
    assert source.parent == store(nubo) and source != src
    assert source.read_bytes() == data
    assert doc.findtext("SIZE") == "4" and doc.findtext("PATH") == str(src)  # MB, rounded up
    assert doc.find("TEMPLATE/PROGRESS") is None and doc.find("TEMPLATE/ERROR") is None


def test_a_gzip_file_is_stored_decompressed(nubo: LiveNubo, files: Path) -> None:
    data = os.urandom(MB) + bytes(2 * MB)
    src = write(files / "disk.img", gzip.compress(data))
    doc = settle(nubo, register(nubo, f'NAME = "gz"\nPATH = "{src}"\n'))
    assert Path(doc.findtext("SOURCE") or "").read_bytes() == data
    assert doc.findtext("SIZE") == "3"


def test_an_http_url_is_downloaded(nubo: LiveNubo, web: tuple[str, dict[str, bytes]]) -> None:
    url, served = web
    served["/images/web.img"] = data = os.urandom(2 * MB + 1)
    doc = settle(nubo, register(nubo, f'NAME = "web"\nPATH = "{url}/images/web.img"\n'))
    assert doc.findtext("STATE") == str(READY), ET.tostring(doc)
    assert Path(doc.findtext("SOURCE") or "").read_bytes() == data and doc.findtext("SIZE") == "3"


def test_pyone_sees_locked_then_ready_and_vms_wait(
        nubo: LiveNubo, one: pyone.OneServer, web: tuple[str, dict[str, bytes]]) -> None:
    url, served = web
    served["/slow/pyone.img"] = data = os.urandom(2 * MB)
    image_id = one.image.allocate(f'NAME = "slow"\nPATH = "{url}/slow/pyone.img"\n', 1)
    image = one.image.info(image_id)
    assert (image.STATE, image.SOURCE) == (LOCKED, "")
    # a VM may not use it meanwhile: XML-RPC, by id and by name, and EC2
    for disk in (f"IMAGE_ID = {image_id}", 'IMAGE = "slow"'):
        with pytest.raises(pyone.OneActionException, match="is being copied into its datastore"):
            one.vm.allocate(f"NAME = \"early\"\nMEMORY = 64\nCPU = 0.1\nDISK = [ {disk} ]\n")
    ec2 = client(nubo, keys(nubo, 0))
    with pytest.raises(ClientError) as refused:
        ec2.run_instances(ImageId=f"ami-{image_id:08x}", MinCount=1, MaxCount=1)
    assert "being copied" in str(refused.value), refused.value
    answer = httpx.post(f"http://127.0.0.1:{nubo.port}/compute/", timeout=30,
                        auth=("oneadmin", nubo.password), headers={"Content-Type": "text/plain"},
                        content=f'Category: compute; scheme="{INFRA}"; class="kind"\n'
                                f'Category: slow_{image_id}; scheme="{OS_TPL}"; class="mixin"\n')
    assert answer.status_code == 400 and "being copied" in answer.text, answer.text
    progress = set()
    deadline = time.monotonic() + 60
    while (image := one.image.info(image_id)).STATE == LOCKED:
        assert time.monotonic() < deadline
        progress.add(image.TEMPLATE.get("PROGRESS"))
        time.sleep(0.1)
    assert image.STATE == READY and image.SIZE == 2
    assert Path(image.SOURCE).parent == store(nubo) and Path(image.SOURCE).read_bytes() == data
    assert any("%" in str(p) for p in progress), progress  # the driver's progress lines
    assert "PROGRESS" not in image.TEMPLATE
    vm_id = one.vm.allocate(f"NAME = \"late\"\nMEMORY = 64\nCPU = 0.1\n"
                            f"DISK = [ IMAGE_ID = {image_id} ]\n")
    one.vm.action("delete", vm_id)


def test_an_empty_ext4_datablock(nubo: LiveNubo) -> None:
    result = cli(nubo, "image", "create", "--name", "blk", "--type", "DATABLOCK", "--size", "16",
                 "--fstype", "ext4", "--json")
    assert result.returncode == 0, result.stderr
    made = json.loads(result.stdout)
    assert (made["state"], made["size_mb"], made["ok"]) == ("READY", 16, True)
    source = Path(made["source"])
    assert source.parent == store(nubo) and source.stat().st_size == 16 * MB
    blkid = shutil.which("blkid", path=SYSTEM_PATH["PATH"])
    assert blkid is not None
    found = subprocess.run([blkid, "-o", "value", "-s", "TYPE", str(source)],
                           capture_output=True, text=True, timeout=30)
    assert found.stdout.strip() == "ext4", found


def test_a_raw_datablock_has_no_filesystem(nubo: LiveNubo) -> None:
    """No FSTYPE (EC2's CreateVolume sends none): a sparse file of SIZE."""
    doc = settle(nubo, register(nubo, 'NAME = "raw"\nTYPE = DATABLOCK\nSIZE = 8\n'))
    source = Path(doc.findtext("SOURCE") or "")
    assert doc.findtext("STATE") == str(READY) and source.stat().st_size == 8 * MB
    assert source.stat().st_blocks == 0


# --- failures ---------------------------------------------------------------------------------------


def test_a_missing_file_is_an_error_with_the_drivers_message(
        nubo: LiveNubo, one: pyone.OneServer, files: Path) -> None:
    missing_file = files / "nowhere.img"
    result = cli(nubo, "image", "create", "--name", "gone", "--path", str(missing_file))
    assert result.returncode == 1
    assert result.stdout.startswith("ID: ")
    lines = result.stderr.splitlines()
    assert lines == [f"nubo: error: image {result.stdout.split()[1]} failed: the image file "
                     f"{missing_file} does not exist"], result.stderr
    image = one.image.info(int(result.stdout.split()[1]))
    assert image.STATE == ERROR and image.SOURCE == ""
    assert image.TEMPLATE["ERROR"] == f"the image file {missing_file} does not exist"
    shown = cli(nubo, "image", "show", "gone").stdout
    assert f"ERROR         : the image file {missing_file} does not exist" in shown
    with pytest.raises(pyone.OneActionException, match=f"image {image.ID} failed: the image "
                       "file .* does not exist"):
        one.vm.allocate(f"NAME = \"bad\"\nMEMORY = 64\nCPU = 0.1\nDISK = [ IMAGE_ID = {image.ID} ]")
    with pytest.raises(pyone.OneActionException, match="ERROR"):
        one.image.enable(image.ID, True)  # an image with no file does not become READY
    one.image.delete(image.ID)


def test_restricted_dirs_are_refused_unless_safe(nubo: LiveNubo, files: Path) -> None:
    secret = files / "secret"
    data = write(secret / "ok" / "fine.raw", b"f" * 1000)
    refused = write(secret / "disk.raw", b"s" * 1000)
    ds = int(call(nubo, "one.datastore.allocate",
                  f'NAME = "guarded"\nDS_MAD = "fs"\nTM_MAD = "dummy"\n'
                  f'RESTRICTED_DIRS = "{secret}"\nSAFE_DIRS = "{secret / "ok"}"\n'))
    doc = settle(nubo, register(nubo, f'NAME = "secret"\nPATH = "{refused}"\n', ds))
    assert doc.findtext("STATE") == str(ERROR)
    error = doc.findtext("TEMPLATE/ERROR") or ""
    assert "not allowed" in error and str(secret) in error, error
    doc = settle(nubo, register(nubo, f'NAME = "safe"\nPATH = "{data}"\n', ds))
    assert doc.findtext("STATE") == str(READY), ET.tostring(doc)
    assert Path(doc.findtext("SOURCE") or "").parent == store(nubo, ds)
    # the daemon's own files, and what other images stored, are never copied out
    theirs = Path(settle(nubo, register(nubo, f'NAME = "theirs"\nPATH = "{data}"\n'))
                  .findtext("SOURCE") or "")
    for private in (nubo.var / "nubo.db", theirs):
        doc = settle(nubo, register(nubo, f'NAME = "steal-{private.name}"\nPATH = "{private}"\n'))
        assert "not allowed" in (doc.findtext("TEMPLATE/ERROR") or ""), ET.tostring(doc)


# --- delete and clone ---------------------------------------------------------------------------


def test_delete_removes_the_copy_never_an_image_in_place(nubo: LiveNubo, files: Path) -> None:
    src = write(files / "del.raw", os.urandom(MB))
    image_id = register(nubo, f'NAME = "del"\nPATH = "{src}"\n')
    copy = Path(settle(nubo, image_id).findtext("SOURCE") or "")
    assert copy.exists()
    call(nubo, "one.image.delete", image_id)
    wait_gone(copy)
    assert src.exists()  # what it was copied from stays

    ds = int(call(nubo, "one.datastore.allocate", 'NAME = "in-place"\nDS_MAD = "dummy"\n'))
    image_id = register(nubo, f'NAME = "here"\nPATH = "{src}"\n', ds)
    doc = info(nubo, image_id)  # READY at once, used where it is
    assert (doc.findtext("STATE"), doc.findtext("SOURCE")) == (str(READY), str(src))
    given = register(nubo, f'NAME = "given"\nSOURCE = "{src}"\n')  # a SOURCE: in place too
    assert (state(nubo, given), info(nubo, given).findtext("SOURCE")) == (READY, str(src))
    call(nubo, "one.image.delete", image_id)
    call(nubo, "one.image.delete", given)
    time.sleep(1.5)  # the datastore loop is idle: it would have removed it by now
    assert src.read_bytes() and not list(store(nubo, ds).glob("*"))


def test_a_clone_is_a_copy(nubo: LiveNubo, files: Path) -> None:
    """EC2's CreateSnapshot clones a volume: cp from the volume's SOURCE, a file of its own."""
    data = os.urandom(MB + 7)
    src = write(files / "vol.raw", data)
    volume = register(nubo, f'NAME = "vol"\nTYPE = DATABLOCK\nPERSISTENT = YES\nPATH = "{src}"\n')
    original = Path(settle(nubo, volume).findtext("SOURCE") or "")
    ec2 = client(nubo, keys(nubo, 0))
    snap = ec2.create_snapshot(VolumeId=f"vol-{volume:08x}")["SnapshotId"]
    clone = int(snap.split("-")[1], 16)
    doc = settle(nubo, clone)
    assert doc.findtext("STATE") == str(READY), ET.tostring(doc)
    copy = Path(doc.findtext("SOURCE") or "")
    assert copy != original and copy.parent == store(nubo)
    assert copy.read_bytes() == original.read_bytes() == data
    assert ec2.describe_snapshots(SnapshotIds=[snap])["Snapshots"][0]["State"] == "completed"
    ec2.delete_snapshot(SnapshotId=snap)
    wait_gone(copy)
    assert original.read_bytes() == data


# --- the command line -------------------------------------------------------------------------------


def test_the_cli_follows_the_copy(nubo: LiveNubo, web: tuple[str, dict[str, bytes]]) -> None:
    url, served = web
    served["/slow/cli.img"] = os.urandom(2 * MB)
    result = cli(nubo, "image", "create", "--name", "cli-slow", "--path", f"{url}/slow/cli.img")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("ID: ") and lines[1].split() == ["0.0s", "lock"], lines
    assert any(line.rstrip().endswith("%)") for line in lines), lines  # progress lines
    assert lines[-1].split()[1:] == ["lock", "→", "rdy"] or lines[-1].endswith("-> rdy"), lines

    served["/slow/nowait.img"] = os.urandom(MB)
    result = cli(nubo, "image", "create", "--name", "cli-nowait", "--no-wait", "--json",
                 "--path", f"{url}/slow/nowait.img")
    image_id = json.loads(result.stdout)["id"]
    assert state(nubo, image_id) == LOCKED
    assert settle(nubo, image_id).findtext("STATE") == str(READY)


# --- a crash in the middle of a copy -----------------------------------------------------------------


def test_a_copy_cut_off_by_a_crash_runs_again(
        tmp_path: Path, web: tuple[str, dict[str, bytes]]) -> None:
    need_tools()
    url, served = web
    served["/slow/crash.img"] = data = os.urandom(4 * MB)
    crashed = FsNubo(tmp_path / "var", conf=fs_conf())
    crashed.start()
    try:
        image_id = register(crashed, f'NAME = "crash"\nPATH = "{url}/slow/crash.img"\n')
        deadline = time.monotonic() + 30
        while info(crashed, image_id).find("TEMPLATE/PROGRESS") is None:  # copying
            assert time.monotonic() < deadline, "the copy did not start"
            time.sleep(0.05)
        crashed.kill()
        crashed.start()
        doc = settle(crashed, image_id)
        assert doc.findtext("STATE") == str(READY), ET.tostring(doc)
        source = Path(doc.findtext("SOURCE") or "")
        assert source.read_bytes() == data
        # the half-written copy of the first run is gone (the sweep at start-up)
        assert [p.name for p in store(crashed).iterdir()] == [source.name]
        assert "resuming 1 image copy(ies) interrupted by the last stop" in \
            crashed.log_path.read_text()
    finally:
        crashed.kill()
