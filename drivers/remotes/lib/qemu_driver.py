"""The qemu VMM driver (vmm/qemu): one qemu process per VM, driven over QMP. Standard library
only, Python 3.8+: it runs on the hosts.

Actions, with their arguments before the appended `<vmid> <host>` (the VM's XML on stdin):
  deploy <deployment file> <host>        start qemu; prints the deploy id `one-<vmid>`
  shutdown <deploy_id> <host>            ACPI power button (every 5 s), then force after
                                         SHUTDOWN_TIMEOUT
  cancel <deploy_id> <host>              stop qemu at once
  reboot | reset <deploy_id> <host>      reset the machine (QMP system_reset)
  save <deploy_id> <checkpoint> <host>   memory to the checkpoint file, then stop qemu
  restore <checkpoint> <host>            start qemu again from the checkpoint
  poll <deploy_id> <host>                STATE=a|p|e|d USEDCPU USEDMEMORY NETRX NETTX
  console <deploy_id> <host>             the last 64 KB of the serial console (Nubo's own
                                         action: the monitor keeps a copy on the front-end)
  attach_disk | detach_disk <deploy_id> <path> <target> <disk_id>   hotplug (virtio)
  migrate_receive <deploy_id> <source> <host>   on the target of a live migration: qemu
                                         waiting for the guest; prints PORT=<tcp port>
  migrate <deploy_id> <dest> <host>      on the source: send the guest to MIGR_URI (from
                                         the document), then quit here

Files in the VM's directory (the deployment file's, or <DS_LOCATION>/0/<vmid>):
  disk.<id>          the disks (the transfer manager made them; the context CD is one)
  deployment.<seq>   the machine deploy started (JSON: its dir and qemu arguments), which
                     restore and migrate_receive start again, its paths moved to the VM
                     dir of the moment
  qmp-<host>.sock    QMP; qemu-<host>.pid the process (named after the host, so that two
                     hosts sharing the dir keep theirs apart); console.log the console
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
import shutil
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
POWERDOWN_REPEAT = 5.0  # seconds between presses of the power button
QMP_TIMEOUT = 30.0
MIGRATION_TIMEOUT = float(os.environ.get("NUBO_MIGRATION_TIMEOUT", "600"))
# where a migration target listens: every address (the source reaches it by the host's
# MIGRATION_ADDRESS); set NUBO_MIGRATION_LISTEN to pin one
MIGRATION_LISTEN = os.environ.get("NUBO_MIGRATION_LISTEN", "0.0.0.0")
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
    def __init__(self, doc: ET.Element, vmid: str, host: str = "") -> None:
        self.doc = doc
        self.id = (doc.findtext("ID") or vmid).strip()
        self.host = host
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

    def directory(self, back: int = 1) -> str:
        """The VM dir of its last placement (`back` 2: of the one before, a migration's
        source)."""
        records = self.doc.findall("HISTORY_RECORDS/HISTORY")
        record = records[-back] if len(records) >= back else None
        location = (record.findtext("DS_LOCATION") or "").strip() if record is not None else ""
        return os.path.join(location or DEFAULT_DS_LOCATION, "0", self.id)

    def runtime(self, vmdir: str | None = None) -> Runtime:
        return Runtime(vmdir or self.directory(), self.host)


class Runtime:
    """Where a VM's qemu process keeps its pid file and QMP socket: in the VM dir, named
    after the host, so two hosts sharing the dir (a live migration over shared storage)
    never take each other's files."""

    def __init__(self, vmdir: str, host: str) -> None:
        self.dir = vmdir
        tag = _SAFE_TAP.sub("", host)[:32]
        self.qmp = os.path.join(vmdir, f"qmp-{tag}.sock" if tag else "qmp.sock")
        self.pidfile = os.path.join(vmdir, f"qemu-{tag}.pid" if tag else "qemu.pid")

    def args(self) -> list[str]:
        return ["-qmp", f"unix:{_opt(self.qmp)},server=on,wait=off", "-pidfile", self.pidfile,
                "-daemonize"]


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
    appended = len(argv) >= minimum + 2
    own_host = usage.endswith("<host>")
    host = argv[-1] if appended else (argv[minimum - 1] if own_host else "")
    return Vm(doc, argv[-2] if appended else "", host)


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
    """The machine: qemu and its devices, with files in `vmdir` (no runtime files)."""
    memory = vm.get("MEMORY", "128")
    vcpu = vm.get("VCPU", "1")
    if not memory.isdigit() or not vcpu.isdigit():
        raise DriverError(f"qemu: MEMORY ({memory!r}) and VCPU ({vcpu!r}) must be whole numbers")
    argv = [QEMU, "-name", f"one-{vm.id}", "-accel", accelerator(vm), "-m", memory,
            "-smp", vcpu, "-display", "none", "-no-user-config", "-nodefaults",
            # appended to: restore and a deploy after stop keep what the guest said before
            "-chardev", f"file,id=console,path={_opt(vmdir)}/console.log,append=on",
            "-serial", "chardev:console"]
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


def pid_of(run: Runtime) -> int | None:
    """qemu's pid while it runs (a zombie does not count)."""
    try:
        with open(run.pidfile) as f:
            pid = int(f.read().strip())
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            mine = _opt(run.qmp).encode() in f.read()
    except (OSError, ValueError, IndexError):
        return None
    return pid if state != "Z" and mine else None


class Qmp:
    def __init__(self, run: Runtime, timeout: float = QMP_TIMEOUT) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(run.qmp)
        except OSError as exc:
            self.sock.close()
            raise DriverError(f"qemu: no QMP socket at {run.qmp}: {exc.strerror or exc}") from None
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
    """A tap per NIC, on the NIC's bridge (created by the network driver or the admin): a
    Linux bridge's port through `ip link set master`, an Open vSwitch bridge's through
    `ovs-vsctl add-port` (what libvirt's openvswitch virtualport does; a no-op when the
    ovswitch network driver's pre added the port already, tagged)."""
    for nic in vm.vectors("NIC"):
        tap = tap_name(vm.id, nic.get("NIC_ID", "0"))
        if not os.path.exists(f"/sys/class/net/{tap}"):
            _run(["ip", "tuntap", "add", "dev", tap, "mode", "tap"], f"creating tap {tap}")
        bridge = nic.get("BRIDGE", "")
        if bridge:
            if not os.path.exists(f"/sys/class/net/{bridge}"):
                raise DriverError(f"qemu: bridge {bridge} does not exist on this host")
            if _ovs_bridge(bridge):
                _run(["ovs-vsctl", "--timeout=20", "--may-exist", "add-port", bridge, tap],
                     f"adding {tap} to the Open vSwitch bridge {bridge}")
            else:
                _run(["ip", "link", "set", tap, "master", bridge], f"adding {tap} to {bridge}")
        _run(["ip", "link", "set", tap, "up"], f"bringing {tap} up")


def _ovs_bridge(bridge: str) -> bool:
    """Not a Linux bridge, and Open vSwitch (when installed) knows it as a bridge."""
    if os.path.isdir(f"/sys/class/net/{bridge}/bridge") or not _has_ovs():
        return False
    done = subprocess.run(["ovs-vsctl", "--timeout=20", "br-exists", bridge],
                          capture_output=True, text=True, check=False)
    return done.returncode == 0


def _has_ovs() -> bool:
    return shutil.which("ovs-vsctl") is not None


def unplug_taps(vm: Vm) -> None:
    """The taps go; a tap's Open vSwitch port goes too (OVS would keep it, deviceless)."""
    for nic in vm.vectors("NIC"):
        tap = tap_name(vm.id, nic.get("NIC_ID", "0"))
        bridge = nic.get("BRIDGE", "")
        if bridge and not os.path.isdir(f"/sys/class/net/{bridge}/bridge") and _has_ovs():
            subprocess.run(["ovs-vsctl", "--timeout=5", "--if-exists", "del-port", tap],
                           capture_output=True, check=False)
        if os.path.exists(f"/sys/class/net/{tap}"):
            subprocess.run(["ip", "link", "del", tap], capture_output=True, check=False)


def start(vm: Vm, run: Runtime, argv: list[str]) -> None:
    """Start qemu with the machine `argv` and this host's runtime files."""
    if pid_of(run) is not None:
        raise DriverError(f"qemu: one-{vm.id} is already running")
    for stale in (run.qmp, run.pidfile):
        try:
            os.unlink(stale)
        except FileNotFoundError:
            pass
    plug_taps(vm)
    try:
        _run(argv + run.args(), f"starting one-{vm.id}")
    except DriverError:
        unplug_taps(vm)
        raise


def stop(vm: Vm, run: Runtime) -> None:
    """Quit qemu (QMP, else SIGKILL) and wait until the process is gone."""
    pid = pid_of(run)
    if pid is None:
        unplug_taps(vm)
        return
    try:
        with Qmp(run, timeout=5) as qmp:
            qmp.execute("quit")
    except (DriverError, OSError):
        pass
    if not _gone(run, 5):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if not _gone(run, 10):
            raise DriverError(f"qemu: process {pid} of one-{vm.id} does not go away")
    unplug_taps(vm)


def _gone(run: Runtime, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while pid_of(run) is not None:
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
        json.dump({"dir": vmdir, "argv": line}, f)
    os.replace(tmp, dfile)
    log(f"starting {' '.join(line[:6])} ...")
    start(vm, vm.runtime(vmdir), line)
    return f"one-{vm.id}"


def shutdown(argv: list[str], doc: ET.Element) -> str:
    vm = _vm(doc, argv, 2, "shutdown <deploy_id> <host>")
    run = vm.runtime()
    if pid_of(run) is None:
        unplug_taps(vm)
        return ""
    deadline = time.monotonic() + SHUTDOWN_TIMEOUT
    try:
        with Qmp(run) as qmp:
            # a guest still booting misses a press (nothing listens to the button yet):
            # press again every few seconds until it goes or the time is up
            while True:
                qmp.execute("system_powerdown")
                left = deadline - time.monotonic()
                if left <= 0 or _gone(run, min(POWERDOWN_REPEAT, left)):
                    break
    except DriverError:
        pass  # qemu exited while we spoke to it: that is the goal
    if not _gone(run, 0):
        log(f"one-{vm.id} ignored the power button for {SHUTDOWN_TIMEOUT:g} s: forcing it off")
        stop(vm, run)
    unplug_taps(vm)
    return ""


def cancel(argv: list[str], doc: ET.Element) -> str:
    vm = _vm(doc, argv, 2, "cancel <deploy_id> <host>")
    stop(vm, vm.runtime())
    return ""


def _running(vm: Vm, vmdir: str | None = None) -> Runtime:
    """The VM's runtime files, or DriverError when its qemu does not run."""
    run = vm.runtime(vmdir)
    if pid_of(run) is None:
        raise DriverError(f"qemu: one-{vm.id} is not running on {vm.host or 'this host'}")
    return run


def reset(argv: list[str], doc: ET.Element) -> str:
    vm = _vm(doc, argv, 2, "reset <deploy_id> <host>")
    with Qmp(_running(vm)) as qmp:
        qmp.execute("system_reset")
    return ""


def save(argv: list[str], doc: ET.Element) -> str:
    """The checkpoint's directory is the VM dir on this host (a migration's source too)."""
    vm = _vm(doc, argv, 3, "save <deploy_id> <checkpoint> <host>")
    checkpoint = argv[1]
    run = _running(vm, os.path.dirname(checkpoint) or None)
    with Qmp(run) as qmp:
        qmp.execute("stop")
        qmp.execute("migrate", uri="exec:" + shlex.join(["dd", f"of={checkpoint}", "bs=1M",
                                                          "status=none"]))
        status = _migration(qmp, f"saving one-{vm.id} to {checkpoint}")
        if status != "completed":
            qmp.execute("cont")
            raise DriverError(f"qemu: saving one-{vm.id} to {checkpoint}: {status}")
    stop(vm, run)
    return ""


def _migration(qmp: Qmp, what: str, timeout: float = MIGRATION_TIMEOUT) -> str:
    """Wait for the outgoing migration to end; its final status. Logs progress."""
    deadline = time.monotonic() + timeout
    shown = time.monotonic()
    while True:
        info = qmp.execute("query-migrate")
        status = str(info.get("status", ""))
        if status in ("completed", "failed", "cancelled"):
            if status == "failed" and info.get("error-desc"):
                status = f"failed: {info['error-desc']}"
            return status
        if time.monotonic() > deadline:
            qmp.execute("migrate_cancel")
            return f"not done after {timeout:g} s"
        if time.monotonic() - shown >= 5:
            ram = info.get("ram", {})
            log(f"{what}: {ram.get('transferred', 0) >> 20} MB sent, "
                f"{ram.get('remaining', 0) >> 20} MB to go")
            shown = time.monotonic()
        time.sleep(0.05)


def restore(argv: list[str], doc: ET.Element) -> str:
    vm = _vm(doc, argv, 2, "restore <checkpoint> <host>")
    vmdir, checkpoint = vm.directory(), argv[0]
    if not os.path.isfile(checkpoint):
        raise DriverError(f"qemu: no checkpoint at {checkpoint}")
    run = vm.runtime(vmdir)
    start(vm, run, machine(vm, vmdir) + ["-incoming", "exec:" + shlex.join(["cat", checkpoint])])
    with Qmp(run) as qmp:
        deadline = time.monotonic() + MIGRATION_TIMEOUT
        while qmp.execute("query-status").get("status") == "inmigrate":
            if time.monotonic() > deadline:
                raise DriverError(f"qemu: restoring one-{vm.id} did not finish")
            time.sleep(0.05)
        qmp.execute("cont")
    os.unlink(checkpoint)
    return ""


def machine(vm: Vm, vmdir: str) -> list[str]:
    """The machine of the latest deploy (deployment.<seq>), so a restored or migrated guest
    finds the devices it had; its files follow the VM dir wherever it is now."""
    found = []
    for name in os.listdir(vmdir):
        head, _, seq = name.partition(".")
        if head == "deployment" and seq.isdigit():
            found.append((int(seq), name))
    if not found:
        return command_line(vm, vmdir)
    with open(os.path.join(vmdir, max(found)[1])) as f:
        saved = json.load(f)
    if isinstance(saved, list):  # written before deployment files recorded their dir
        return [str(arg) for arg in saved]
    old = str(saved["dir"])
    if old == vmdir:
        return [str(arg) for arg in saved["argv"]]
    pairs = [(_opt(old) + "/", _opt(vmdir) + "/"), (old + "/", vmdir + "/")]
    moved = []
    for arg in saved["argv"]:
        text = str(arg)
        for before, after in pairs:
            if before in text:
                text = text.replace(before, after)
                break
        moved.append(text)
    return moved


def migrate_receive(argv: list[str], doc: ET.Element) -> str:
    """On the target: qemu with the VM's machine, waiting for the guest (Nubo's action, run
    by the core before `migrate`). Prints PORT=<the TCP port it listens on>."""
    vm = _vm(doc, argv, 3, "migrate_receive <deploy_id> <source> <host>")
    vmdir = vm.directory()
    run = vm.runtime(vmdir)
    previous = pid_of(run)
    if previous is not None:  # a receiver left by an interrupted attempt
        with Qmp(run, timeout=5) as qmp:
            status = qmp.execute("query-status").get("status")
        if status != "inmigrate":
            raise DriverError(f"qemu: one-{vm.id} already runs on {vm.host} ({status})")
        stop(vm, run)
    start(vm, run, machine(vm, vmdir) + ["-incoming", "defer"])
    try:
        with Qmp(run) as qmp:
            qmp.execute("migrate-incoming", uri=f"tcp:{MIGRATION_LISTEN}:0")
            addresses = qmp.execute("query-migrate").get("socket-address", [])
    except DriverError:
        stop(vm, run)
        raise
    port = next((a.get("port") for a in addresses if a.get("port")), "")
    if not str(port).isdigit():
        stop(vm, run)
        raise DriverError(f"qemu: one-{vm.id} listens on no TCP port ({addresses})")
    log(f"one-{vm.id} waits for its guest from {argv[1]} on port {port}")
    return f"PORT={port}"


def migrate(argv: list[str], doc: ET.Element) -> str:
    """On the source: send the running guest to MIGR_URI (the target's receiver); when it
    runs there, this host's qemu quits. On failure the guest keeps running here."""
    vm = _vm(doc, argv, 3, "migrate <deploy_id> <dest> <host>")
    uri = (doc.findtext("MIGR_URI") or "").strip()
    if not uri:
        raise DriverError("qemu: migrate needs MIGR_URI (the target's migrate_receive)")
    run = _running(vm, vm.directory(back=2))
    what = f"migrating one-{vm.id} to {argv[1]}"
    with Qmp(run) as qmp:
        try:
            qmp.execute("migrate", uri=uri)
        except DriverError as exc:  # refused at once (nothing listens there, ...)
            raise DriverError(f"qemu: {what}: {exc}") from None
        status = _migration(qmp, what)
        if status != "completed":
            if qmp.execute("query-status").get("status") != "running":
                qmp.execute("cont")
            raise DriverError(f"qemu: {what}: {status}")
    log(f"{what}: done; stopping the copy left here")
    stop(vm, run)
    return ""


def poll(argv: list[str], doc: ET.Element) -> str:
    vm = _vm(doc, argv, 2, "poll <deploy_id> <host>")
    run = vm.runtime()
    pid = pid_of(run)
    if pid is None:
        return "STATE=d"
    try:
        with Qmp(run, timeout=5) as qmp:
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
    path, disk_id = argv[1], argv[3]
    disk = next((d for d in vm.vectors("DISK") if d.get("DISK_ID") == disk_id), {})
    node = f"node{disk_id}"
    with Qmp(vm.runtime()) as qmp:  # each half is skipped when it is done already (a retried step)
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
    disk_id = argv[3]
    with Qmp(vm.runtime()) as qmp:
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
           "attach_disk": attach_disk, "detach_disk": detach_disk, "migrate": migrate,
           "migrate_receive": migrate_receive}
