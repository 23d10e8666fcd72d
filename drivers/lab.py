"""The lab: a throwaway fleet of "machines" made of network namespaces, for tests, demos and
users trying Nubo on one box (`nubo lab up|down|status`, tests/drivers/conftest.py).

    netns <prefix>-fabric   bridge br0, no address (the management L2 segment)
    netns <prefix>-fe       eth0 10.213.0.10/24: where the front-end's sockets are made
    netns <prefix>-hN       eth0 10.213.0.(10+N)/24 and its own OpenSSH sshd (-D)

Every address lives inside a namespace; the root namespace is left alone. A process in the
root namespace reaches a host with a socket created inside the `fe` namespace:
`HostAccess(netns=lab.netns)` for drivers.runner, and `ssh -F <workdir>/ssh_config hN` for
the plain ssh/scp the transfer-manager scripts run (its ProxyCommand makes the socket in
`fe` with `nc -F` and hands it to ssh). Login is by key for the current user; known_hosts
is written from the generated host keys, so checking stays on. Each host gets its own
directories under workdir/hN: a clean home directory, bound over the user's home inside the
host's mount namespace (so no ~/.bashrc of the real machine runs on every ssh command), a
remote dir for the remotes tree and a datastores dir (paths differ per host; the hosts
otherwise share the front-end's filesystem). With `shared=True`, `<workdir>/shared` is
bind-mounted at the same path into every host's mount namespace: one directory seen at one
path by the front-end and every host, as an NFS export would be (the `shared` and `qcow2`
TM drivers' system datastore).

Open vSwitch, when a test or `start_ovs` asks for it: each host runs its own ovsdb-server
and ovs-vswitchd in its namespace, with their database, sockets and logs in workdir/hN/
openvswitch, which every host's mount namespace binds over /var/run/openvswitch, so plain
`ovs-vsctl` and `ovs-ofctl` over ssh talk to that host's switch, as on a real host. Bridges
need `datapath_type=netdev` (the userspace datapath; this kernel has no OVS module).
They stop with the lab.

Two owners: a pytest fixture (this process starts the sshds and reaps them) or the CLI,
which starts them detached and exits. Either way `<workdir>/lab.json` records the prefix,
hosts, addresses, namespaces, sshd pids and key paths, so `Lab.load(workdir).destroy()` in a
later process finds everything. Test labs are named `nubo-t<pid>-*` and removed by the next
run once <pid> is gone; CLI labs are named after their workdir (`nubo-l<hash>-*`).
Needs root, iproute2 and openssh-server (scripts/system-deps installs them), and nc from
netcat-openbsd for the ssh_config.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drivers.lab_ssh import SUBNET, ssh_config_text, sshd_config_text
from drivers.runner import HostAccess

READY_TIMEOUT = 10.0
OVS_CTL = "/usr/share/openvswitch/scripts/ovs-ctl"
OVS_RUN = "/var/run/openvswitch"  # where ovs-vsctl and ovs-ofctl look by default
STATE_FILE = "lab.json"
SSH_CONFIG = "ssh_config"
_STALE = re.compile(r"nubo-t(\d+)-")


class LabUnavailable(RuntimeError):
    """The machine cannot host a lab (missing tool, not root)."""


def require_tool(name: str) -> str:
    """Absolute path of a system tool (also looked up in the sbin dirs), else LabUnavailable."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/local/sbin")
    if path is None:
        raise LabUnavailable(f"{name} not found (install it with scripts/system-deps)")
    return path


@functools.cache
def _ip_path() -> str:
    return require_tool("ip")


def _ip(*args: str) -> str:
    return _run(_ip_path(), *args)


def _run(*argv: str) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True)  # noqa: S603
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def cli_prefix(workdir: Path) -> str:
    """The namespace prefix of a lab the CLI keeps in `workdir` (stable: `down` recomputes it)."""
    return "nubo-l" + hashlib.sha1(str(Path(workdir).resolve()).encode()).hexdigest()[:8]


def _pid_alive(pid: int | None, needle: str) -> bool:
    """pid runs and its command line mentions `needle` (not a recycled pid, not a zombie)."""
    if not pid:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        status = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return False
    return status[0] != "Z" and needle in cmdline


@dataclass
class LabHost:
    name: str
    netns: str
    address: str
    dir: Path
    sshd: subprocess.Popen[bytes] | None = None  # when this process started it
    pid: int | None = None  # sshd's pid, also known to later processes (lab.json)

    @property
    def remote_dir(self) -> str:
        """Where this host keeps the remotes tree (instead of /var/tmp/one)."""
        return str(self.dir / "remote")

    @property
    def home(self) -> Path:
        """The user's home directory as seen on this host (a clean one per host)."""
        return self.dir / "home"

    @property
    def datastores(self) -> Path:
        """This host's DATASTORE_LOCATION."""
        return self.dir / "datastores"

    @property
    def sshd_config(self) -> Path:
        return self.dir / "sshd_config"

    @property
    def ovs_dir(self) -> Path:
        """This host's Open vSwitch files, seen on the host as /var/run/openvswitch."""
        return self.dir / "openvswitch"

    def ovs_env(self) -> list[str]:
        """`env` arguments pointing the OVS tools and ovs-ctl at this host's files (for
        commands run with `ip netns exec`, outside the sshd's mount namespace)."""
        folder = str(self.ovs_dir)
        return [f"OVS_RUNDIR={folder}", f"OVS_DBDIR={folder}", f"OVS_LOGDIR={folder}",
                f"OVS_SYSCONFDIR={folder}"]

    def ovs(self, *argv: str) -> str:
        """A command (ovs-vsctl, ovs-ofctl ...) on this host's switch; its stdout."""
        return _ip("netns", "exec", self.netns, "env", *self.ovs_env(), *argv)

    def ovs_running(self) -> bool:
        for daemon in ("ovsdb-server", "ovs-vswitchd"):
            try:
                pid = int((self.ovs_dir / f"{daemon}.pid").read_text().strip())
            except (OSError, ValueError):
                return False
            if not _pid_alive(pid, str(self.ovs_dir)):
                return False
        return True

    def start_ovs(self) -> None:
        """Start this host's ovsdb-server and ovs-vswitchd (a no-op when they run)."""
        if self.ovs_running():
            return
        require_tool("ovs-vsctl")
        if not os.access(OVS_CTL, os.X_OK):
            raise LabUnavailable(f"{OVS_CTL} not found (install openvswitch-switch with "
                                 "scripts/system-deps)")
        self.ovs_dir.mkdir(parents=True, exist_ok=True)
        ctl = [_ip_path(), "netns", "exec", self.netns, "env", *self.ovs_env(), OVS_CTL,
               "--system-id=random", "--no-mlockall", "--no-monitor", "--no-record-hostname"]
        # the database first, then the switch, with userspace TSO: its AF_PACKET ports then
        # carry the kernel's checksum offload along (without it, TCP from a virtio guest
        # or a veth leaves with checksums nobody filled in; pings alone still pass).
        # --no-mlockall: 60 MB per host stay swappable; ulimit warnings are harmless
        _run(*ctl, "--no-ovs-vswitchd", "start")
        self.ovs("ovs-vsctl", "--no-wait", "set", "Open_vSwitch", ".",
                 "other_config:userspace-tso-enable=true")
        _run(*ctl, "--no-ovsdb-server", "start")

    def stop_ovs(self) -> None:
        if not (self.ovs_dir / "ovsdb-server.pid").exists():
            return
        with contextlib.suppress(RuntimeError):
            _ip("netns", "exec", self.netns, "env", *self.ovs_env(), OVS_CTL, "stop")

    def sshd_running(self) -> bool:
        if self.sshd is not None:
            return self.sshd.poll() is None
        return _pid_alive(self.pid, str(self.sshd_config))

    def stop_sshd(self) -> None:
        """Stop the listener (new connections are refused; open sessions survive)."""
        if self.sshd is not None:
            if self.sshd.poll() is None:
                self.sshd.terminate()
                try:
                    self.sshd.wait(5)
                except subprocess.TimeoutExpired:
                    self.sshd.kill()
                    self.sshd.wait()
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):  # not our child: by pid, checked first
            if not self.sshd_running():
                return
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid or 0, sig)
            deadline = time.monotonic() + 5
            while self.sshd_running() and time.monotonic() < deadline:
                time.sleep(0.01)

    def power_off(self) -> None:
        """As a crash: the listener and every process in the host's namespace (the open
        sessions' sshd included) get killed, so clients see their connections drop."""
        self.stop_sshd()
        _kill_netns_pids(self.netns)

    def cut(self) -> None:
        """A partition: the host's link goes down; what runs there runs on, unreachable."""
        _ip("-n", self.netns, "link", "set", "eth0", "down")

    def mend(self) -> None:
        _ip("-n", self.netns, "link", "set", "eth0", "up")

    def fence(self) -> None:
        """What a fence device does to a real host: nothing runs there any more (its VMs
        included) and nothing reaches it."""
        self.power_off()
        self.cut()


@dataclass
class Lab:
    prefix: str
    workdir: Path
    user: str
    home: str
    client_key: Path
    known_hosts: Path
    namespaces: list[str] = field(default_factory=list)
    hosts: list[LabHost] = field(default_factory=list)
    shared_dir: Path | None = None

    @property
    def netns(self) -> str:
        """The front-end namespace: create client sockets here."""
        return f"{self.prefix}-fe"

    @property
    def ssh_config(self) -> Path:
        """For `ssh -F` / NUBO_SSH_CONFIG: every host by name, through the fe namespace."""
        return self.workdir / SSH_CONFIG

    @property
    def state_file(self) -> Path:
        return self.workdir / STATE_FILE

    def host(self, name: str) -> LabHost:
        for host in self.hosts:
            if host.name == name:
                return host
        raise KeyError(name)

    def access(self, name: str, **changes: object) -> HostAccess:
        """How drivers.runner reaches host `name` from the root namespace."""
        host = self.host(name)
        base = HostAccess(
            address=host.address,
            username=self.user,
            client_keys=(str(self.client_key),),
            known_hosts=str(self.known_hosts),
            netns=self.netns,
            remote_dir=host.remote_dir,
        )
        return dataclasses.replace(base, **changes)  # type: ignore[arg-type]

    def destroy(self) -> None:
        """Close ssh control masters, stop every sshd and every process left in the
        namespaces, delete the namespaces (also those of a half-made lab with this prefix)
        and lab.json. Safe to call twice; the rest of the workdir is left for post-mortems."""
        self._close_masters()
        for host in self.hosts:
            host.stop_sshd()
            host.stop_ovs()
        for ns in [*reversed(self.namespaces), *lab_namespaces(self.prefix)]:
            _delete_netns(ns)
        self.namespaces.clear()
        self.state_file.unlink(missing_ok=True)

    def power_on(self, name: str, *, detached: bool = False) -> LabHost:
        """A fenced or crashed host boots again: its link up, its sshd started (nothing
        else: VMs that were killed stay dead). detached as for create_hosts."""
        host = self.host(name)
        if host.sshd_running():
            host.stop_sshd()
        host.mend()
        _start_sshd(self, host, require_tool("sshd"), detached)
        self.save()
        _wait_ready([host])
        return host

    def _close_masters(self) -> None:
        ssh = shutil.which("ssh")
        masters = self.workdir / "cm"
        if ssh is None or not self.ssh_config.exists() or not any(masters.glob("*")):
            return
        for host in self.hosts:
            with contextlib.suppress(subprocess.TimeoutExpired):
                subprocess.run([ssh, "-F", str(self.ssh_config), "-O", "exit", host.name],  # noqa: S603
                               capture_output=True, timeout=5)

    # --- lab.json ---

    def to_json(self) -> dict[str, Any]:
        return {
            "prefix": self.prefix, "workdir": str(self.workdir), "user": self.user,
            "home": self.home, "client_key": str(self.client_key),
            "known_hosts": str(self.known_hosts), "ssh_config": str(self.ssh_config),
            "netns": self.netns, "namespaces": list(self.namespaces),
            "shared_dir": str(self.shared_dir) if self.shared_dir else None,
            "hosts": [{"name": h.name, "netns": h.netns, "address": h.address,
                       "dir": str(h.dir), "sshd_pid": h.pid, "datastores": str(h.datastores),
                       "remote_dir": h.remote_dir} for h in self.hosts],
        }

    def save(self) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        os.replace(tmp, self.state_file)

    @classmethod
    def load(cls, workdir: Path) -> Lab:
        """The lab recorded in workdir/lab.json (FileNotFoundError when there is none)."""
        data = json.loads((Path(workdir) / STATE_FILE).read_text())
        lab = cls(prefix=data["prefix"], workdir=Path(data["workdir"]), user=data["user"],
                  home=data["home"], client_key=Path(data["client_key"]),
                  known_hosts=Path(data["known_hosts"]), namespaces=list(data["namespaces"]),
                  shared_dir=Path(data["shared_dir"]) if data.get("shared_dir") else None)
        lab.hosts = [LabHost(h["name"], h["netns"], h["address"], Path(h["dir"]),
                             pid=h.get("sshd_pid")) for h in data["hosts"]]
        return lab


def _list_netns() -> list[str]:
    return sorted(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else []


def lab_namespaces(prefix: str) -> list[str]:
    """The namespaces that exist for a lab with this prefix (not for a longer prefix)."""
    name = re.compile(re.escape(prefix) + r"-(fabric|fe|h[0-9]+)")
    return [ns for ns in _list_netns() if name.fullmatch(ns)]


def _kill_netns_pids(ns: str) -> None:
    with contextlib.suppress(RuntimeError):
        for pid in _ip("netns", "pids", ns).split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)


def _delete_netns(ns: str) -> None:
    if not os.path.exists(f"/run/netns/{ns}"):
        return
    _kill_netns_pids(ns)
    with contextlib.suppress(RuntimeError):
        _ip("netns", "delete", ns)


def clean_stale() -> list[str]:
    """Delete `nubo-t<pid>-*` namespaces whose creating process is gone."""
    removed = []
    for ns in _list_netns():
        match = _STALE.match(ns)
        if match is None:
            continue
        try:
            os.kill(int(match.group(1)), 0)
            continue  # still alive
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        _delete_netns(ns)
        removed.append(ns)
    return removed


def create_hosts(n: int, workdir: Path, *, prefix: str | None = None, detached: bool = False,
                 shared: bool = False) -> Lab:
    """Create n hosts h1..hN; on any error, everything created so far is removed.

    detached: the sshds get a session of their own and outlive this process (the CLI);
    `Lab.load(workdir).destroy()` stops them later. shared: see the module docstring."""
    if not 1 <= n <= 200:
        raise ValueError("between 1 and 200 hosts")
    if os.geteuid() != 0:
        raise LabUnavailable("network namespaces need root")
    require_tool("ip")
    sshd = require_tool("sshd")
    keygen = require_tool("ssh-keygen")
    nc = require_tool("nc")
    clean_stale()
    workdir = Path(workdir).resolve()  # sshd needs absolute paths (re-exec)
    workdir.mkdir(parents=True, exist_ok=True)
    prefix = prefix or (cli_prefix(workdir) if detached else f"nubo-t{os.getpid()}")
    if lab_namespaces(prefix):
        raise RuntimeError(f"a lab named {prefix} exists already ({workdir})")
    lab = Lab(
        prefix=prefix,
        workdir=workdir,
        user=pwd.getpwuid(os.geteuid()).pw_name,
        home=pwd.getpwuid(os.geteuid()).pw_dir,
        client_key=workdir / "id_ed25519",
        known_hosts=workdir / "known_hosts",
        shared_dir=workdir / "shared" if shared else None,
    )
    try:
        lab.save()  # first: a later `down` finds a half-made lab too
        _build(lab, n, sshd, keygen, detached)
        lab.ssh_config.write_text(ssh_config_text(lab, nc, _ip_path()))
        lab.save()
    except BaseException:
        lab.destroy()
        raise
    return lab


def _add_netns(lab: Lab, ns: str) -> None:
    _ip("netns", "add", ns)
    lab.namespaces.append(ns)
    _ip("-n", ns, "link", "set", "lo", "up")


def _plug(lab: Lab, ns: str, port: str, address: str) -> None:
    """veth pair: `port` on the fabric bridge, eth0 with `address` inside ns."""
    fabric = f"{lab.prefix}-fabric"
    _ip("-n", fabric, "link", "add", port, "type", "veth", "peer", "name", "eth0",
         "netns", ns)
    _ip("-n", fabric, "link", "set", port, "master", "br0", "up")
    _ip("-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
    _ip("-n", ns, "link", "set", "eth0", "up")


def _keypair(keygen: str, key: Path, comment: str) -> None:
    for path in (key, key.with_suffix(".pub")):
        path.unlink(missing_ok=True)
    _run(keygen, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(key))


def _build(lab: Lab, n: int, sshd: str, keygen: str, detached: bool) -> None:
    fabric = f"{lab.prefix}-fabric"
    _add_netns(lab, fabric)
    _ip("-n", fabric, "link", "add", "br0", "type", "bridge")
    _ip("-n", fabric, "link", "set", "br0", "up")
    _add_netns(lab, lab.netns)
    _plug(lab, lab.netns, "fe", f"{SUBNET}.10")
    lab.save()

    _keypair(keygen, lab.client_key, "nubo-lab")
    authorized = lab.workdir / "authorized_keys"
    shutil.copyfile(lab.client_key.with_suffix(".pub"), authorized)
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir
    if lab.shared_dir is not None:
        lab.shared_dir.mkdir(exist_ok=True)

    known = []
    for i in range(1, n + 1):
        host = LabHost(f"h{i}", f"{lab.prefix}-h{i}", f"{SUBNET}.{10 + i}", lab.workdir / f"h{i}")
        lab.hosts.append(host)
        _add_netns(lab, host.netns)
        _plug(lab, host.netns, host.name, host.address)
        host.dir.mkdir(parents=True, exist_ok=True)
        host.datastores.mkdir(exist_ok=True)
        host.home.mkdir(exist_ok=True)
        key = host.dir / "ssh_host_ed25519_key"
        _keypair(keygen, key, host.name)
        known.append(f"{host.address} {key.with_suffix('.pub').read_text().strip()}\n")
        host.sshd_config.write_text(sshd_config_text(host, authorized))
        _start_sshd(lab, host, sshd, detached)
        lab.save()
    lab.known_hosts.write_text("".join(known))
    _wait_ready(lab.hosts)


def _start_sshd(lab: Lab, host: LabHost, sshd: str, detached: bool) -> None:
    log = host.dir / "sshd.log"
    log.write_text("")
    # `ip netns exec` runs in a mount namespace of its own (slave propagation): the binds
    # (the host's home over the user's, its OVS files, the shared store) stay inside it. ip, sh and sshd
    # all exec, so the pid is sshd's.
    start = 'mount --bind "$1" "$2" && shift 2 && mount --bind "$1" "$2" && shift 2 && '
    host.ovs_dir.mkdir(exist_ok=True)
    Path(OVS_RUN).mkdir(parents=True, exist_ok=True)  # the mount point (no OVS needed)
    binds = [str(host.home), lab.home, str(host.ovs_dir), OVS_RUN]
    if lab.shared_dir is not None:
        start += 'mount --bind "$1" "$2" && shift 2 && '
        binds += [str(lab.shared_dir), str(lab.shared_dir)]
    argv = [_ip_path(), "netns", "exec", host.netns, "sh", "-c", start + 'exec "$@"', "lab",
            *binds, sshd, "-D", "-f", str(host.sshd_config), "-E", str(log)]
    proc = subprocess.Popen(  # noqa: S603
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=detached,
    )
    host.sshd, host.pid = proc, proc.pid


def _wait_ready(hosts: list[LabHost]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    waiting = list(hosts)
    while waiting:
        for host in list(waiting):
            log = (host.dir / "sshd.log").read_text()
            if "Server listening" in log:
                waiting.remove(host)
            elif not host.sshd_running():
                raise RuntimeError(f"sshd of {host.name} exited: {log.strip()}")
        if waiting and time.monotonic() > deadline:
            raise RuntimeError(f"sshd not listening after {READY_TIMEOUT} s on "
                               + ", ".join(h.name for h in waiting))
        if waiting:
            time.sleep(0.01)
