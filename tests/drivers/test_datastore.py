"""The datastore driver datastore/fs (cp, mkfs, rm, stat), run as the core will run it:
through LocalRunner on the front-end, with `<b64 DS_DRIVER_ACTION_DATA> <image id>` built
from the very documents the core emits (core.documents image_xml and datastore_xml), on
real files: raw, qcow2 made by qemu-img, gzip, http URLs served on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from core.documents import datastore_xml, image_xml
from core.models import Datastore, Image
from drivers.runner import DriverResult, LocalRunner
from tests.drivers.conftest import SYSTEM_PATH
from tests.strict import missing
from tests.web import serving

MB = 1024 * 1024
SBIN = "/usr/local/sbin:/usr/sbin:/sbin"
TOOLS = ("python3", "md5sum", "gzip", "qemu-img", "blkid", "mkfs.ext4", "mkswap", "curl")


def need_tools() -> None:
    for tool in TOOLS:
        if shutil.which(tool, path=SYSTEM_PATH["PATH"]) is None:
            missing(f"{tool} (for the datastore driver)")


def run(argv: list[str]) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60,  # noqa: S603
                          env={**os.environ, "PATH": SYSTEM_PATH["PATH"]})
    assert done.returncode == 0, done.stderr
    return done.stdout


def qemu_info(path: Path) -> dict[str, object]:
    info: dict[str, object] = json.loads(run(["qemu-img", "info", "--output=json", str(path)]))
    return info


def qcow2(path: Path, size: str, *extra: str) -> Path:
    run(["qemu-img", "create", "-q", "-f", "qcow2", *extra, str(path), size])
    return path


@pytest.fixture(scope="module")
def web() -> Iterator[tuple[str, dict[str, bytes]]]:
    """An http server on loopback and the files it serves (add to the dict)."""
    with serving() as served:
        yield served


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# --- the driver, as the core calls it ---------------------------------------------------------


def action_data(image: Image, ds: Datastore) -> str:
    root = ET.Element("DS_DRIVER_ACTION_DATA")
    root.append(image_xml(image, uname="oneadmin", gname="oneadmin", datastore=ds.name))
    root.append(datastore_xml(ds, uname="oneadmin", gname="oneadmin"))
    return base64.b64encode(ET.tostring(root)).decode()


@dataclass
class Ds:
    remotes: Path
    base: Path  # the datastore's BASE_PATH
    files: Path  # where users' images are (allowed)
    var: Path  # NUBO_VAR (restricted)
    home: Path  # HOME (restricted)
    restricted: list[Path] = field(default_factory=list)
    safe: list[Path] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    def datastore(self) -> Datastore:
        template = ""
        if self.restricted:
            template += f'RESTRICTED_DIRS = "{" ".join(map(str, self.restricted))}"\n'
        if self.safe:
            template += f'SAFE_DIRS = "{" ".join(map(str, self.safe))}"\n'
        return Datastore(id=100, name="images", ds_mad="fs", tm_mad="ssh",
                         base_path=str(self.base), template=template)

    def raw(self, action: str, *args: str) -> DriverResult:
        runner = LocalRunner(self.remotes, env={**SYSTEM_PATH, "NUBO_VAR": str(self.var),
                                                "HOME": str(self.home), **self.env})
        return asyncio.run(runner.run("datastore", "fs", action, list(args), timeout=60))

    def __call__(self, action: str, image_id: int = 7, **image: object) -> DriverResult:
        img = Image(id=image_id, name=f"img{image_id}", uid=0, gid=0, datastore_id=100,
                    **image)  # type: ignore[arg-type]
        return self.raw(action, action_data(img, self.datastore()), str(image_id))

    def ok(self, action: str, image_id: int = 7, **image: object) -> DriverResult:
        result = self(action, image_id, **image)
        assert result.ok, (result.rc, result.stderr)
        return result

    def stored(self, action: str, image_id: int = 7, **image: object) -> tuple[Path, int]:
        """cp or mkfs: the SOURCE and SIZE_MB it printed."""
        before = int(time.time())
        out = self.ok(action, image_id, **image).stdout
        after = int(time.time())
        source, size = out.strip().rsplit(" ", 1)
        path = Path(source)
        assert path.parent == self.base
        names = {hashlib.md5(f"{t}:{image_id}".encode()).hexdigest()  # noqa: S324
                 for t in range(before, after + 1)}
        assert path.name in names  # OpenNebula's naming
        assert not list(self.base.glob(".*"))  # no .part left over
        return path, int(size)

    def failed(self, action: str, image_id: int = 7, **image: object) -> str:
        result = self(action, image_id, **image)
        assert not result.ok, result.stdout
        assert "ERROR MESSAGE --8<------" in result.stderr
        assert not self.base.exists() or not list(self.base.glob(".*"))
        return result.error


@pytest.fixture
def ds(remotes: Path, tmp_path: Path) -> Ds:
    need_tools()
    made = Ds(remotes, tmp_path / "ds store" / "100", tmp_path / "user files",
              tmp_path / "nubo var", tmp_path / "home")
    for d in (made.files, made.var, made.home):
        d.mkdir(parents=True)
    return made


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# --- cp ---------------------------------------------------------------------------------------


def test_cp_copies_a_raw_file_under_opennebulas_name(ds: Ds) -> None:
    data = os.urandom(MB + 123)
    src = write(ds.files / "my disk.raw", data)
    path, size = ds.stored("cp", path=str(src))
    assert path.read_bytes() == data and size == 2  # rounded up
    assert path.stat().st_mode & 0o777 == 0o660
    assert src.read_bytes() == data  # the source stays


def test_cp_reads_path_from_the_template_when_the_field_is_empty(ds: Ds) -> None:
    src = write(ds.files / "t.raw", b"x" * 10)
    path, size = ds.stored("cp", template=f'PATH = "{src}"')
    assert path.read_bytes() == b"x" * 10 and size == 1


def test_cp_qcow2_reports_its_virtual_size(ds: Ds) -> None:
    src = qcow2(ds.files / "disk.qcow2", "300M")
    path, size = ds.stored("cp", path=str(src))
    assert size == 300
    info = qemu_info(path)
    assert (info["format"], info["virtual-size"]) == ("qcow2", 300 * MB)


def test_cp_refuses_a_qcow2_with_a_backing_file(ds: Ds) -> None:
    base = qcow2(ds.files / "base.qcow2", "10M")
    src = qcow2(ds.files / "overlay.qcow2", "10M", "-b", str(base), "-F", "qcow2")
    assert "has a backing file" in ds.failed("cp", path=str(src))


def test_cp_stores_a_gzip_image_decompressed(ds: Ds) -> None:
    data = os.urandom(3 * MB) + bytes(2 * MB)
    src = write(ds.files / "disk.img", gzip.compress(data))  # no .gz: the magic says it
    path, size = ds.stored("cp", path=str(src))
    assert path.read_bytes() == data and size == 5


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "gzip"])
def test_cp_downloads_an_http_url(ds: Ds, web: tuple[str, dict[str, bytes]],
                                  compressed: bool) -> None:
    data = os.urandom(2 * MB + 1)
    url, files = web
    files[f"/images/{compressed}.img"] = gzip.compress(data) if compressed else data
    path, size = ds.stored("cp", path=f"{url}/images/{compressed}.img")
    assert path.read_bytes() == data and size == 3


def test_cp_logs_progress_of_a_large_download(ds: Ds, web: tuple[str, dict[str, bytes]]) -> None:
    url, files = web
    data = os.urandom(2 * MB)
    files["/slow/big.img"] = data
    ds.env["NUBO_DS_PROGRESS_MB"] = "0"  # every copy counts as large
    result = ds.ok("cp", path=f"{url}/slow/big.img")
    assert Path(result.stdout.strip().rsplit(" ", 1)[0]).read_bytes() == data
    shown = [int(p) for p in re.findall(r"^INFO: .*\((\d+)%\)$", result.stderr, re.M)]
    assert shown[-1] == 100 and any(0 < p < 100 for p in shown), result.stderr
    assert shown == sorted(shown)


def test_cp_small_copies_log_only_start_and_end(ds: Ds) -> None:
    src = write(ds.files / "small.raw", b"y" * 1000)
    result = ds.ok("cp", path=str(src))
    assert "%" not in result.stderr
    assert "copying" in result.stderr and "stored" in result.stderr


def test_cp_refuses_restricted_dirs_unless_safe(ds: Ds, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    ds.restricted = [secret]
    src = write(secret / "disk.raw", b"s" * 100)
    error = ds.failed("cp", path=str(src))
    assert "not allowed" in error and str(secret) in error

    ds.safe = [secret]
    path, _ = ds.stored("cp", path=str(src))
    assert path.read_bytes() == b"s" * 100

    # the dirs that are always restricted: NUBO_VAR, /etc, $HOME
    for always in (write(ds.var / "nubo.db", b"db"), write(ds.home / ".ssh" / "id", b"k"),
                   Path("/etc/hostname")):
        assert "not allowed" in ds.failed("cp", path=str(always))
    ds.safe.append(ds.home / "images")
    path, _ = ds.stored("cp", path=str(write(ds.home / "images" / "ok.raw", b"ok")))
    assert path.read_bytes() == b"ok"


def test_cp_resolves_symlinks_before_the_restricted_check(ds: Ds) -> None:
    link = ds.files / "innocent.raw"
    link.symlink_to(write(ds.var / "nubo.db", b"db"))
    assert "restricted dir" in ds.failed("cp", path=str(link))
    (ds.files / "fine.raw").symlink_to(write(ds.files / "real.raw", b"r"))
    path, _ = ds.stored("cp", path=str(ds.files / "fine.raw"))
    assert path.read_bytes() == b"r" and not path.is_symlink()


def test_cp_failures_are_clear_and_leave_nothing(
        ds: Ds, web: tuple[str, dict[str, bytes]]) -> None:
    assert "does not exist" in ds.failed("cp", path=str(ds.files / "missing.raw"))
    assert "has no PATH" in ds.failed("cp")
    assert "not a regular file" in ds.failed("cp", path=str(ds.files))
    assert "neither an absolute path nor" in ds.failed("cp", path="relative.raw")
    error = ds.failed("cp", path=f"http://127.0.0.1:{closed_port()}/x.img")
    assert "cannot download" in error and "onnect" in error  # curl: Failed to connect
    assert "404" in ds.failed("cp", path=f"{web[0]}/nothing.img")
    assert not list(ds.base.iterdir())


def test_cp_refuses_bad_arguments(ds: Ds) -> None:
    assert ds.raw("cp", "!!not base64!!", "7").error == "the driver action data is not valid base64"
    not_xml = base64.b64encode(b"<DS_DRIVER_ACTION_DATA>").decode()
    assert "not valid XML" in ds.raw("cp", not_xml, "7").error
    other = base64.b64encode(b"<VM><ID>1</ID></VM>").decode()
    assert ds.raw("cp", other, "7").error == (
        "the driver action data is <VM>, not <DS_DRIVER_ACTION_DATA>")
    good = action_data(Image(id=7, name="i", uid=0, gid=0), ds.datastore())
    assert ds.raw("cp", good, "7; rm").error == "invalid image id '7; rm'"
    assert "usage:" in ds.raw("cp").error


def test_cp_needs_a_base_path(ds: Ds) -> None:
    img = Image(id=7, name="i", uid=0, gid=0, path="/nonexistent")
    bare = Datastore(id=100, name="images", base_path="")
    assert ds.raw("cp", action_data(img, bare), "7").error == "the datastore has no BASE_PATH"
    from_template = Datastore(id=100, name="images", base_path="", template="BASE_PATH = /")
    assert "refusing the path '/'" in ds.raw("cp", action_data(img, from_template), "7").error


# --- mkfs -------------------------------------------------------------------------------------


def test_mkfs_ext4_raw_and_qcow2(ds: Ds) -> None:
    path, size = ds.stored("mkfs", size_mb=32, fstype="ext4")
    assert size == 32 and path.stat().st_size == 32 * MB
    blkid = shutil.which("blkid", path=SYSTEM_PATH["PATH"])
    assert blkid is not None
    assert run([blkid, "-o", "value", "-s", "TYPE", str(path)]).strip() == "ext4"

    path, size = ds.stored("mkfs", 8, size_mb=16, fstype="raw")
    assert size == 16 and path.stat().st_size == 16 * MB and path.stat().st_blocks == 0

    path, size = ds.stored("mkfs", 9, size_mb=48, fstype="qcow2")
    info = qemu_info(path)
    assert (size, info["format"], info["virtual-size"]) == (48, "qcow2", 48 * MB)

    path, _ = ds.stored("mkfs", 10, size_mb=8, fstype="swap")
    assert run([blkid, "-o", "value", "-s", "TYPE", str(path)]).strip() == "swap"


def test_mkfs_takes_size_and_fstype_from_the_template(ds: Ds) -> None:
    path, size = ds.stored("mkfs", template="SIZE = 4\nFSTYPE = raw")
    assert size == 4 and path.stat().st_size == 4 * MB


def test_mkfs_save_as_only_reserves_the_name(ds: Ds) -> None:
    result = ds.ok("mkfs", size_mb=20, fstype="save_as")
    source, size = result.stdout.strip().rsplit(" ", 1)
    assert Path(source).parent == ds.base and size == "20"
    assert not Path(source).exists()


def test_mkfs_xfs_when_installed(ds: Ds) -> None:
    if shutil.which("mkfs.xfs", path=SYSTEM_PATH["PATH"]) is None:
        assert ds.failed("mkfs", size_mb=300, fstype="xfs") == (
            "mkfs.xfs is not installed on the front-end: cannot make a xfs datablock")
        return
    path, _ = ds.stored("mkfs", size_mb=300, fstype="xfs")
    assert "XFS" in run(["file", str(path)])


def test_mkfs_failures(ds: Ds) -> None:
    assert "has no SIZE" in ds.failed("mkfs", fstype="ext4")
    assert "has no FSTYPE" in ds.failed("mkfs", size_mb=4)
    assert ds.failed("mkfs", size_mb=4, fstype="ext4;rm") == "invalid FSTYPE 'ext4;rm'"
    assert "not installed" in ds.failed("mkfs", size_mb=4, fstype="nofs")
    assert "SIZE must be a size in MB" in ds.failed("mkfs", template="SIZE = 4G\nFSTYPE = raw")
    ds.base = write(ds.files / "a file", b"") / "100"
    assert "cannot create the datastore dir" in ds.failed("mkfs", size_mb=4, fstype="raw")


# --- rm ---------------------------------------------------------------------------------------


def test_rm_removes_an_image_of_the_datastore(ds: Ds) -> None:
    path, _ = ds.stored("mkfs", size_mb=1, fstype="raw")
    assert "removing" in ds.ok("rm", source=str(path)).stderr
    assert not path.exists()
    assert "nothing to remove" in ds.ok("rm", source=str(path)).stderr  # a retry is fine


def test_rm_refuses_anything_not_directly_in_base_path(ds: Ds, tmp_path: Path) -> None:
    outside = write(tmp_path / "precious.raw", b"p")
    ds.base.mkdir(parents=True)
    sub = write(ds.base / "sub" / "x", b"x")
    for source in (outside, sub, ds.base / ".." / "100" / "y", ds.base, ds.base / "sub",
                   Path(f"{ds.base}-other") / "x"):
        assert "refusing to remove" in ds.failed("rm", source=str(source)), source
    assert "has no SOURCE" in ds.failed("rm")
    link = ds.base / "link"
    link.symlink_to(outside)
    assert "symlink pointing outside" in ds.failed("rm", source=str(link))
    (ds.base / "dir").mkdir()
    assert "is a directory" in ds.failed("rm", source=str(ds.base / "dir"))
    assert outside.read_bytes() == b"p" and sub.exists() and link.is_symlink()

    inner = write(ds.base / "inner", b"i")
    (ds.base / "alias").symlink_to(inner)
    ds.ok("rm", source=str(ds.base / "alias"))  # the link goes, not its target
    assert not (ds.base / "alias").is_symlink() and inner.exists()


# --- stat -------------------------------------------------------------------------------------


def test_stat_file_qcow2_gzip_and_url(ds: Ds, web: tuple[str, dict[str, bytes]]) -> None:
    def stat(path: str) -> str:
        return ds.ok("stat", path=path).stdout.strip()

    assert stat(str(write(ds.files / "a.raw", bytes(3 * MB + 1)))) == "4"
    assert stat(str(qcow2(ds.files / "b.qcow2", "200M"))) == "200"
    assert stat(str(write(ds.files / "c.img", gzip.compress(bytes(5 * MB))))) == "5"
    gz = write(ds.files / "d.qcow2.gz", gzip.compress(qcow2(ds.files / "d.qcow2", "77M")
                                                      .read_bytes()))
    assert stat(str(gz)) == "77"
    web[1]["/stat.img"] = bytes(MB + 5)
    assert stat(f"{web[0]}/stat.img") == "2"
    assert not ds.base.exists()  # nothing copied, not even the datastore dir


def test_stat_failures(ds: Ds, web: tuple[str, dict[str, bytes]]) -> None:
    assert "does not exist" in ds.failed("stat", path=str(ds.files / "missing"))
    assert "not allowed" in ds.failed("stat", path="/etc/hostname")
    error = ds.failed("stat", path=f"http://127.0.0.1:{closed_port()}/x.img")
    assert "cannot reach" in error and "onnect" in error
    assert "404" in ds.failed("stat", path=f"{web[0]}/missing.img")
    assert ds.raw("stat", "%%%", "1").error == "the driver action data is not valid base64"


def test_urls_with_wget_when_curl_is_missing(ds: Ds, web: tuple[str, dict[str, bytes]],
                                             tmp_path: Path) -> None:
    if shutil.which("wget", path=SYSTEM_PATH["PATH"]) is None:
        missing("wget (the datastore driver's fallback downloader)")
    bin_dir = tmp_path / "bin without curl"
    bin_dir.mkdir()
    for d in reversed(SYSTEM_PATH["PATH"].split(":")):
        for tool in Path(d).iterdir() if Path(d).is_dir() else ():
            if tool.name != "curl":
                (bin_dir / tool.name).unlink(missing_ok=True)
                (bin_dir / tool.name).symlink_to(tool)
    ds.env["PATH"] = str(bin_dir)
    data = os.urandom(MB + 1)
    web[1]["/wget.img.gz"] = gzip.compress(data)
    path, size = ds.stored("cp", path=f"{web[0]}/wget.img.gz")
    assert path.read_bytes() == data and size == 2
    web[1]["/wget-stat.img"] = bytes(3 * MB)
    assert ds.ok("stat", path=f"{web[0]}/wget-stat.img").stdout.strip() == "3"
    assert "cannot reach" in ds.failed("stat", path=f"http://127.0.0.1:{closed_port()}/x")
    error = ds.failed("cp", path=f"{web[0]}/missing.img")
    assert "cannot download" in error and "404" in error, error
