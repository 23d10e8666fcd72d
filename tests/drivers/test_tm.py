"""The transfer-manager drivers tm/ssh, tm/shared and tm/qcow2, run as the dispatcher runs
them (LocalRunner on the front-end, the VM document on stdin) against lab hosts, which the
scripts reach with plain ssh through the lab's ssh_config (NUBO_SSH_CONFIG).

Paths hold spaces and quotes on purpose: every one must reach the hosts' shells quoted.
The lab hosts share the front-end's filesystem, so results are read back from here, or on
the host over ssh where the check is about the host (blkid, qemu-img).
"""

from __future__ import annotations

import asyncio
import functools
import gzip
import http.server
import json
import os
import shlex
import shutil
import socket
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from drivers.lab import Lab, create_hosts
from drivers.runner import DriverResult, LocalRunner
from tests.drivers.conftest import REMOTES, SYSTEM_PATH
from tests.drivers.documents import Recorder, vm_document
from tests.strict import missing

pytestmark = pytest.mark.slow

FRONTEND = socket.gethostname()  # what core.dispatcher writes for the front-end
MB = 1024 * 1024
TOOLS = ("ssh", "nc", "qemu-img", "qemu-io", "genisoimage", "isoinfo", "blkid", "curl")


def need_tools() -> None:
    for tool in TOOLS:
        if shutil.which(tool) is None and shutil.which(tool, path="/usr/sbin:/sbin") is None:
            missing(f"{tool} (for the TM drivers)")


@dataclass
class Tm:
    lab: Lab
    runner: LocalRunner
    fe: Path  # a front-end datastore dir
    vm: dict[str, Path]  # a fresh VM dir per host name
    shared: Path  # a fresh dir on the shared store
    log: Recorder

    def __call__(self, driver: str, action: str, *args: str | Path) -> DriverResult:
        self.log = Recorder()
        return asyncio.run(self.runner.run("tm", driver, action, [str(a) for a in args],
                                           stdin=vm_document(7, [("h1", "/x")]), timeout=60,
                                           log=self.log))

    def ok(self, driver: str, action: str, *args: str | Path) -> DriverResult:
        result = self(driver, action, *args)
        assert result.ok, (result.rc, result.stderr)
        return result

    def on(self, host: str, *argv: str | Path) -> str:
        """A command run on a lab host over ssh; its stdout."""
        done = subprocess.run(["ssh", "-F", str(self.lab.ssh_config), host,  # noqa: S603, S607
                               shlex.join(str(a) for a in argv)],
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        return done.stdout


def tm_for(lab: Lab, tmp_path: Path) -> Tm:
    need_tools()
    tag = uuid.uuid4().hex[:6]
    runner = LocalRunner(REMOTES, env={**SYSTEM_PATH, "NUBO_SSH_CONFIG": str(lab.ssh_config)})
    fe = tmp_path / "fe store"
    fe.mkdir()
    vm = {h.name: h.datastores / "0" / f"vm {tag}'s dir" for h in lab.hosts}
    assert lab.shared_dir is not None
    return Tm(lab, runner, fe, vm, lab.shared_dir / f"ds {tag}", Recorder())


@pytest.fixture
def tm(lab: Lab, tmp_path: Path) -> Tm:
    return tm_for(lab, tmp_path)


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """An http server on loopback (the front-end downloads) and the dir it serves."""
    root = tmp_path_factory.mktemp("web")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def image(path: Path, size: int = MB) -> bytes:
    data = os.urandom(size)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


def qemu_info(tm: Tm, host: str, path: Path) -> dict[str, object]:
    info: dict[str, object] = json.loads(tm.on(host, "qemu-img", "info", "-U", "--output=json",
                                               path))
    return info


# --- ssh: clone and ln ----------------------------------------------------------------------


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("source", ["path", "http"])
def test_ssh_clone_from_a_path_or_url_gzip_found_by_its_magic(
        tm: Tm, web: tuple[str, Path], source: str, compressed: bool) -> None:
    data = os.urandom(MB + 123)
    stored = gzip.compress(data) if compressed else data
    name = f"{uuid.uuid4().hex[:6]} image.raw"  # no .gz: the content says it
    if source == "path":
        (tm.fe / name).write_bytes(stored)
        src = f"{FRONTEND}:{tm.fe / name}"
    else:
        (web[1] / name).write_bytes(stored)
        src = f"{web[0]}/{name.replace(' ', '%20')}"
    disk = tm.vm["h1"] / "disk.0"
    tm.ok("ssh", "clone", src, f"h1:{disk}")
    assert disk.read_bytes() == data
    if compressed:
        assert any("gzip-compressed: decompressing" in m for m in tm.log.messages("I"))
    assert not list(disk.parent.glob(".nubo-tm.*"))  # the unpack dir is gone


def test_ssh_clone_grows_raw_and_qcow2_to_size_and_never_shrinks(tm: Tm) -> None:
    raw = tm.fe / "small.raw"
    data = image(raw)
    tm.ok("ssh", "clone", f"{FRONTEND}:{raw}", f"h1:{tm.vm['h1']}/disk.0", "8")
    grown = (tm.vm["h1"] / "disk.0").read_bytes()
    assert len(grown) == 8 * MB and grown[:MB] == data and grown[MB:] == bytes(7 * MB)
    tm.ok("ssh", "clone", f"{FRONTEND}:{raw}", f"h1:{tm.vm['h1']}/disk.1", "0")
    assert (tm.vm["h1"] / "disk.1").stat().st_size == MB

    qcow = tm.fe / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(qcow), "4M"],  # noqa: S603, S607
                   check=True)
    tm.ok("ssh", "clone", f"{FRONTEND}:{qcow}", f"h2:{tm.vm['h2']}/disk.0", "16")
    info = qemu_info(tm, "h2", tm.vm["h2"] / "disk.0")
    assert (info["format"], info["virtual-size"]) == ("qcow2", 16 * MB)
    assert qemu_info(tm, "h2", qcow)["virtual-size"] == 4 * MB  # the source is untouched


def test_ssh_ln_copies_like_clone(tm: Tm) -> None:
    data = image(tm.fe / "persistent.raw")
    disk = tm.vm["h2"] / "disk.3"
    tm.ok("ssh", "ln", f"{FRONTEND}:{tm.fe / 'persistent.raw'}", f"h2:{disk}")
    assert disk.read_bytes() == data and not disk.is_symlink()


# --- mkswap, mkimage, context ---------------------------------------------------------------


def test_mkswap_makes_a_sparse_swap_file(tm: Tm) -> None:
    disk = tm.vm["h1"] / "disk.1"
    tm.ok("ssh", "mkswap", "64", f"h1:{disk}")
    assert tm.on("h1", "blkid", "-o", "value", "-s", "TYPE", disk).strip() == "swap"
    assert disk.stat().st_size == 64 * MB
    assert disk.stat().st_blocks * 512 < MB  # sparse


@pytest.mark.parametrize("driver", ["ssh", "shared"])
def test_mkimage_ext4_raw_and_qcow2(tm: Tm, driver: str) -> None:
    base = tm.vm["h2"] if driver == "ssh" else tm.shared
    tm.ok(driver, "mkimage", "32", "ext4", f"h2:{base}/disk.0")
    assert tm.on("h2", "blkid", "-o", "value", "-s", "TYPE", base / "disk.0").strip() == "ext4"
    tm.ok(driver, "mkimage", "16", "raw", f"h2:{base}/disk.1")
    raw = base / "disk.1"
    assert raw.stat().st_size == 16 * MB and raw.stat().st_blocks == 0
    tm.ok(driver, "mkimage", "48", "qcow2", f"h2:{base}/disk.2")
    info = qemu_info(tm, "h2", base / "disk.2")
    assert (info["format"], info["virtual-size"]) == ("qcow2", 48 * MB)


def test_mkimage_with_an_unknown_filesystem_says_so(tm: Tm) -> None:
    result = tm("ssh", "mkimage", "8", "nofs", f"h1:{tm.vm['h1']}/disk.0")
    assert result.rc != 0 and result.error.endswith("mkfs.nofs not found"), result.error


def isoinfo(iso: Path, *args: str) -> str:
    return subprocess.run(["isoinfo", "-i", str(iso), *args], check=True,  # noqa: S603, S607
                          capture_output=True, text=True).stdout


def test_context_cd_holds_context_sh_and_the_files(tm: Tm) -> None:
    context = tm.fe / "vms" / "context.sh"
    context.parent.mkdir()
    context.write_text("# Context variables generated by Nubo\nHOSTNAME='vm-7'\n")
    key = tm.fe / "id key.pub"
    key.write_text("ssh-ed25519 AAAA user@x\n")
    script = tm.fe / "init.sh"
    script.write_text("#!/bin/sh\necho hello\n")
    iso = tm.vm["h1"] / "disk.2"
    tm.ok("ssh", "context", context, key, script, f"h1:{iso}")
    assert "Volume id: CONTEXT" in isoinfo(iso, "-d")
    assert isoinfo(iso, "-J", "-x", "/context.sh") == context.read_text()
    assert isoinfo(iso, "-J", "-x", "/id key.pub") == key.read_text()
    assert isoinfo(iso, "-R", "-x", "/init.sh") == script.read_text()


# --- mv, mvds, cpds, delete -----------------------------------------------------------------


def test_mv_between_hosts_then_to_the_front_end_and_back(tm: Tm) -> None:
    h1, h2 = tm.vm["h1"], tm.vm["h2"]
    data = image(h1 / "disk.0")
    (h1 / "deployment.0").write_text("<domain/>\n")
    tm.ok("ssh", "mkswap", "8", f"h1:{h1}/disk.1")  # a sparse one
    # as core.transfers.mv_lines: each disk, then the VM dir
    for disk in ("disk.0", "disk.1"):
        tm.ok("ssh", "mv", f"h1:{h1}/{disk}", f"h2:{h2}/{disk}")
    tm.ok("ssh", "mv", f"h1:{h1}", f"h2:{h2}")
    assert not h1.exists()
    assert (h2 / "disk.0").read_bytes() == data
    assert (h2 / "deployment.0").read_text() == "<domain/>\n"
    assert (h2 / "disk.1").stat().st_blocks * 512 < MB  # still sparse

    parked = tm.fe / "0" / "7"
    tm.ok("ssh", "mv", f"h2:{h2}", f"{FRONTEND}:{parked}")
    assert not h2.exists() and (parked / "disk.0").read_bytes() == data
    tm.ok("ssh", "mv", f"{FRONTEND}:{parked}", f"h1:{h1}")
    assert not parked.exists() and (h1 / "disk.0").read_bytes() == data

    tm.ok("ssh", "mv", f"h1:{h1}", f"h1:{h1}")  # same place: nothing to do
    assert (h1 / "disk.0").read_bytes() == data
    tm.ok("ssh", "mv", f"h2:{h2}", f"h1:{h1}")  # a retried step: moved already
    assert "moved already" in " ".join(tm.log.messages("I"))


def test_mv_of_one_path_seen_by_both_ends_moves_nothing(tm: Tm) -> None:
    # The lab's hosts share the front-end's filesystem: h1:X and h2:X are one directory,
    # as an NFS store would be. A copy-then-delete would lose it.
    vmdir = tm.vm["h1"]
    data = image(vmdir / "disk.0")
    tm.ok("ssh", "mv", f"h1:{vmdir}", f"h2:{vmdir}")
    assert (vmdir / "disk.0").read_bytes() == data
    assert "one shared store: nothing to move" in " ".join(tm.log.messages("I"))
    assert not list(vmdir.glob(".nubo-mv-*"))


@pytest.mark.parametrize("action", ["mvds", "cpds"])
def test_ssh_mvds_and_cpds_bring_the_hosts_bytes_back(tm: Tm, action: str) -> None:
    source = tm.fe / "images" / "saved disk.raw"
    image(source)
    disk = tm.vm["h2"] / "disk.0"
    tm.ok("ssh", "clone", f"{FRONTEND}:{source}", f"h2:{disk}")
    tm.on("h2", "sh", "-c", 'printf "written on h2" | dd of="$1" conv=notrunc status=none',
          "sh", disk)
    changed = disk.read_bytes()
    tm.ok("ssh", action, f"h2:{disk}", source)
    assert source.read_bytes() == changed and changed.startswith(b"written on h2")
    assert disk.exists() == (action == "cpds")


def test_delete_removes_the_path_and_refuses_root_and_relative_paths(tm: Tm) -> None:
    vmdir = tm.vm["h1"]
    image(vmdir / "disk.0")
    tm.ok("ssh", "delete", f"h1:{vmdir}/disk.0")
    assert not (vmdir / "disk.0").exists() and vmdir.exists()
    tm.ok("ssh", "delete", f"h1:{vmdir}")
    assert not vmdir.exists()
    tm.ok("ssh", "delete", f"h1:{vmdir}")  # gone already: fine
    for bad in ("/", "//", "/.", "relative/dir", f"{vmdir}/../.."):
        result = tm("ssh", "delete", f"h1:{bad}")
        assert result.rc != 0 and result.error.startswith("refusing the path"), result.error


# --- failures -------------------------------------------------------------------------------


def test_missing_source_fails_with_the_drivers_message(tm: Tm) -> None:
    missing_image = tm.fe / "no such.raw"
    result = tm("ssh", "clone", f"{FRONTEND}:{missing_image}", f"h1:{tm.vm['h1']}/disk.0")
    assert result.rc == 1
    assert result.error == f"the source {missing_image} does not exist on the front-end"
    shared = tm("shared", "clone", f"{FRONTEND}:{missing_image}", f"h1:{tm.shared}/disk.0")
    assert shared.rc == 1 and shared.error.endswith(
        f"{missing_image} does not exist on this host (is the datastore shared?)")
    result = tm("ssh", "clone", "http://127.0.0.1:9/nothing.raw", f"h1:{tm.vm['h1']}/disk.0")
    assert result.rc != 0 and result.error.startswith(
        "cannot download http://127.0.0.1:9/nothing.raw: curl: (7)"), result.error


def test_unreachable_host_fails_with_the_drivers_message(tmp_path: Path) -> None:
    try:
        lab = create_hosts(1, tmp_path / "lab", prefix=f"nubo-t{os.getpid()}-tm", shared=True)
    except Exception as exc:  # noqa: BLE001
        missing(f"a second namespace lab ({exc})")
    try:
        tm = tm_for(lab, tmp_path)
        lab.host("h1").stop_sshd()  # never used before: no ssh master to keep it reachable
        data = tm.fe / "a.raw"
        image(data)
        disk = tm.vm["h1"] / "disk.0"
        for args, expected in (
            (("clone", f"{FRONTEND}:{data}", f"h1:{disk}"), f"cannot write h1:{disk}"),
            (("delete", f"h1:{disk}"), f"cannot delete h1:{disk}"),
            (("mvds", f"h1:{disk}", data), f"cannot look at h1:{disk}"),
        ):
            result = tm("ssh", *args)
            assert result.rc == 1
            assert result.error == (f"{expected}: cannot reach host h1: proxy dialer did "
                                    "not pass back a connection"), result.error
    finally:
        lab.destroy()


# --- shared -----------------------------------------------------------------------------------


def test_shared_clone_copies_on_the_host_from_the_shared_store(tm: Tm) -> None:
    data = os.urandom(MB)
    packed = tm.shared / "images" / "packed.img"
    packed.parent.mkdir(parents=True)
    packed.write_bytes(gzip.compress(data))
    disk = tm.shared / "0" / "7" / "disk.0"
    tm.ok("shared", "clone", f"{FRONTEND}:{packed}", f"h1:{disk}", "4")
    content = disk.read_bytes()
    assert content[:MB] == data and len(content) == 4 * MB
    assert "on the host" in " ".join(tm.log.messages("I"))


def test_shared_clone_of_a_url_is_fetched_by_the_front_end(tm: Tm,
                                                          web: tuple[str, Path]) -> None:
    data = image(web[1] / "remote.raw")
    disk = tm.shared / "0" / "7" / "disk.0"
    tm.ok("shared", "clone", f"{web[0]}/remote.raw", f"h2:{disk}")
    assert disk.read_bytes() == data


def test_shared_ln_links_and_mvds_of_a_link_keeps_the_image(tm: Tm) -> None:
    source = tm.shared / "images" / "persistent.raw"
    data = image(source)
    disk = tm.shared / "0" / "7" / "disk.0"
    tm.ok("shared", "ln", f"{FRONTEND}:{source}", f"h1:{disk}")
    assert disk.is_symlink() and os.readlink(disk) == str(source)
    tm.ok("shared", "cpds", f"h1:{disk}", source)
    tm.ok("shared", "mvds", f"h1:{disk}", source)
    assert not disk.exists() and not disk.is_symlink() and source.read_bytes() == data


@pytest.mark.parametrize("action", ["mvds", "cpds"])
def test_shared_mvds_and_cpds_on_the_host(tm: Tm, action: str) -> None:
    source = tm.shared / "images" / "os.raw"
    image(source)
    disk = tm.shared / "0" / "7" / "disk.0"
    tm.ok("shared", "clone", f"{FRONTEND}:{source}", f"h2:{disk}")
    with disk.open("r+b") as f:
        f.write(b"changed")
    changed = disk.read_bytes()
    tm.ok("shared", action, f"h2:{disk}", source)
    assert source.read_bytes() == changed and disk.exists() == (action == "cpds")


def test_shared_mv_moves_nothing_on_the_store_and_delete_removes(tm: Tm) -> None:
    vmdir = tm.shared / "0" / "7"
    data = image(vmdir / "disk.0")
    for src, dst in (("h1", "h2"), ("h2", FRONTEND), (FRONTEND, "h1")):
        tm.ok("shared", "mv", f"{src}:{vmdir}/disk.0", f"{dst}:{vmdir}/disk.0")
        tm.ok("shared", "mv", f"{src}:{vmdir}", f"{dst}:{vmdir}")
        assert (vmdir / "disk.0").read_bytes() == data
    tm.ok("shared", "delete", f"h1:{vmdir}")
    assert not vmdir.exists()


def test_shared_context_and_mkswap(tm: Tm) -> None:
    context = tm.fe / "context.sh"
    context.write_text("ETH0_IP='10.0.0.7'\n")
    tm.ok("shared", "context", context, f"h2:{tm.shared}/0/7/disk.1")
    assert isoinfo(tm.shared / "0" / "7" / "disk.1", "-J", "-x", "/context.sh") == \
        context.read_text()
    tm.ok("shared", "mkswap", "8", f"h2:{tm.shared}/0/7/disk.2")
    assert tm.on("h2", "blkid", "-o", "value", "-s", "TYPE",
                 tm.shared / "0" / "7" / "disk.2").strip() == "swap"


# --- qcow2 ------------------------------------------------------------------------------------


def test_qcow2_clone_is_an_overlay_and_mvds_converts_back(tm: Tm) -> None:
    source = tm.shared / "images" / "base image.raw"
    data = image(source, 4 * MB)
    disk = tm.shared / "0" / "7" / "disk.0"
    tm.ok("qcow2", "clone", f"{FRONTEND}:{source}", f"h1:{disk}", "8")
    info = qemu_info(tm, "h1", disk)
    assert (info["format"], info["virtual-size"]) == ("qcow2", 8 * MB)
    assert (info["backing-filename"], info["backing-filename-format"]) == (str(source), "raw")
    assert disk.stat().st_size < MB  # copy-on-write: no data copied
    tm.on("h1", "qemu-io", "-f", "qcow2", "-c", "write -P 0x61 0 4k", disk)
    assert source.read_bytes() == data  # the base image is never written

    tm.ok("qcow2", "cpds", f"h1:{disk}", source)
    saved = source.read_bytes()
    assert saved[:4096] == b"a" * 4096 and saved[4096:4 * MB] == data[4096:]
    assert qemu_info(tm, "h1", source)["format"] == "raw"
    tm.ok("qcow2", "mvds", f"h1:{disk}", source)
    assert not disk.exists() and source.read_bytes()[:4096] == b"a" * 4096


def test_qcow2_clone_of_a_qcow2_base_names_its_format(tm: Tm) -> None:
    source = tm.shared / "images" / "base.qcow2"
    source.parent.mkdir(parents=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(source), "16M"],  # noqa: S603, S607
                   check=True)
    disk = tm.shared / "0" / "8" / "disk.0"
    tm.ok("qcow2", "clone", f"{FRONTEND}:{source}", f"h2:{disk}")
    info = qemu_info(tm, "h2", disk)
    assert info["backing-filename-format"] == "qcow2" and info["virtual-size"] == 16 * MB
    tm.ok("qcow2", "mvds", f"h2:{disk}", source)
    assert qemu_info(tm, "h2", source)["format"] == "qcow2" and not disk.exists()
