"""The qemu VMM driver (vmm/qemu): one qemu process per VM, driven over QMP. Standard library
only, Python 3.8+: it runs on the hosts.

Actions, with their arguments before the appended `<vmid> <host>` (the VM's XML on stdin):
  deploy <deployment file> <host>        start qemu; prints the deploy id `one-<vmid>`
  shutdown <deploy_id> <host>            ACPI power button, then force after SHUTDOWN_TIMEOUT
  cancel <deploy_id> <host>              stop qemu at once
  reboot | reset <deploy_id> <host>      reset the machine (QMP system_reset)
  save <deploy_id> <checkpoint> <host>   memory to the checkpoint file, then stop qemu
  restore <checkpoint> <host>            start qemu again from the checkpoint
  poll <deploy_id> <host>                STATE=a|p|e|d USEDCPU USEDMEMORY NETRX NETTX
  console <deploy_id> <host>             the last 64 KB of the serial console (Nubo's own
                                         action: the monitor keeps a copy on the front-end)
  attach_disk | detach_disk <deploy_id> <path> <target> <disk_id>   hotplug (virtio)

Files in the VM's directory (the deployment file's, or <DS_LOCATION>/0/<vmid>):
  disk.<id>          the disks (the transfer manager made them; the context CD is one)
  deployment.<seq>   the qemu command line deploy ran (JSON), which restore runs again
  qmp.sock           QMP; qemu.pid the process; console.log the serial console
  checkpoint         save's memory image

VM template attributes read: MEMORY (MB), CPU, VCPU, OS = [KERNEL, INITRD, KERNEL_CMD,
ROOT, BOOT], DISK (DISK_ID, TARGET, TYPE, DRIVER/FORMAT, READONLY), CONTEXT (DISK_ID),
NIC (NIC_ID, BRIDGE, MAC, MODEL), and QEMU_ACCEL = kvm | tcg | auto (also NUBO_QEMU_ACCEL
in the environment). `auto` takes KVM only when /dev/kvm is usable and the CPU has
hardware virtualisation (vmx/svm): a /dev/kvm without them (nested PVM guests) cannot boot
stock kernels, so TCG is the safe choice there.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from typing import Any

ERROR_BEGIN = "ERROR MESSAGE --8<------"
ERROR_END = "ERROR MESSAGE ------>8--"
DEFAULT_DS_LOCATION = "/var/lib/one/datastores"
QEMU = os.environ.get("NUBO_QEMU", "qemu-system-x86_64")
SHUTDOWN_TIMEOUT = float(os.environ.get("NUBO_SHUTDOWN_TIMEOUT", "60"))
QMP_TIMEOUT = 30.0
_SAFE_TAP = re.compile(r"[^A-Za-z0-9_.-]")


class DriverError(Exception):
    """The action fails with this message in the error block."""


def log(message: str) -> None:
    sys.stderr.write(f"INFO: qemu: {message}\n")


def main(action: str) -> None:
    sys.dont_write_bytecode = True
    try:
        out = ACTIONS[action](sys.argv[1:], _document())
    except DriverError as exc:
        _fail(str(exc))
    except OSError as exc:  # a socket or file the action needed
        _fail(f"qemu: {action}: {exc}")
    if out:
        print(out)


def _fail(message: str) -> None:
    sys.stderr.write(f"{ERROR_BEGIN}\n{message}\n{ERROR_END}\n")
    sys.exit(1)


# --- the VM document -----------------------------------------------------------------------


class Vm:
    def __init__(self, doc: ET.Element, vmid: str) -> None:
        self.doc = doc
        self.id = (doc.findtext("ID") or vmid).strip()
        found = doc.find("TEMPLATE")
        self.tmpl: ET.Element = found if found is not None else ET.Element("TEMPLATE")

    def get(self, name: str, default: str = "") -> str:
        found = self.tmpl.find(name)
        if found is None or len(found):
            return default
        return (found.text or "").strip() or default

    def vectors(self, name: str) -> list[dict[str, str]]:
        return [{c.tag.upper(): (c.text or "").strip() for c in v}
                for v in self.tmpl.findall(name) if len(v)]

    def vector(self, name: str) -> dict[str, str]:
        found = self.vectors(name)
        return found[0] if found else {}

    def directory(self) -> str:
        records = self.doc.findall("HISTORY_RECORDS/HISTORY")
        location = (records[-1].findtext("DS_LOCATION") or "").strip() if records else ""
        return os.path.join(location or DEFAULT_DS_LOCATION, "0", self.id)


def _document() -> ET.Element:
    data = sys.stdin.buffer.read() if sys.stdin is not None else b""
    if not data.strip():
        raise DriverError("qemu: the VM document is missing on stdin")
    try:
        return ET.fromstring(data)
    except ET.ParseError as exc:
        raise DriverError(f"qemu: cannot parse the VM document: {exc}") from None


def _vm(doc: ET.Element, argv: list[str], minimum: int, usage: str) -> Vm:
    if len(argv) < minimum:
        raise DriverError(f"qemu: usage: {usage} <vmid> <host>")
    vmid = argv[-2] if len(argv) >= minimum + 2 else ""
    return Vm(doc, vmid)


# --- the command line ----------------------------------------------------------------------


def accelerator(vm: Vm) -> str:
    wanted = (vm.get("QEMU_ACCEL") or os.environ.get("NUBO_QEMU_ACCEL") or "auto").lower()
    if wanted in ("kvm", "tcg"):
        return wanted
    if wanted != "auto":
        raise DriverError(f"qemu: QEMU_ACCEL must be kvm, tcg or auto, not {wanted!r}")
    return "kvm" if kvm_usable() else "tcg"


def kvm_usable() -> bool:
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    try:
        with open("/proc/cpuinfo") as f:
            flags = {word for line in f if line.startswith("flags") for word in line.split()}
    except OSError:
        return False
    return bool(flags & {"vmx", "svm"})


def tap_name(vmid: str, nic_id: str) -> str:
    return _SAFE_TAP.sub("", f"one-{vmid}-{nic_id}")[:15]  # IFNAMSIZ


def command_line(vm: Vm, vmdir: str) -> list[str]:
    memory = vm.get("MEMORY", "128")
    vcpu = vm.get("VCPU", "1")
    if not memory.isdigit() or not vcpu.isdigit():
        raise DriverError(f"qemu: MEMORY ({memory!r}) and VCPU ({vcpu!r}) must be whole numbers")
    argv = [QEMU, "-name", f"one-{vm.id}", "-accel", accelerator(vm), "-m", memory,
            "-smp", vcpu, "-display", "none", "-no-user-config", "-nodefaults",
            # appended to: restore and a deploy after stop keep what the guest said before
            "-chardev", f"file,id=console,path={_opt(vmdir)}/console.log,append=on",
            "-serial", "chardev:console",
            "-qmp", f"unix:{_opt(vmdir)}/qmp.sock,server=on,wait=off",
            "-pidfile", f"{vmdir}/qemu.pid", "-daemonize"]
    os_vector = vm.vector("OS")
    if os_vector.get("KERNEL"):
        argv += ["-kernel", os_vector["KERNEL"]]
        if os_vector.get("INITRD"):
            argv += ["-initrd", os_vector["INITRD"]]
        cmdline = os_vector.get("KERNEL_CMD", "console=ttyS0")
        if os_vector.get("ROOT"):
            cmdline = f"root=/dev/{os_vector['ROOT']} {cmdline}"
        argv += ["-append", cmdline]
    context_id = vm.vector("CONTEXT").get("DISK_ID", "")
    for disk in vm.vectors("DISK"):
        argv += _drive(vmdir, disk)
    if context_id:
        argv += ["-drive",
                 f"file={_opt(vmdir)}/disk.{context_id},media=cdrom,if=ide,readonly=on"]
    for nic in vm.vectors("NIC"):
        nic_id = nic.get("NIC_ID", "0")
        model = nic.get("MODEL", "virtio-net-pci")
        model = "virtio-net-pci" if model == "virtio" else model
        device = f"{model},netdev=n{nic_id}"
        if nic.get("MAC"):
            device += f",mac={nic['MAC']}"
        argv += ["-netdev", f"tap,id=n{nic_id},ifname={tap_name(vm.id, nic_id)},script=no,"
                 "downscript=no", "-device", device]
    return argv


def _opt(value: str) -> str:
    """A value inside a qemu option list, where a comma separates options: doubled."""
    return value.replace(",", ",,")


def _drive(vmdir: str, disk: dict[str, str]) -> list[str]:
    disk_id = disk.get("DISK_ID", "")
    if not disk_id.isdigit():
        raise DriverError(f"qemu: a DISK has no DISK_ID: {disk}")
    path = f"{vmdir}/disk.{disk_id}"
    options = [f"file={_opt(path)}", f"format={disk_format(path, disk)}", f"id=disk{disk_id}"]
    if disk.get("TYPE", "").lower() == "cdrom":
        options += ["media=cdrom", "if=ide", "readonly=on"]
    else:
        options += ["if=virtio"]
        if disk.get("READONLY", "NO").upper() == "YES":
            options.append("readonly=on")
    return ["-drive", ",".join(options)]


def disk_format(path: str, disk: dict[str, str]) -> str:
    """qcow2 when the file says so (its magic), else what DRIVER/FORMAT says, else raw."""
    try:
        with open(path, "rb") as f:
            if f.read(4) == b"QFI\xfb":
                return "qcow2"
    except OSError:
        pass
    declared = (disk.get("DRIVER") or disk.get("FORMAT") or "raw").lower()
    return declared if declared in ("raw", "qcow2") else "raw"


# --- processes, QMP and taps -------------------------------------------------------------


def pid_of(vmdir: str) -> int | None:
    """qemu's pid while it runs (a zombie does not count)."""
    try:
        with open(os.path.join(vmdir, "qemu.pid")) as f:
            pid = int(f.read().strip())
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            mine = b"qmp.sock" in f.read()
    except (OSError, ValueError, IndexError):
        return None
    return pid if state != "Z" and mine else None


class Qmp:
    def __init__(self, vmdir: str, timeout: float = QMP_TIMEOUT) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(os.path.join(vmdir, "qmp.sock"))
        except OSError as exc:
            self.sock.close()
            raise DriverError(f"qemu: no QMP socket in {vmdir}: {exc.strerror or exc}") from None
        self.buffer = b""
        self.events: list[dict[str, Any]] = []
        self._read()  # the greeting
        self.execute("qmp_capabilities")

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Qmp:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _read(self) -> dict[str, Any]:
        while b"\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise DriverError("qemu: QMP connection closed")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        message: dict[str, Any] = json.loads(line)
        return message

    def execute(self, command: str, **arguments: Any) -> Any:
        request: dict[str, Any] = {"execute": command}
        if arguments:
            request["arguments"] = arguments
        self.sock.sendall(json.dumps(request).encode() + b"\n")
        while True:
            message = self._read()
            if "event" in message:
                self.events.append(message)
                continue
            if "error" in message:
                raise DriverError(f"qemu: {command}: {message['error'].get('desc', message)}")
            return message.get("return")

    def wait_event(self, name: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not any(e.get("event") == name for e in self.events):
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.sock.settimeout(left)
            try:
                message = self._read()
            except (OSError, DriverError):  # a timeout is an OSError
                return False
            if "event" in message:
                self.events.append(message)
        return True


def _run(argv: list[str], what: str) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    except FileNotFoundError:
        raise DriverError(f"qemu: {argv[0]} is not installed on this host") from None
    except subprocess.TimeoutExpired:
        raise DriverError(f"qemu: {what} timed out") from None
    if done.returncode != 0:
        raise DriverError(f"qemu: {what} failed: {(done.stderr or done.stdout).strip()}")
    return done.stdout


def plug_taps(vm: Vm) -> None:
    """A tap per NIC, on the NIC's bridge (created by the network driver or the admin)."""
    for nic in vm.vectors("NIC"):
        tap = tap_name(vm.id, nic.get("NIC_ID", "0"))
        if not os.path.exists(f"/sys/class/net/{tap}"):
            _run(["ip", "tuntap", "add", "dev", tap, "mode", "tap"], f"creating tap {tap}")
        bridge = nic.get("BRIDGE", "")
        if bridge:
            if not os.path.exists(f"/sys/class/net/{bridge}"):
                raise DriverError(f"qemu: bridge {bridge} does not exist on this host")
            _run(["ip", "link", "set", tap, "master", bridge], f"adding {tap} to {bridge}")
        _run(["ip", "link", "set", tap, "up"], f"bringing {tap} up")


def unplug_taps(vm: Vm) -> None:
    for nic in vm.vectors("NIC"):
        tap = tap_name(vm.id, nic.get("NIC_ID", "0"))
        if os.path.exists(f"/sys/class/net/{tap}"):
            subprocess.run(["ip", "link", "del", tap], capture_output=True, check=False)


def start(vm: Vm, vmdir: str, argv: list[str]) -> None:
    if pid_of(vmdir) is not None:
        raise DriverError(f"qemu: one-{vm.id} is already running")
    for stale in ("qmp.sock", "qemu.pid"):
        try:
            os.unlink(os.path.join(vmdir, stale))
        except FileNotFoundError:
            pass
    plug_taps(vm)
    try:
        _run(argv, f"starting one-{vm.id}")
    except DriverError:
        unplug_taps(vm)
        raise


def stop(vm: Vm, vmdir: str) -> None:
    """Quit qemu (QMP, else SIGKILL) and wait until the process is gone."""
    pid = pid_of(vmdir)
    if pid is None:
        unplug_taps(vm)
        return
    try:
        with Qmp(vmdir, timeout=5) as qmp:
            qmp.execute("quit")
    except (DriverError, OSError):
        pass
    if not _gone(vmdir, 5):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if not _gone(vmdir, 10):
            raise DriverError(f"qemu: process {pid} of one-{vm.id} does not go away")
    unplug_taps(vm)


def _gone(vmdir: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while pid_of(vmdir) is not None:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


# --- actions -----------------------------------------------------------------------------


def deploy(argv: list[str], doc: ET.Element) -> str:
    vm = _vm(doc, argv, 2, "deploy <deployment file> <host>")
    dfile = argv[0]
    vmdir = os.path.dirname(dfile) or vm.directory()
    os.makedirs(vmdir, exist_ok=True)
    line = command_line(vm, vmdir)
    tmp = dfile + ".tmp"
    with open(tmp, "w") as f:
        json.dump(line, f)
    os.replace(tmp, dfile)
    log(f"starting {' '.join(line[:6])} ...")
    start(vm, vmdir, line)
    return f"one-{vm.id}"


def shutdown(argv: list[str], doc: ET.Element) -> str:
    vm = _vm(doc, argv, 2, "shutdown <deploy_id> <host>")
    vmdir = vm.directory()
    if pid_of(vmdir) is None:
        unplug_taps(vm)
        return ""
    try:
        with Qmp(vmdir) as qmp:
            qmp.execute("system_powerdown")
            # the guest may miss the first press (still booting): press again halfway
            if not _gone(vmdir, SHUTDOWN_TIMEOUT / 2):
                qmp.execute("system_powerdown")
    except DriverError:
        pass  # qemu exited while we spoke to it: that is the goal
    if not _gone(vmdir, SHUTDOWN_TIMEOUT / 2):
        log(f"one-{vm.id} ignored the power button for {SHUTDOWN_TIMEOUT:g} s: forcing it off")
        stop(vm, vmdir)
    unplug_taps(vm)
    return ""


def cancel(argv: list[str], doc: ET.Element) -> str:
    vm = _vm(doc, argv, 2, "cancel <deploy_id> <host>")
    stop(vm, vm.directory())
    return ""


def _running(vm: Vm) -> str:
    """The VM's directory, or DriverError when its qemu does not run."""
    vmdir = vm.directory()
    if pid_of(vmdir) is None:
        raise DriverError(f"qemu: one-{vm.id} is not running")
    return vmdir


def reset(argv: list[str], doc: ET.Element) -> str:
    vm = _vm(doc, argv, 2, "reset <deploy_id> <host>")
    vmdir = _running(vm)
    with Qmp(vmdir) as qmp:
        qmp.execute("system_reset")
    return ""


def save(argv: list[str], doc: ET.Element) -> str:
    vm = _vm(doc, argv, 3, "save <deploy_id> <checkpoint> <host>")
    vmdir, checkpoint = _running(vm), argv[1]
    with Qmp(vmdir) as qmp:
        qmp.execute("stop")
        qmp.execute("migrate", uri="exec:" + shlex.join(["dd", f"of={checkpoint}", "bs=1M",
                                                          "status=none"]))
        deadline = time.monotonic() + 600
        while True:
            status = qmp.execute("query-migrate").get("status", "")
            if status == "completed":
                break
            if status in ("failed", "cancelled") or time.monotonic() > deadline:
                qmp.execute("cont")
                raise DriverError(f"qemu: saving one-{vm.id} to {checkpoint}: {status}")
            time.sleep(0.05)
    stop(vm, vmdir)
    return ""


def restore(argv: list[str], doc: ET.Element) -> str:
    vm = _vm(doc, argv, 2, "restore <checkpoint> <host>")
    vmdir, checkpoint = vm.directory(), argv[0]
    if not os.path.isfile(checkpoint):
        raise DriverError(f"qemu: no checkpoint at {checkpoint}")
    line = _last_deployment(vmdir) or command_line(vm, vmdir)
    line += ["-incoming", "exec:" + shlex.join(["cat", checkpoint])]
    start(vm, vmdir, line)
    with Qmp(vmdir) as qmp:
        deadline = time.monotonic() + 600
        while qmp.execute("query-status").get("status") == "inmigrate":
            if time.monotonic() > deadline:
                raise DriverError(f"qemu: restoring one-{vm.id} did not finish")
            time.sleep(0.05)
        qmp.execute("cont")
    os.unlink(checkpoint)
    return ""


def _last_deployment(vmdir: str) -> list[str] | None:
    """The command line of the latest deploy (deployment.<seq>), without `-incoming`."""
    found = []
    for name in os.listdir(vmdir):
        head, _, seq = name.partition(".")
        if head == "deployment" and seq.isdigit():
            found.append((int(seq), name))
    if not found:
        return None
    with open(os.path.join(vmdir, max(found)[1])) as f:
        line: list[str] = json.load(f)
    return line


def poll(argv: list[str], doc: ET.Element) -> str:
    vm = _vm(doc, argv, 2, "poll <deploy_id> <host>")
    vmdir = vm.directory()
    pid = pid_of(vmdir)
    if pid is None:
        return "STATE=d"
    try:
        with Qmp(vmdir, timeout=5) as qmp:
            status = qmp.execute("query-status").get("status", "")
    except (DriverError, OSError):
        status = "unknown"
    letter = {"running": "a", "paused": "p", "suspended": "p", "postmigrate": "d",
              "internal-error": "e", "io-error": "e", "guest-panicked": "e",
              "shutdown": "d", "inmigrate": "a", "finish-migrate": "a",
              "prelaunch": "a", "restore-vm": "a", "save-vm": "a"}.get(status, "-")
    rx = tx = 0
    for nic in vm.vectors("NIC"):
        stats = f"/sys/class/net/{tap_name(vm.id, nic.get('NIC_ID', '0'))}/statistics"
        # the tap's transmit is the guest's receive
        rx += _counter(f"{stats}/tx_bytes")
        tx += _counter(f"{stats}/rx_bytes")
    cpu, memory = _usage(pid)
    return f"STATE={letter} USEDCPU={cpu} USEDMEMORY={memory} NETRX={rx} NETTX={tx}"


def _counter(path: str) -> int:
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return 0


def _usage(pid: int) -> tuple[str, int]:
    """CPU use since start (percent of one CPU, as ps prints it) and resident memory (KB)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        ticks = os.sysconf("SC_CLK_TCK")
        used = (int(fields[11]) + int(fields[12])) / ticks
        alive = max(uptime - int(fields[19]) / ticks, 1e-3)
        with open(f"/proc/{pid}/status") as f:
            rss = next((int(line.split()[1]) for line in f if line.startswith("VmRSS:")), 0)
    except (OSError, ValueError, IndexError):
        return "0", 0
    return f"{100 * used / alive:.1f}", rss


def attach_disk(argv: list[str], doc: ET.Element) -> str:
    vm = _vm(doc, argv, 4, "attach_disk <deploy_id> <path> <target> <disk_id>")
    vmdir, path, disk_id = vm.directory(), argv[1], argv[3]
    disk = next((d for d in vm.vectors("DISK") if d.get("DISK_ID") == disk_id), {})
    node = f"node{disk_id}"
    with Qmp(vmdir) as qmp:  # each half is skipped when it is done already (a retried step)
        _unless_duplicate(qmp, "blockdev-add", **{
            "node-name": node, "driver": disk_format(path, disk),
            "file": {"driver": "file", "filename": path},
            "read-only": disk.get("READONLY", "NO") == "YES"})
        _unless_duplicate(qmp, "device_add", driver="virtio-blk-pci", drive=node,
                          id=f"disk{disk_id}")
    return ""


def _unless_duplicate(qmp: Qmp, command: str, **arguments: Any) -> None:
    try:
        qmp.execute(command, **arguments)
    except DriverError as exc:
        if "Duplicate" not in str(exc) and "already" not in str(exc):
            raise


def detach_disk(argv: list[str], doc: ET.Element) -> str:
    vm = _vm(doc, argv, 4, "detach_disk <deploy_id> <path> <target> <disk_id>")
    vmdir, disk_id = vm.directory(), argv[3]
    with Qmp(vmdir) as qmp:
        try:
            qmp.execute("device_del", id=f"disk{disk_id}")
            if not qmp.wait_event("DEVICE_DELETED", 30):
                raise DriverError(f"qemu: the guest did not release disk {disk_id} in 30 s")
        except DriverError as exc:
            if "not found" not in str(exc):
                raise
        for node in (f"node{disk_id}", f"disk{disk_id}"):
            try:
                qmp.execute("blockdev-del", **{"node-name": node})
            except DriverError:
                pass  # a boot-time drive, or already gone
    return ""


CONSOLE_LIMIT = 64 * 1024


def console(argv: list[str], doc: ET.Element) -> str:
    vm = _vm(doc, argv, 2, "console <deploy_id> <host>")
    try:
        with open(os.path.join(vm.directory(), "console.log"), "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - CONSOLE_LIMIT))
            data = f.read()
    except FileNotFoundError:
        return ""
    sys.stdout.write(data.decode("utf-8", "replace"))
    return ""


ACTIONS = {"console": console, "deploy": deploy, "shutdown": shutdown, "cancel": cancel, "reboot": reset,
           "reset": reset, "save": save, "restore": restore, "poll": poll,
           "attach_disk": attach_disk, "detach_disk": detach_disk}
