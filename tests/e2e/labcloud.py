"""A live daemon with lab hosts, as the e2e tests on real SSH hosts see it."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from drivers.lab import Lab, LabHost, LabUnavailable, create_hosts
from tests.live import FAST_CONF, LiveNubo, call, wait_until
from tests.strict import missing

# vmm/remote-dummy and im/remote-dummy.d: the packaged dummy drivers copied without their
# LOCAL marker (write_remote_dummy), so every action runs on the host over SSH
REMOTE_DUMMY = "remote-dummy"


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check)  # noqa: S603


@dataclass
class Cloud:
    nubo: LiveNubo
    lab: Lab

    def call(self, method: str, *args: object) -> Any:
        return call(self.nubo, method, *args)

    def host_id(self, name: str) -> int:
        for host in ET.fromstring(self.call("one.hostpool.info")).findall("HOST"):
            if host.findtext("NAME") == name:
                return int(host.findtext("ID") or -1)
        raise AssertionError(f"no host {name}")

    def host_doc(self, name: str) -> ET.Element:
        return ET.fromstring(self.call("one.host.info", self.host_id(name)))

    def vm_doc(self, vm_id: int) -> ET.Element:
        return ET.fromstring(self.call("one.vm.info", vm_id))

    def console(self, vm_id: int) -> str:
        """The guest's serial console so far, read from its VM dir on its host ("" before
        it has one)."""
        records = self.vm_doc(vm_id).findall("HISTORY_RECORDS/HISTORY")
        if not records:
            return ""
        path = Path(records[-1].findtext("DS_LOCATION") or "") / "0" / str(vm_id) / "console.log"
        try:
            return path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def veth(self, name: str, address: str, *, port: str = "", mac: str = "",
             host: str = "h1") -> str:
        """Namespace `<lab prefix>-<name>` (Lab.destroy() deletes it, whatever happens)
        whose eth0 has `address` (ip/len) and `mac`; its peer `port` (default `name`) is
        up on `host`, in no bridge. Returns the namespace."""
        netns, ns, port = self.lab.host(host).netns, f"{self.lab.prefix}-{name}", port or name
        run("ip", "netns", "add", ns)
        self.lab.namespaces.append(ns)
        run("ip", "-n", netns, "link", "add", port, "type", "veth", "peer", "name", "eth0",
            "netns", ns)
        run("ip", "-n", netns, "link", "set", port, "up")
        if mac:
            run("ip", "-n", ns, "link", "set", "eth0", "address", mac)
        run("ip", "-n", ns, "link", "set", "eth0", "up")
        run("ip", "-n", ns, "addr", "add", address, "dev", "eth0")
        return ns

    def endpoint(self, bridge: str, name: str, address: str, *, mac: str = "",
                 host: str = "h1") -> str:
        """A veth endpoint standing where a VM would (veth()), its peer `<name>` a port of
        Linux bridge `bridge` on `host` (made if missing). Returns the namespace."""
        netns = self.lab.host(host).netns
        if run("ip", "-n", netns, "link", "show", bridge, check=False).returncode:
            run("ip", "-n", netns, "link", "add", bridge, "type", "bridge")
            run("ip", "-n", netns, "link", "set", bridge, "up")
        ns = self.veth(name, address, mac=mac, host=host)
        run("ip", "-n", netns, "link", "set", name, "master", bridge)
        return ns

    def ovs_bridge(self, bridge: str, host: str = "h1") -> LabHost:
        """Open vSwitch running on lab host `host` (LabHost.start_ovs, stopped with the
        lab; skipped, strict: failed, where it cannot run) with `bridge` on its userspace
        datapath, made if missing. Returns the host."""
        if shutil.which("ovs-vsctl") is None:
            missing("Open vSwitch (ovs-vsctl, package openvswitch-switch)")
        lab_host = self.lab.host(host)
        try:
            lab_host.start_ovs()
        except LabUnavailable as exc:
            missing(f"Open vSwitch ({exc})")
        lab_host.ovs("ovs-vsctl", "--may-exist", "add-br", bridge, "--", "set", "bridge",
                     bridge, "datapath_type=netdev")
        return lab_host

    def ovs_endpoint(self, bridge: str, name: str, address: str, *, mac: str = "",
                     tag: int = 0, host: str = "h1") -> str:
        """endpoint() on an Open vSwitch bridge (ovs_bridge): the peer `<name>` is a port
        of `bridge`, an access port of VLAN `tag` when one is given. Returns the
        namespace."""
        ns = self.veth(name, address, mac=mac, host=host)
        self.lab.host(host).ovs("ovs-vsctl", "add-port", bridge, name,
                                *(["--", "set", "port", name, f"tag={tag}"] if tag else []))
        return ns

    def ovs_flows(self, bridge: str, mark: int, host: str = "h1") -> list[str]:
        """The flows of `bridge` on `host` under cookie `mark`, as ovs-ofctl dumps them."""
        listing = self.lab.host(host).ovs("ovs-ofctl", "dump-flows", bridge,
                                          f"cookie={mark:#x}/-1")
        return [line.strip() for line in listing.splitlines() if "cookie=" in line]

    def at_endpoint(self, name: str, *argv: str) -> subprocess.CompletedProcess[str]:
        """A command inside endpoint `name`'s namespace; never raises on its exit status."""
        return run("ip", "netns", "exec", f"{self.lab.prefix}-{name}", *argv, check=False)

    def web(self, name: str, address: str) -> str:
        """What port 80 of `address` answers endpoint `name` ("" when nothing does)."""
        return self.at_endpoint(name, "curl", "-s", "--max-time", "4",
                                f"http://{address}/").stdout.strip()

    def ping(self, name: str, address: str) -> bool:
        return self.at_endpoint(name, "ping", "-c", "1", "-W", "3", address).returncode == 0

    def in_host(self, *argv: str, host: str = "h1") -> str:
        """A command's output inside a lab host's namespace (iptables -S, ebtables -L)."""
        return run("ip", "netns", "exec", self.lab.host(host).netns, *argv).stdout

    def guest_on(self, network: str, name: str, os_vector: str, *, bridge: str, ip: str,
                 mask: str = "255.255.255.0", filters: str = "", extra: str = "") -> int:
        """A new FIXED network with one lease, and a test guest with a NIC on it that takes
        the address from its context (`extra`: more of the VM's template); returns the VM
        id."""
        net = self.call("one.vn.allocate", f'NAME = "{network}"\nTYPE = FIXED\n'
                        f'BRIDGE = "{bridge}"\nLEASES = [ IP = "{ip}" ]\n' + filters, -1)
        return int(self.call(
            "one.vm.allocate", f'NAME = "{name}"\nCPU = "0.1"\nMEMORY = "96"\n' + os_vector
            + f'NIC = [ NETWORK_ID = "{net}" ]\nCONTEXT = [ HOSTNAME = "$NAME", '
            f'ETH0_IP = "$NIC[IP]", ETH0_MASK = "{mask}" ]\n' + extra))

    def qemu_hosts(self, vm_id: int) -> list[str]:
        """The lab hosts where a qemu process of VM `vm_id` runs, found from the processes
        themselves (the lab's hosts share one PID namespace; each process's network
        namespace tells its host), not from anything Nubo or its driver wrote. Processes
        in namespaces that are not this lab's hosts are other labs' and are left out."""
        names = {}
        for host in self.lab.hosts:
            try:
                names[f"net:[{os.stat(f'/run/netns/{host.netns}').st_ino}]"] = host.name
            except FileNotFoundError:
                pass  # a host whose namespace is gone runs nothing
        found = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                argv = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if not argv[0].endswith(b"qemu-system-x86_64") or "-name" not in map(bytes.decode, argv):
                continue
            if argv[argv.index(b"-name") + 1] != f"one-{vm_id}".encode():
                continue
            try:  # the namespace itself, by inode (`ip netns identify` can miss it)
                netns = os.readlink(proc / "ns" / "net")
            except OSError:
                continue  # exited meanwhile
            if netns in names:  # else another lab's (tests of other processes run too)
                found.append(names[netns])
        return sorted(found)


def make_lab(workdir: Path, name: str, n: int = 2) -> Lab:
    """n lab hosts under a prefix of this process and `name` (tests/drivers may hold a lab
    with the default prefix in this session); skipped (failed, strict) where a lab cannot
    be built."""
    try:
        return create_hosts(n, workdir, prefix=f"nubo-t{os.getpid()}-{name}")
    except LabUnavailable as exc:
        missing(f"the namespace lab ({exc})")


def write_remote_dummy(remotes: Path) -> None:
    """The seed's exercise: a new driver is a folder of executables. Write it into the
    daemon's remotes before its first start (the install keeps it)."""
    from core.daemon import PACKAGED_REMOTES

    skip = shutil.ignore_patterns("LOCAL", "__pycache__")
    shutil.copytree(PACKAGED_REMOTES / "vmm" / "dummy", remotes / "vmm" / REMOTE_DUMMY,
                    ignore=skip)
    shutil.copytree(PACKAGED_REMOTES / "im" / "dummy.d", remotes / "im" / f"{REMOTE_DUMMY}.d",
                    ignore=skip)
    shutil.copytree(PACKAGED_REMOTES / "lib", remotes / "lib", dirs_exist_ok=True,
                    ignore=skip)


def add_remote_dummy_host(nubo: LiveNubo, lab: Lab, host: LabHost, *attrs: str) -> None:
    """`nubo host create` for a lab host on the remote-dummy drivers; attrs: more
    `NAME=VALUE` for its template."""
    extra = [arg for attr in attrs for arg in ("--attr", attr)]
    nubo.cli("host", "create", host.name, "--im", REMOTE_DUMMY, "--vmm", REMOTE_DUMMY,
             "--attr", f"SSH_ADDRESS={host.address}",
             "--attr", f"SSH_NETNS={lab.netns}",
             "--attr", f"SCRIPTS_REMOTE_DIR={host.remote_dir}",
             "--attr", f"DATASTORE_LOCATION={host.datastores}", *extra)


# FAST_CONF's monitoring undone: a probe every 60 s that may take 60 s, as OpenNebula (and
# Nubo) ship; failures are found by the heartbeats (core.heartbeat) at their defaults
MONITORING_DEFAULTS = "MONITORING_INTERVAL = 60\nMONITOR_TIMEOUT = 60\n"


def lab_conf(lab: Lab) -> str:
    """nubo.conf for a daemon whose hosts are the lab's (no localhost host)."""
    return (FAST_CONF + f"SSH_USER = {lab.user}\nSSH_KEY = {lab.client_key}\n"
            f"SSH_KNOWN_HOSTS = {lab.known_hosts}\nSSH_CONFIG = {lab.ssh_config}\n"
            "REGISTER_LOCALHOST = NO\n")


def add_qemu_hosts(nubo: LiveNubo, lab: Lab, vnm: str = "dummy") -> None:
    """Every lab host as a KVM host running qemu, both datastores on tm/ssh; returns once
    the daemon has monitored them all."""
    for host in lab.hosts:
        nubo.cli("host", "create", host.name, "--im", "kvm", "--vmm", "qemu", "--vnm", vnm,
                 "--attr", f"SSH_ADDRESS={host.address}", "--attr", f"SSH_NETNS={lab.netns}",
                 "--attr", f"SCRIPTS_REMOTE_DIR={host.remote_dir}",
                 "--attr", f"DATASTORE_LOCATION={host.datastores}")
    for ds in ("system", "default"):
        nubo.cli("datastore", "update", ds, "--tm", "ssh")
    cloud = Cloud(nubo, lab)
    for host in lab.hosts:
        wait_until(f"{host.name} monitored",
                   lambda h=host.name: cloud.host_doc(h).findtext("STATE") == "2", 60)




@contextlib.contextmanager
def remote_dummy_cloud(tmp_path_factory: pytest.TempPathFactory, name: str,
                       extra: Callable[[Lab], str] = lambda lab: "",
                       prepare: Callable[[Path], None] = lambda remotes: None,
                       n: int = 2) -> Iterator[Cloud]:
    """A daemon whose hosts are n lab hosts on the remote-dummy drivers, all MONITORED; its
    nubo.conf is lab_conf plus `extra(lab)`, and `prepare(remotes)` adds to its remotes
    tree before the first start. Everything is torn down after, whatever happened."""
    lab = make_lab(tmp_path_factory.mktemp(f"{name}-lab"), name, n)
    nubo: LiveNubo | None = None
    try:
        nubo = LiveNubo(tmp_path_factory.mktemp(f"{name}-nubo"),
                        conf=lab_conf(lab) + extra(lab))
        write_remote_dummy(nubo.var / "remotes")  # before the first start: install keeps it
        prepare(nubo.var / "remotes")
        nubo.start()
        made = Cloud(nubo, lab)
        for host in lab.hosts:
            add_remote_dummy_host(nubo, lab, host)
        for host in lab.hosts:
            wait_until(f"{host.name} monitored",
                       lambda h=host.name: made.host_doc(h).findtext("STATE") == "2")
        yield made
    finally:
        if nubo is not None:
            nubo.stop()
        lab.destroy()


@contextlib.contextmanager
def qemu_cloud(tmp_path_factory: pytest.TempPathFactory, name: str, n: int = 2,
               extra: Callable[[Lab], str] = lambda lab: "", vnm: str = "dummy"
               ) -> Iterator[Cloud]:
    """A daemon whose hosts are n lab hosts running qemu (add_qemu_hosts), its nubo.conf
    being lab_conf plus `extra(lab)`; everything is torn down after, whatever happened."""
    lab = make_lab(tmp_path_factory.mktemp(f"{name}-lab"), name, n)
    nubo: LiveNubo | None = None
    try:
        nubo = LiveNubo(tmp_path_factory.mktemp(f"{name}-nubo"), conf=lab_conf(lab) + extra(lab))
        nubo.start()
        add_qemu_hosts(nubo, lab, vnm)
        yield Cloud(nubo, lab)
    finally:
        if nubo is not None:
            nubo.stop()
        lab.destroy()
