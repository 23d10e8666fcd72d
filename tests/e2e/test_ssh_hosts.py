"""A live daemon drives real SSH hosts (network namespaces with their own sshd, drivers/lab.py)
through a driver that a user wrote by copying folders: no Python change anywhere.

`vmm/remote-dummy` and `im/remote-dummy.d` are copies of the packaged dummy drivers without
their LOCAL marker, so every action runs on the host over SSH, plus one probe in POSIX sh,
`zz-custom`, that reports what only the host knows: the site label in the host's own home
directory (bound over the user's home inside that host's sshd, invisible to the front-end).

Tests run in file order on one daemon and one lab; the last ones take hosts down.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.lifecycle import HostState
from drivers.lab import Lab, LabHost
from tests.e2e.labcloud import (
    REMOTE_DUMMY,
    Cloud,
    add_remote_dummy_host,
    make_lab,
    wait_until,
    write_remote_dummy,
)
from tests.live import FAST_CONF, LiveNubo

pytestmark = pytest.mark.slow

DRIVER = REMOTE_DUMMY
SITES = {"h1": "rack-a", "h2": "rack-b"}
TOTALCPU = {"h1": "200", "h2": "400"}
PROBE = """#!/bin/sh
# im/remote-dummy.d/zz-custom <hid> <host>: written by the operator, runs on the host.
echo "MY_SITE=$(cat "$HOME/.nubo-lab-site")"
"""
NO_SUCH_HOST = "no-such-host.invalid"


def state_of(cloud: Cloud, name: str) -> tuple[HostState, str]:
    doc = cloud.host_doc(name)
    return HostState(int(doc.findtext("STATE") or 0)), doc.findtext("TEMPLATE/ERROR") or ""


def wait_state(cloud: Cloud, name: str, state: HostState) -> None:
    wait_until(f"{name} {state.name}", lambda: state_of(cloud, name)[0] == state)


def fields(shown: str) -> dict[str, str]:
    """The `NAME : value` lines of `nubo host show`."""
    pairs = (line.partition(" : ") for line in shown.splitlines() if " : " in line)
    return {name.strip(): value.strip() for name, _, value in pairs}


def write_user_driver(remotes: Path) -> None:
    """The remote-dummy driver, plus the operator's own probe."""
    write_remote_dummy(remotes)
    probe = remotes / "im" / f"{DRIVER}.d" / "zz-custom"
    probe.write_text(PROBE)
    probe.chmod(0o755)


def register(nubo: LiveNubo, lab: Lab, host: LabHost) -> None:
    add_remote_dummy_host(nubo, lab, host, f"DUMMY_TOTALCPU={TOTALCPU[host.name]}")


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    lab = make_lab(tmp_path_factory.mktemp("ssh-lab"), "e2e")
    nubo: LiveNubo | None = None
    try:
        for host in lab.hosts:
            (host.home / ".nubo-lab-site").write_text(SITES[host.name] + "\n")
        conf = (FAST_CONF + f"SSH_USER = {lab.user}\nSSH_KEY = {lab.client_key}\n"
                f"SSH_KNOWN_HOSTS = {lab.known_hosts}\n")
        nubo = LiveNubo(tmp_path_factory.mktemp("ssh-nubo"), conf=conf)
        write_user_driver(nubo.var / "remotes")  # before the first start: install keeps it
        nubo.start()
        made = Cloud(nubo, lab)
        for host in lab.hosts:
            register(nubo, lab, host)
        for host in lab.hosts:
            wait_state(made, host.name, HostState.MONITORED)
        yield made
    finally:
        if nubo is not None:
            nubo.stop()
        lab.destroy()


def test_user_written_driver_monitors_hosts_over_ssh(cloud: Cloud) -> None:
    for host in cloud.lab.hosts:
        doc = cloud.host_doc(host.name)
        assert doc.findtext("IM_MAD") == DRIVER and doc.findtext("VM_MAD") == DRIVER
        assert doc.findtext("TEMPLATE/MY_SITE") == SITES[host.name]  # from the host's $HOME
        assert doc.findtext("TEMPLATE/HYPERVISOR") == "dummy"
        assert doc.findtext("HOST_SHARE/MAX_CPU") == TOTALCPU[host.name]
        # the tree went to the host's SCRIPTS_REMOTE_DIR, with its hash
        remote = Path(host.remote_dir)
        assert (remote / "im" / f"{DRIVER}.d" / "zz-custom").read_text() == PROBE
        assert (remote / "vmm" / DRIVER / "deploy").is_file()
        assert not (remote / "vmm" / DRIVER / "LOCAL").exists()
        assert (remote / ".nubo-remotes-hash").is_file()
    # the front-end itself knows no site: the value can only have come from the host
    assert not (Path.home() / ".nubo-lab-site").exists()


def test_vm_lands_where_its_requirements_point_and_runs_there(cloud: Cloud) -> None:
    nubo = cloud.nubo
    vm_id = int(cloud.call("one.vm.allocate", 'NAME = "placed"\nMEMORY = 64\nCPU = 0.1\n'
                           'REQUIREMENTS = "MY_SITE = \\"rack-b\\""\n'))
    nubo.wait_vm(vm_id, "RUNNING")
    vm = ET.fromstring(cloud.call("one.vm.info", vm_id))
    history = vm.find("HISTORY_RECORDS/HISTORY[last()]")
    assert history is not None and history.findtext("HOSTNAME") == "h2"

    h1, h2 = cloud.lab.host("h1"), cloud.lab.host("h2")
    state_file = h2.datastores / "0" / str(vm_id) / "dummy.json"
    state = json.loads(state_file.read_text())
    assert state["state"] == "running" and state["deploys"] == 1
    assert not (h1.datastores / "0" / str(vm_id)).exists()
    assert not (nubo.var / "datastores" / "0" / str(vm_id)).exists()  # nothing on the fe

    log = nubo.cli("vm", "log", str(vm_id)).stdout
    dfile = f"{h2.datastores}/0/{vm_id}/deployment.{history.findtext('SEQ')}"
    assert f"Command execution: vmm/{DRIVER}/deploy {dfile} h2 {vm_id} h2\n" in log
    assert f"vmm/{DRIVER}/deploy succeeded" in log

    nubo.cli("vm", "shutdown", str(vm_id))
    nubo.wait_vm(vm_id, "DONE")
    state = json.loads(state_file.read_text())
    assert state["state"] == "off" and state["actions"] == ["deploy", "shutdown"]
    assert f"Command execution: vmm/{DRIVER}/shutdown " in nubo.cli("vm", "log", str(vm_id)).stdout


def test_edited_probe_reaches_the_hosts_after_host_sync(cloud: Cloud) -> None:
    probe = cloud.nubo.var / "remotes" / "im" / f"{DRIVER}.d" / "zz-custom"
    probe.write_text(PROBE + 'echo "MY_PROBE_REV=2"\n')
    before = {h.name: (Path(h.remote_dir) / ".nubo-remotes-hash").read_text()
              for h in cloud.lab.hosts}
    cloud.nubo.cli("host", "sync")
    for host in cloud.lab.hosts:
        def new_value(name: str = host.name) -> bool:
            return cloud.host_doc(name).findtext("TEMPLATE/MY_PROBE_REV") == "2"

        wait_until(f"MY_PROBE_REV on {host.name}", new_value)
        remote = Path(host.remote_dir)
        assert (remote / "im" / f"{DRIVER}.d" / "zz-custom").read_text() == probe.read_text()
        assert (remote / ".nubo-remotes-hash").read_text() != before[host.name]
        assert cloud.host_doc(host.name).findtext("TEMPLATE/MY_SITE") == SITES[host.name]


def test_host_that_stops_answering_goes_to_error(cloud: Cloud) -> None:
    h2 = cloud.lab.host("h2")
    h2.power_off()
    refused = f"cannot reach host h2 ({h2.address}:22): Connection refused"
    # a probe cut in the middle says "lost connection to host h2 ..." first; the next one
    # finds nobody listening
    wait_until("h2 in ERROR, unreachable", lambda: state_of(cloud, "h2") == (
        HostState.ERROR, refused))
    shown = fields(cloud.nubo.cli("host", "show", "h2").stdout)
    assert shown["STATE"] == "ERROR" and shown["ERROR"] == refused
    assert state_of(cloud, "h1")[0] == HostState.MONITORED  # the other host is not affected


def test_host_name_that_does_not_resolve_says_so(cloud: Cloud) -> None:
    cloud.nubo.cli("host", "create", NO_SUCH_HOST, "--im", DRIVER, "--vmm", DRIVER,
                   "--attr", f"SSH_NETNS={cloud.lab.netns}")
    wait_state(cloud, NO_SUCH_HOST, HostState.ERROR)
    _, error = state_of(cloud, NO_SUCH_HOST)
    assert error.startswith(f"cannot reach host {NO_SUCH_HOST} ({NO_SUCH_HOST}:22): "
                            f"cannot resolve host name {NO_SUCH_HOST}"), error
    assert "Unknown error" not in error
    assert fields(cloud.nubo.cli("host", "show", NO_SUCH_HOST).stdout)["ERROR"] == error
