"""The tiny test guest (guest/build, guest/init) booted for real under qemu TCG: context CD
markers, disks (at boot and hotplugged), ACPI powerdown, and networking through a tap on a
bridge inside a network namespace. The context logic of guest/init is also run directly on
this machine's sh, which covers the variable fallbacks that a boot does not."""

from __future__ import annotations

import base64
import hashlib
import http.client
import os
import socket
import struct
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from drivers.netns import netns_socket
from tests.guest import Qemu, context_iso, guest_files, tool
from tests.strict import missing

INIT = Path(__file__).resolve().parents[2] / "guest" / "init"
BRIDGE_IP, GUEST_IP, GUEST_MAC = "10.214.0.1", "10.214.0.2", "02:00:0a:d6:00:02"


@pytest.fixture(scope="module")
def guest() -> tuple[Path, Path]:
    return guest_files()


def ssh_key() -> tuple[str, str]:
    """A fresh ed25519 public key line and ssh-keygen's fingerprint of it."""
    blob = struct.pack(">I", 11) + b"ssh-ed25519" + struct.pack(">I", 32) + os.urandom(32)
    fingerprint = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return f"ssh-ed25519 {base64.b64encode(blob).decode()} tester@nubo", f"SHA256:{fingerprint}"


def qemu_img(path: Path, size: str, fmt: str = "qcow2") -> Path:
    subprocess.run([tool("qemu-img", "qemu-utils"), "create", "-q", "-f", fmt, str(path), size],
                   check=True)
    return path


@pytest.mark.slow
def test_boot_reads_context_sees_disks_and_powers_off(tmp_path: Path,
                                                      guest: tuple[Path, Path]) -> None:
    token = uuid.uuid4().hex[:8]
    key, fingerprint = ssh_key()
    user_data = f"#nubo user data {token}\nsecond line\n"
    iso = context_iso(tmp_path, {
        "HOSTNAME": f"vm-{token}",
        "ETH0_IP": "10.214.0.9",
        "SSH_PUBLIC_KEY": key,
        "USER_DATA": base64.b64encode(user_data.encode()).decode(),
        "USER_DATA_ENCODING": "base64",
    })
    disk = qemu_img(tmp_path / "disk.qcow2", "64M")
    spare = qemu_img(tmp_path / "spare.raw", "32M", "raw")
    with Qemu(tmp_path, *guest, disk=disk, cdrom=iso) as vm:
        vm.start()
        vm.wait_for("NUBO-READY")
        assert vm.markers("NUBO-GUEST-START") == ["NUBO-GUEST-START"]
        assert vm.markers("NUBO-CONTEXT-FOUND") == [
            f"NUBO-CONTEXT-FOUND hostname=vm-{token} ip=10.214.0.9"]
        assert vm.markers("NUBO-SSH-KEY") == [f"NUBO-SSH-KEY {fingerprint}"]
        assert vm.markers("NUBO-USER-DATA") == [f"NUBO-USER-DATA #nubo user data {token}"]
        assert vm.markers("NUBO-NET-NONE") == ["NUBO-NET-NONE no eth0"]  # no NIC attached
        assert vm.markers("NUBO-NET-UP") == []
        assert vm.markers("NUBO-DISK") == ["NUBO-DISK /dev/vda 131072"]  # 64 MiB / 512
        assert vm.markers("NUBO-MODULE-FAILED") == []
        order = [line.split()[0] for line in vm.lines() if line.startswith("NUBO-")]
        assert order == ["NUBO-GUEST-START", "NUBO-DISK", "NUBO-CONTEXT-FOUND", "NUBO-SSH-KEY",
                         "NUBO-USER-DATA", "NUBO-NET-NONE", "NUBO-READY"]
        assert vm.qmp("query-status")["status"] == "running"

        vm.qmp("blockdev-add", driver="raw", **{"node-name": "spare"},
               file={"driver": "file", "filename": str(spare)})
        vm.qmp("device_add", driver="virtio-blk-pci", drive="spare", id="spare")
        assert vm.wait_for("NUBO-DISK /dev/vdb", 20) == "NUBO-DISK /dev/vdb 65536"
        vm.qmp("device_del", id="spare")
        assert vm.wait_for("NUBO-DISK-GONE", 20) == "NUBO-DISK-GONE /dev/vdb"

        started = time.monotonic()
        assert vm.powerdown(timeout=10) == 0
        assert time.monotonic() - started < 5
        assert [e["event"] for e in vm.events] == ["POWERDOWN"]


@pytest.mark.slow
def test_boot_without_context(tmp_path: Path, guest: tuple[Path, Path]) -> None:
    with Qemu(tmp_path, *guest) as vm:
        vm.start()
        vm.wait_for("NUBO-READY")
        assert vm.markers("NUBO-CONTEXT-NONE") == ["NUBO-CONTEXT-NONE"]
        assert vm.markers("NUBO-CONTEXT-FOUND") == vm.markers("NUBO-DISK") == []
        assert vm.markers("NUBO-NET-NONE") == ["NUBO-NET-NONE no address in the context"]
        assert vm.powerdown(timeout=10) == 0


def ip(*args: str) -> str:
    proc = subprocess.run([tool("ip", "iproute2"), *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


@pytest.fixture
def netns() -> Iterator[str]:
    """A namespace with bridge br0 (10.214.0.1/24) and tap0 on it, deleted afterwards."""
    if os.geteuid() != 0:
        missing("root (the test makes a network namespace)")
    name = f"nubo-t{os.getpid()}-guest"
    if Path("/run/netns", name).exists():
        ip("netns", "delete", name)  # left over from an interrupted run of this process
    ip("netns", "add", name)
    try:
        ip("-n", name, "link", "set", "lo", "up")
        ip("-n", name, "link", "add", "br0", "type", "bridge")
        ip("-n", name, "tuntap", "add", "tap0", "mode", "tap")
        ip("-n", name, "link", "set", "tap0", "master", "br0", "up")
        ip("-n", name, "addr", "add", f"{BRIDGE_IP}/24", "dev", "br0")
        ip("-n", name, "link", "set", "br0", "up")
        yield name
    finally:
        ip("netns", "delete", name)


def http_get(ns: str, address: str) -> tuple[int, str]:
    sock = netns_socket(ns, socket.AF_INET)
    sock.settimeout(5)
    sock.connect((address, 80))
    conn = http.client.HTTPConnection(address, 80, timeout=5)
    conn.sock = sock
    try:
        conn.request("GET", "/")
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


@pytest.mark.slow
def test_guest_network_through_tap_and_bridge(tmp_path: Path, guest: tuple[Path, Path],
                                              netns: str) -> None:
    ping = tool("ping", "iputils-ping")
    token = uuid.uuid4().hex[:8]
    iso = context_iso(tmp_path, {"SET_HOSTNAME": f"web-{token}", "HOSTNAME": "not-this-one",
                                 "ETH0_IP": GUEST_IP, "ETH0_MASK": "255.255.255.0",
                                 "IP_PUBLIC": "10.214.0.77"})
    with Qemu(tmp_path, *guest, cdrom=iso, tap="tap0", mac=GUEST_MAC, netns=netns) as vm:
        vm.start()
        assert vm.wait_for("NUBO-NET-UP") == f"NUBO-NET-UP ip={GUEST_IP}"
        vm.wait_for("NUBO-READY")
        assert vm.markers("NUBO-CONTEXT-FOUND") == [
            f"NUBO-CONTEXT-FOUND hostname=web-{token} ip={GUEST_IP}"]

        argv = [tool("ip", "iproute2"), "netns", "exec", netns, ping, "-c", "1", "-W", "1", GUEST_IP]
        deadline = time.monotonic() + 15
        while (result := subprocess.run(argv, capture_output=True, text=True)).returncode:
            assert time.monotonic() < deadline, f"no ping reply: {result.stdout}{result.stderr}"
        assert "1 received" in result.stdout
        assert GUEST_MAC in ip("-n", netns, "neigh", "show", GUEST_IP)

        status, page = http_get(netns, GUEST_IP)
        assert status == 200
        assert f"hello from web-{token}" in page
        assert vm.powerdown(timeout=10) == 0


def run_init(tmp_path: Path, context: str, script: str) -> subprocess.CompletedProcess[str]:
    """guest/init's functions on this machine's sh, with `context` as context.sh."""
    (tmp_path / "context.sh").write_text(context)
    return subprocess.run(["sh", "-c", f'. "$0"; {script}', str(INIT),
                           str(tmp_path / "context.sh"), str(tmp_path / "ctx")],
                          env={"PATH": os.environ["PATH"], "NUBO_INIT_LIB": "1"},
                          capture_output=True, text=True)


NETWORK = 'read_context "$1" "$2" && pick_network "$2"; ' \
          'echo "$? $NET_IP/$NET_PREFIX gw=$NET_GATEWAY dns=$NET_DNS"'


@pytest.mark.parametrize(("context", "expected"), [
    ("ETH0_IP=10.1.0.5\nETH0_MASK=255.255.255.0\nETH0_GATEWAY=10.1.0.1\nETH0_DNS='1.1.1.1 8.8.8.8'"
     "\nIP_PUBLIC=10.9.9.9\nNETMASK=255.0.0.0\nGATEWAY=10.9.9.1\n",
     "0 10.1.0.5/24 gw=10.1.0.1 dns=1.1.1.1 8.8.8.8"),
    ("IP_PUBLIC=10.9.9.9\nNETMASK=255.255.240.0\nGATEWAY=10.9.0.1\nDNS=10.9.0.53\n",
     "0 10.9.9.9/20 gw=10.9.0.1 dns=10.9.0.53"),
    ("ETH0_IP=10.1.0.5\nETH0_MASK=16\n", "0 10.1.0.5/16 gw= dns="),
    ("ETH0_IP=10.1.0.5\nETH0_MASK=/30\n", "0 10.1.0.5/30 gw= dns="),
    ("ETH0_IP=10.1.0.5\nETH0_MASK=255.255.255.255\n", "0 10.1.0.5/32 gw= dns="),
    ("ETH0_IP=10.1.0.5\nETH0_MASK=0.0.0.0\n", "0 10.1.0.5/0 gw= dns="),
    ("ETH0_IP=10.1.0.5\n", "0 10.1.0.5/24 gw= dns="),
    ("ETH0_IP=10.1.0.5\nETH0_MASK=255.0.255.0\n", "1 10.1.0.5/ gw= dns="),
    ("ETH0_IP=10.1.0.5\nETH0_MASK=255.255.255.1\n", "1 10.1.0.5/ gw= dns="),
    ("ETH0_IP=10.1.0.5\nETH0_MASK=33\n", "1 10.1.0.5/ gw= dns="),
    ("ETH0_IP=10.1.0.5\nETH0_MASK=abc\n", "1 10.1.0.5/ gw= dns="),
    ("HOSTNAME=x\n", "0 /24 gw= dns="),
])
def test_init_picks_network_from_context(tmp_path: Path, context: str, expected: str) -> None:
    result = run_init(tmp_path, context, NETWORK)
    assert result.stdout.strip() == expected, result.stderr


@pytest.mark.parametrize(("context", "expected"), [
    ("SET_HOSTNAME=first\nHOSTNAME=second\n", "first"),
    ("HOSTNAME=second\n", "second"),
    ("ETH0_IP=10.0.0.1\n", ""),
])
def test_init_picks_hostname(tmp_path: Path, context: str, expected: str) -> None:
    result = run_init(tmp_path, context, 'read_context "$1" "$2" && pick_hostname "$2"')
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected + "\n"


def test_init_decodes_user_data(tmp_path: Path) -> None:
    encoded = base64.b64encode(b"line one\nline two\n").decode()
    result = run_init(tmp_path, f"USER_DATA={encoded}\nUSER_DATA_ENCODING=base64\n",
                      'read_context "$1" "$2" && user_data "$2"')
    assert result.stdout == "line one\nline two\n", result.stderr
    result = run_init(tmp_path, "USER_DATA='plain $text'\n",
                      'read_context "$1" "$2" && user_data "$2"')
    assert result.stdout == "plain $text", result.stderr


def test_init_survives_a_broken_context(tmp_path: Path) -> None:
    """context.sh is sourced in a subshell: a syntax error or an exit cannot end PID 1."""
    result = run_init(tmp_path, "HOSTNAME=x\nif then fi (\n",
                      'read_context "$1" "$2"; echo "rc=$? still here"')
    assert result.stdout.startswith("rc=") and result.stdout != "rc=0 still here\n"
    assert result.stdout.endswith(" still here\n")
    result = run_init(tmp_path, "HOSTNAME=early\nexit 0\nHOSTNAME=late\n",
                      'read_context "$1" "$2"; pick_hostname "$2"; echo still here')
    assert result.stdout == "\nstill here\n"
