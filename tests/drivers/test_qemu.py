"""vmm/qemu on a lab host: the real guest (tests/guest.py) booted under qemu by the driver,
reached over SSH through drivers.runner exactly as the daemon reaches it.

Every action is checked against the guest and the host, not against the driver's word:
the serial console's markers, QMP on the VM's socket, the process table, the tap device."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import pytest

from drivers.runner import DriverResult, SshRunner
from tests.drivers.conftest import REMOTES
from tests.guest import context_iso, guest_files_in

sys.path.insert(0, str(REMOTES / "lib"))
import qemu_driver  # noqa: E402

pytestmark = pytest.mark.slow
BOOT_TIMEOUT = 60.0


class Guest:
    """One VM of the test: its id, directory on the host and the document the driver reads."""

    def __init__(self, lab: Any, host: str, vmid: int, kernel: Path, initrd: Path,
                 context: dict[str, str], nics: list[dict[str, str]] = (),  # type: ignore[assignment]
                 accel: str = "tcg") -> None:
        self.lab, self.host, self.id = lab, host, vmid
        self.location = lab.host(host).datastores
        self.dir = self.location / "0" / str(vmid)
        self.dir.mkdir(parents=True, exist_ok=True)
        iso = context_iso(self.dir / "context-build", context)
        iso.rename(self.dir / "disk.0")  # the CD's place in the VM dir (CONTEXT/DISK_ID 0)
        self.kernel, self.initrd = kernel, initrd
        self.nics = nics
        self.accel = accel
        self.disks: list[dict[str, str]] = []
        self.placements = 1  # HISTORY records in the document, all at `location`
        self.extra = ""  # more top-level elements (MIGR_URI)

    def document(self) -> bytes:
        vectors = "".join(
            f"<{tag}>" + "".join(f"<{k}>{escape(v)}</{k}>" for k, v in values.items()) + f"</{tag}>"
            for tag, values in [("OS", {"KERNEL": str(self.kernel), "INITRD": str(self.initrd),
                                        "KERNEL_CMD": "console=ttyS0 quiet panic=-1"}),
                                ("CONTEXT", {"DISK_ID": "0"}),
                                *[("DISK", d) for d in self.disks],
                                *[("NIC", n) for n in self.nics]])
        return (f"<VM><ID>{self.id}</ID><TEMPLATE><MEMORY>128</MEMORY><VCPU>1</VCPU>"
                f"<QEMU_ACCEL>{self.accel}</QEMU_ACCEL>{vectors}</TEMPLATE><HISTORY_RECORDS>"
                + f"<HISTORY><DS_LOCATION>{self.location}</DS_LOCATION></HISTORY>"
                * self.placements + f"</HISTORY_RECORDS>{self.extra}</VM>").encode()

    def console(self) -> str:
        try:
            return (self.dir / "console.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for(self, marker: str, count: int = 1, timeout: float = BOOT_TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        while self.console().count(marker) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"no {marker!r} (x{count}) in {timeout:g} s; console:\n"
                                     + self.console()[-2000:])
            time.sleep(0.1)
        return self.console()

    def pid(self, host: str = "") -> int | None:
        return qemu_driver.pid_of(qemu_driver.Runtime(str(self.dir), host or self.host))

    def qmp(self, command: str, **arguments: Any) -> Any:
        client = qemu_driver.Qmp(qemu_driver.Runtime(str(self.dir), self.host))
        try:
            return client.execute(command, **arguments)
        finally:
            client.close()

    def kill(self) -> None:
        pid = self.pid()
        if pid is not None:
            os.kill(pid, 9)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The guest's kernel and initrd where lab hosts see them (their home is their own)."""
    return guest_files_in(tmp_path_factory.mktemp("guest-images"))


@pytest.fixture
def guests() -> Iterator[list[Guest]]:
    made: list[Guest] = []
    yield made
    for guest in made:  # whatever a failed test left running
        guest.kill()


def run(lab: Any, remotes: Path, guest: Guest, action: str, *args: str,
        on: str = "") -> DriverResult:
    """One action over SSH on the guest's host (or host `on`), as the dispatcher runs it."""
    host = on or guest.host

    async def go() -> DriverResult:
        access = lab.access(host, remote_dir=f"{lab.host(host).dir}/remote")
        runner = SshRunner.from_access(host, access, remotes_dir=remotes)
        try:
            result: DriverResult = await runner.run(
                "vmm", "qemu", action, [*args, host, str(guest.id), host],
                stdin=guest.document(), timeout=120)
            return result
        finally:
            await runner.close()

    return asyncio.run(go())


def deploy(lab: Any, remotes: Path, guest: Guest) -> None:
    result = run(lab, remotes, guest, "deploy", f"{guest.dir}/deployment.0")
    assert result.ok, result.stderr
    assert result.stdout.strip().splitlines()[-1] == f"one-{guest.id}"


def poll(lab: Any, remotes: Path, guest: Guest) -> dict[str, str]:
    result = run(lab, remotes, guest, "poll", f"one-{guest.id}")
    assert result.ok, result.stderr
    return dict(token.split("=", 1) for token in result.stdout.split())


def new_guest(lab: Any, guests: list[Guest], images: tuple[Path, Path], host: str = "h1",
              **kw: Any) -> Guest:
    vmid = 900 + len(guests) + int(uuid.uuid4().int % 90) * 10
    context = {"HOSTNAME": f"vm{vmid}", "ETH0_IP": "10.215.0.2", "ETH0_MASK": "255.255.255.0"}
    guest = Guest(lab, host, vmid, *images, context, **kw)
    guests.append(guest)
    return guest


def test_lifecycle_on_a_lab_host(lab: Any, remotes: Path, images: tuple[Path, Path],
                                 guests: list[Guest]) -> None:
    guest = new_guest(lab, guests, images)
    deploy(lab, remotes, guest)
    console = guest.wait_for("NUBO-READY")
    assert f"NUBO-CONTEXT-FOUND hostname=vm{guest.id}" in console
    assert poll(lab, remotes, guest)["STATE"] == "a"
    shown = run(lab, remotes, guest, "console", f"one-{guest.id}")  # read over ssh
    assert shown.ok and "NUBO-READY" in shown.stdout
    assert shown.stdout.replace("\r\n", "\n") in guest.console()  # raw CRLF, as typed
    first_pid = guest.pid()
    assert first_pid is not None

    assert run(lab, remotes, guest, "reboot", f"one-{guest.id}").ok
    guest.wait_for("NUBO-GUEST-START", count=2)
    guest.wait_for("NUBO-READY", count=2)
    assert guest.pid() == first_pid  # a reset, not a new process

    checkpoint = f"{guest.dir}/checkpoint"
    saved = run(lab, remotes, guest, "save", f"one-{guest.id}", checkpoint)
    assert saved.ok, saved.stderr
    assert guest.pid() is None and Path(checkpoint).stat().st_size > 1_000_000
    assert poll(lab, remotes, guest)["STATE"] == "d"

    restored = run(lab, remotes, guest, "restore", checkpoint)
    assert restored.ok, restored.stderr
    assert guest.qmp("query-status")["status"] == "running"
    assert not Path(checkpoint).exists()
    assert poll(lab, remotes, guest)["STATE"] == "a"

    started = time.monotonic()
    down = run(lab, remotes, guest, "shutdown", f"one-{guest.id}")
    assert down.ok, down.stderr
    assert guest.pid() is None
    assert time.monotonic() - started < 20  # the guest took the ACPI power button
    assert "forcing it off" not in down.stderr
    assert poll(lab, remotes, guest)["STATE"] == "d"


def test_disk_hotplug_and_cancel(lab: Any, remotes: Path, images: tuple[Path, Path],
                                 guests: list[Guest]) -> None:
    guest = new_guest(lab, guests, images)
    deploy(lab, remotes, guest)
    guest.wait_for("NUBO-READY")
    disk = guest.dir / "disk.1"
    with open(disk, "wb") as f:
        f.truncate(8 * 1024 * 1024)
    guest.disks.append({"DISK_ID": "1", "TARGET": "vdb", "TYPE": "fs"})
    for _ in range(2):  # idempotent: a step that runs again after a crash
        attached = run(lab, remotes, guest, "attach_disk", f"one-{guest.id}", str(disk), "vdb",
                       "1")
        assert attached.ok, attached.stderr
    assert "'disk1'" in str(guest.qmp("query-pci"))
    for _ in range(2):
        detached = run(lab, remotes, guest, "detach_disk", f"one-{guest.id}", str(disk), "vdb",
                       "1")
        assert detached.ok, detached.stderr
    assert "'disk1'" not in str(guest.qmp("query-pci"))

    assert run(lab, remotes, guest, "cancel", f"one-{guest.id}").ok
    assert guest.pid() is None
    assert run(lab, remotes, guest, "cancel", f"one-{guest.id}").ok  # nothing left: fine


def test_nic_on_a_host_bridge(lab: Any, remotes: Path, images: tuple[Path, Path],
                              guests: list[Guest]) -> None:
    """A tap on the host's bridge; the guest takes its address from the context CD."""
    netns = lab.host("h2").netns
    bridge = f"nbr{uuid.uuid4().hex[:6]}"
    ip = ["ip", "-n", netns]
    subprocess.run([*ip, "link", "add", bridge, "type", "bridge"], check=True)
    try:
        subprocess.run([*ip, "addr", "add", "10.215.0.1/24", "dev", bridge], check=True)
        subprocess.run([*ip, "link", "set", bridge, "up"], check=True)
        guest = new_guest(lab, guests, images, host="h2",
                          nics=[{"NIC_ID": "0", "BRIDGE": bridge, "MAC": "02:00:0a:d7:00:02"}])
        deploy(lab, remotes, guest)
        guest.wait_for("NUBO-NET-UP ip=10.215.0.2")
        tap = qemu_driver.tap_name(str(guest.id), "0")
        shown = subprocess.run([*ip, "link", "show", tap], capture_output=True, text=True)
        assert f"master {bridge}" in shown.stdout, shown.stdout + shown.stderr
        ping = subprocess.run(["ip", "netns", "exec", netns, "ping", "-c", "1", "-W", "5",
                               "10.215.0.2"], capture_output=True, text=True)
        assert ping.returncode == 0, ping.stdout + ping.stderr
        assert int(poll(lab, remotes, guest)["NETRX"]) > 0
        assert run(lab, remotes, guest, "cancel", f"one-{guest.id}").ok
        gone = subprocess.run([*ip, "link", "show", tap], capture_output=True, text=True)
        assert gone.returncode != 0  # the tap went with the VM
    finally:
        subprocess.run([*ip, "link", "del", bridge], check=False)


def test_deploy_failures_are_explained(lab: Any, remotes: Path, images: tuple[Path, Path],
                                       guests: list[Guest], tmp_path: Path) -> None:
    guest = new_guest(lab, guests, (tmp_path / "no-such-kernel", images[1]))
    result = run(lab, remotes, guest, "deploy", f"{guest.dir}/deployment.0")
    assert not result.ok
    assert "no-such-kernel" in result.error and guest.pid() is None
    guest = new_guest(lab, guests, images, nics=[{"NIC_ID": "0", "BRIDGE": "nosuchbr"}])
    result = run(lab, remotes, guest, "deploy", f"{guest.dir}/deployment.0")
    assert not result.ok and "bridge nosuchbr does not exist" in result.error
    missing = run(lab, remotes, new_guest(lab, guests, images), "reboot", "one-1")
    assert not missing.ok and "is not running" in missing.error


def test_live_migration_between_two_lab_hosts(lab: Any, remotes: Path,
                                              images: tuple[Path, Path],
                                              guests: list[Guest]) -> None:
    """The VM dir is the same files on both hosts (the lab's hosts share a filesystem), as
    on shared storage: h2 receives, h1 sends, and the guest goes on without a reboot. Its
    runtime files are named per host, so the two qemu processes never share a socket."""
    guest = new_guest(lab, guests, images, host="h1")
    deploy(lab, remotes, guest)
    guest.wait_for("NUBO-READY")
    guest.placements = 2  # h1's placement, then h2's, both at the same location

    refused = run(lab, remotes, guest, "migrate", f"one-{guest.id}", "h2")
    assert not refused.ok and "MIGR_URI" in refused.error
    received = run(lab, remotes, guest, "migrate_receive", f"one-{guest.id}", "h1", on="h2")
    assert received.ok, received.stderr
    port = received.stdout.strip().splitlines()[-1].removeprefix("PORT=")
    assert port.isdigit() and guest.pid("h2") is not None and guest.pid("h1") is not None
    # a dead end first: nothing listens there, and the guest stays where it is
    guest.extra = "<MIGR_URI>tcp:127.0.0.1:9</MIGR_URI>"
    failed = run(lab, remotes, guest, "migrate", f"one-{guest.id}", "h2")
    assert not failed.ok and "migrating" in failed.error
    assert guest.qmp("query-status")["status"] == "running"

    guest.extra = f"<MIGR_URI>tcp:{lab.host('h2').address}:{port}</MIGR_URI>"
    sent = run(lab, remotes, guest, "migrate", f"one-{guest.id}", "h2")
    assert sent.ok, sent.stderr
    assert guest.pid("h1") is None and guest.pid("h2") is not None
    guest.host = "h2"
    assert guest.qmp("query-status")["status"] == "running"
    assert poll(lab, remotes, guest)["STATE"] == "a"
    assert guest.console().count("NUBO-GUEST-START") == 1  # moved, not booted again
    assert run(lab, remotes, guest, "reboot", f"one-{guest.id}").ok
    guest.wait_for("NUBO-READY", count=2)  # the guest lives on h2
    assert run(lab, remotes, guest, "cancel", f"one-{guest.id}").ok
    assert guest.pid("h2") is None
