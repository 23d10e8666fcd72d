"""Namespace hosts: a throwaway fleet of "machines" made of network namespaces.

    netns <prefix>-fabric   bridge br0, no address (the management L2 segment)
    netns <prefix>-fe       eth0 10.213.0.10/24: where the front-end's sockets are made
    netns <prefix>-hN       eth0 10.213.0.(10+N)/24 and its own OpenSSH sshd (-D)

Every address lives inside a namespace; the root namespace is left alone. A process in the
root namespace reaches a host with a socket created inside the `fe` namespace
(`HostAccess(netns=lab.netns)`, see drivers.runner.netns_socket). Login is by key for the
current user; known_hosts is written from the generated host keys, so checking stays on.
Each host gets its own directories under workdir/hN: a clean home directory, bound over the
user's home inside the host's mount namespace (so no ~/.bashrc of the real machine runs on
every ssh command), a remote dir for the remotes tree and a datastores dir (paths differ per
host; /var/tmp/one and /var/lib/one are not per-host views).

No pytest here: tests/drivers/conftest.py wraps this in a fixture, and `nubo lab` will too.
Needs root, iproute2 and openssh-server (scripts/system-deps installs them).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import pwd
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from drivers.runner import HostAccess

SUBNET = "10.213.0"
READY_TIMEOUT = 10.0
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


@dataclass
class LabHost:
    name: str
    netns: str
    address: str
    dir: Path
    sshd: subprocess.Popen[bytes] | None = None

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

    def stop_sshd(self) -> None:
        """Stop the listener (new connections are refused; open sessions survive)."""
        if self.sshd is not None and self.sshd.poll() is None:
            self.sshd.terminate()
            try:
                self.sshd.wait(5)
            except subprocess.TimeoutExpired:
                self.sshd.kill()
                self.sshd.wait()

    def power_off(self) -> None:
        """As a crash: the listener and every process in the host's namespace (the open
        sessions' sshd included) get killed, so clients see their connections drop."""
        self.stop_sshd()
        with contextlib.suppress(RuntimeError):
            for pid in _ip("netns", "pids", self.netns).split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)


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

    @property
    def netns(self) -> str:
        """The front-end namespace: create client sockets here."""
        return f"{self.prefix}-fe"

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
        """Stop every sshd and every process left in the namespaces, delete the namespaces.
        Safe to call twice; the workdir is left for post-mortems."""
        for host in self.hosts:
            host.stop_sshd()
        for ns in reversed(self.namespaces):
            _delete_netns(ns)
        self.namespaces.clear()


def _delete_netns(ns: str) -> None:
    if not os.path.exists(f"/run/netns/{ns}"):
        return
    with contextlib.suppress(RuntimeError):
        for pid in _ip("netns", "pids", ns).split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
    with contextlib.suppress(RuntimeError):
        _ip("netns", "delete", ns)


def clean_stale() -> list[str]:
    """Delete `nubo-t<pid>-*` namespaces whose creating process is gone."""
    removed = []
    for ns in sorted(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else []:
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


def _sshd_config(host: LabHost, lab: Lab, authorized: Path) -> str:
    return (
        f"ListenAddress {host.address}\n"
        f"HostKey {host.dir / 'ssh_host_ed25519_key'}\n"
        f"PidFile {host.dir / 'sshd.pid'}\n"
        "PermitRootLogin prohibit-password\n"
        "PubkeyAuthentication yes\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "UsePAM no\n"
        "StrictModes no\n"
        f"AuthorizedKeysFile {authorized}\n"
        "MaxSessions 100\n"
        "MaxStartups 200:30:400\n"
        "UseDNS no\n"
        "Subsystem sftp internal-sftp\n"
    )


def create_hosts(n: int, workdir: Path, *, prefix: str | None = None) -> Lab:
    """Create n hosts h1..hN; on any error, everything created so far is removed."""
    if not 1 <= n <= 200:
        raise ValueError("between 1 and 200 hosts")
    if os.geteuid() != 0:
        raise LabUnavailable("network namespaces need root")
    require_tool("ip")
    sshd = require_tool("sshd")
    keygen = require_tool("ssh-keygen")
    clean_stale()
    workdir = Path(workdir).resolve()  # sshd needs absolute paths (re-exec)
    workdir.mkdir(parents=True, exist_ok=True)
    prefix = prefix or f"nubo-t{os.getpid()}"
    lab = Lab(
        prefix=prefix,
        workdir=workdir,
        user=pwd.getpwuid(os.geteuid()).pw_name,
        home=pwd.getpwuid(os.geteuid()).pw_dir,
        client_key=workdir / "id_ed25519",
        known_hosts=workdir / "known_hosts",
    )
    try:
        _build(lab, n, sshd, keygen)
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


def _build(lab: Lab, n: int, sshd: str, keygen: str) -> None:
    fabric = f"{lab.prefix}-fabric"
    _add_netns(lab, fabric)
    _ip("-n", fabric, "link", "add", "br0", "type", "bridge")
    _ip("-n", fabric, "link", "set", "br0", "up")
    _add_netns(lab, lab.netns)
    _plug(lab, lab.netns, "fe", f"{SUBNET}.10")

    for path in (lab.client_key, lab.client_key.with_suffix(".pub")):
        path.unlink(missing_ok=True)
    _run(keygen, "-q", "-t", "ed25519", "-N", "", "-C", "nubo-lab", "-f", str(lab.client_key))
    authorized = lab.workdir / "authorized_keys"
    shutil.copyfile(lab.client_key.with_suffix(".pub"), authorized)
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir

    known = []
    for i in range(1, n + 1):
        host = LabHost(f"h{i}", f"{lab.prefix}-h{i}", f"{SUBNET}.{10 + i}", lab.workdir / f"h{i}")
        lab.hosts.append(host)
        _add_netns(lab, host.netns)
        _plug(lab, host.netns, host.name, host.address)
        host.dir.mkdir(parents=True, exist_ok=True)
        host.datastores.mkdir(exist_ok=True)
        key = host.dir / "ssh_host_ed25519_key"
        for path in (key, key.with_suffix(".pub")):
            path.unlink(missing_ok=True)
        _run(keygen, "-q", "-t", "ed25519", "-N", "", "-C", host.name, "-f", str(key))
        known.append(f"{host.address} {key.with_suffix('.pub').read_text().strip()}\n")
        config = host.dir / "sshd_config"
        config.write_text(_sshd_config(host, lab, authorized))
        log = host.dir / "sshd.log"
        log.write_text("")
        host.home.mkdir(exist_ok=True)
        # `ip netns exec` runs in a mount namespace of its own (slave propagation): binding
        # the host's home over the user's stays inside it. ip, sh and sshd all exec, so the
        # pid is sshd's.
        start = 'mount --bind "$1" "$2" && shift 2 && exec "$@"'
        argv = [_ip_path(), "netns", "exec", host.netns, "sh", "-c", start, "lab",
                str(host.home), lab.home, sshd, "-D", "-f", str(config), "-E", str(log)]
        host.sshd = subprocess.Popen(  # noqa: S603
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    lab.known_hosts.write_text("".join(known))
    _wait_ready(lab)


def _wait_ready(lab: Lab) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    waiting = list(lab.hosts)
    while waiting:
        for host in list(waiting):
            log = (host.dir / "sshd.log").read_text()
            if "Server listening" in log:
                waiting.remove(host)
            elif host.sshd is not None and host.sshd.poll() is not None:
                raise RuntimeError(f"sshd of {host.name} exited: {log.strip()}")
        if waiting and time.monotonic() > deadline:
            raise RuntimeError(f"sshd not listening after {READY_TIMEOUT} s on "
                               + ", ".join(h.name for h in waiting))
        if waiting:
            time.sleep(0.01)
