"""A live daemon monitors a lab host with the packaged KVM probes (IM_MAD kvm, run over SSH on
the host) and places VMs (VMM_MAD dummy) by a probe the operator adds: the seed's exercise.

1. The host's share and template come from the host itself: MAX_CPU = 100 x nproc and
   MAX_MEM = MemTotal, compared with what `nproc` and /proc/meminfo say over ssh there.
2. `im/kvm.d/my_rvms` is written into the daemon's own remotes tree (<var>/remotes, where
   operators edit), `nubo host sync` sends it, MY_RVMS shows in `nubo host show`, and a
   VM's REQUIREMENTS use it: `MY_RVMS < 5` is placed, `MY_RVMS > 5` stays PENDING with the
   scheduler's reason.

Tests run in file order on one daemon and one lab host.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.lifecycle import HostState
from drivers.lab import Lab, LabUnavailable, create_hosts, require_tool
from tests.drivers.test_probes import MY_RVMS
from tests.e2e.labcloud import Cloud, wait_until
from tests.live import FAST_CONF, LiveNubo
from tests.strict import missing

pytestmark = pytest.mark.slow

FACTS = "nproc; hostname; uname -m; sed -n 's/^MemTotal: *\\([0-9]*\\) kB$/\\1/p' /proc/meminfo"


def on_host(lab: Lab, name: str, command: str) -> list[str]:
    """`command` run on a lab host by the OpenSSH client: what the host itself reports."""
    ssh = shutil.which("ssh")
    if ssh is None:
        missing("the OpenSSH client (ssh)")
    argv = [require_tool("ip"), "netns", "exec", lab.netns, ssh, "-F", "/dev/null",
            "-i", str(lab.client_key), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={lab.known_hosts}", "-l", lab.user,
            lab.host(name).address, command]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)  # noqa: S603
    assert done.returncode == 0, done.stderr
    return done.stdout.split("\n")


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    try:
        # own prefix: tests/drivers may hold a lab with the default one in this session
        lab = create_hosts(1, tmp_path_factory.mktemp("kvm-lab"), prefix=f"nubo-t{os.getpid()}-kvm")
    except LabUnavailable as exc:
        missing(f"the namespace lab ({exc})")
    nubo: LiveNubo | None = None
    try:
        conf = (FAST_CONF + f"SSH_USER = {lab.user}\nSSH_KEY = {lab.client_key}\n"
                f"SSH_KNOWN_HOSTS = {lab.known_hosts}\n")
        nubo = LiveNubo(tmp_path_factory.mktemp("kvm-nubo"), conf=conf)
        nubo.start()
        made = Cloud(nubo, lab)
        host = lab.host("h1")
        nubo.cli("host", "create", host.name, "--im", "kvm", "--vmm", "dummy",
                 "--attr", f"SSH_ADDRESS={host.address}",
                 "--attr", f"SSH_NETNS={lab.netns}",
                 "--attr", f"SCRIPTS_REMOTE_DIR={host.remote_dir}",
                 "--attr", f"DATASTORE_LOCATION={host.datastores}")

        def monitored() -> bool:
            doc = made.host_doc("h1")
            assert doc.findtext("STATE") != str(int(HostState.ERROR)), doc.findtext("TEMPLATE/ERROR")
            return doc.findtext("STATE") == str(int(HostState.MONITORED))

        wait_until("h1 MONITORED", monitored)
        yield made
    finally:
        if nubo is not None:
            nubo.stop()
        lab.destroy()


def test_kvm_probes_fill_the_host_share_from_the_host(cloud: Cloud) -> None:
    cores, hostname, arch, memtotal, _ = on_host(cloud.lab, "h1", FACTS)
    doc = cloud.host_doc("h1")
    assert (doc.findtext("IM_MAD"), doc.findtext("VM_MAD")) == ("kvm", "dummy")
    share = {child.tag: child.text or "" for child in doc.findall("HOST_SHARE/*")}
    assert share["MAX_CPU"] == str(100 * int(cores))
    assert share["MAX_MEM"] == memtotal
    assert int(share["FREE_CPU"]) + int(share["USED_CPU"]) == int(share["MAX_CPU"])
    assert int(share["FREE_MEM"]) + int(share["USED_MEM"]) == int(share["MAX_MEM"])
    assert 0 < int(share["FREE_MEM"]) <= int(memtotal)
    tmpl = doc.find("TEMPLATE")
    assert tmpl is not None
    assert (tmpl.findtext("HYPERVISOR"), tmpl.findtext("HOSTNAME"), tmpl.findtext("ARCH")) == (
        "kvm", hostname, arch)
    assert tmpl.findtext("TOTALCPU") == share["MAX_CPU"]
    assert tmpl.findtext("TOTALMEMORY") == memtotal
    assert (tmpl.findtext("MODELNAME") or "").strip()
    for name in ("CPUSPEED", "NETRX", "NETTX"):
        assert (tmpl.findtext(name) or "").isdigit(), name
    assert int(tmpl.findtext("NETRX") or 0) > 0  # at least the SSH sessions that probed it
    # the probes ran on the host, from the tree the daemon copied to its SCRIPTS_REMOTE_DIR
    remote = Path(cloud.lab.host("h1").remote_dir)
    assert os.access(remote / "im" / "kvm.d" / "cpu.sh", os.X_OK)


def test_custom_probe_is_synced_and_drives_placement(cloud: Cloud) -> None:
    nubo = cloud.nubo
    probe = nubo.var / "remotes" / "im" / "kvm.d" / "my_rvms"
    probe.write_text(MY_RVMS)
    probe.chmod(0o755)
    nubo.cli("host", "sync")
    wait_until("MY_RVMS in h1's template", lambda: cloud.host_doc("h1").findtext("TEMPLATE/MY_RVMS"))
    assert cloud.host_doc("h1").findtext("TEMPLATE/MY_RVMS") == "0"  # the dummy driver runs no qemu
    assert 'MY_RVMS="0"' in nubo.cli("host", "show", "h1").stdout.splitlines()
    assert (Path(cloud.lab.host("h1").remote_dir) / "im" / "kvm.d" / "my_rvms").read_text() == MY_RVMS

    fits = int(cloud.call("one.vm.allocate", 'NAME = "few-vms"\nMEMORY = 64\nCPU = 0.01\n'
                          'REQUIREMENTS = "MY_RVMS < 5"\n'))
    crowded = int(cloud.call("one.vm.allocate", 'NAME = "many-vms"\nMEMORY = 64\nCPU = 0.01\n'
                             'REQUIREMENTS = "MY_RVMS > 5"\n'))
    # FREE_CPU is a 0.2 s sample: on a busy machine a cycle may find it short, so be patient
    nubo.wait_vm(fits, "RUNNING", timeout=60)
    placed = cloud.vm_doc(fits).find("HISTORY_RECORDS/HISTORY[last()]")
    assert placed is not None and placed.findtext("HOSTNAME") == "h1"

    reason = "no host satisfies REQUIREMENTS: MY_RVMS > 5"
    wait_until("the scheduler's reason", lambda: cloud.vm_doc(crowded).findtext(
        "USER_TEMPLATE/SCHED_MESSAGE") == reason)
    time.sleep(3)  # a few more scheduler cycles (SCHED_INTERVAL = 1) and monitorings
    nubo.wait_vm(crowded, "PENDING", timeout=1)
    assert cloud.vm_doc(crowded).findtext("USER_TEMPLATE/SCHED_MESSAGE") == reason
