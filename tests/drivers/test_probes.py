"""The KVM probes (drivers/remotes/im/kvm.d) through drivers.runner.run_probes, as the
monitor runs them: on the front-end, on canned /proc files, and on lab hosts over SSH, their
output read by core.monitor.parse_metrics. Then the seed's exercise: an operator's probe
`kvm.d/my_rvms` reaches a host once the tree is synced (`nubo host sync`), and a probe that
fails makes the whole monitor call fail with its message.

Lab hosts are network namespaces on one kernel: /proc/meminfo, `nproc` and `hostname` are
the machine's, /proc/net/dev is the host's own. Expected values are read on the host itself,
over the same SSH connection, by a helper script in the test's copy of the tree.
"""

from __future__ import annotations

import asyncio
import os
import platform
import re
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import pytest

from core.drivers import Result
from core.monitor import parse_metrics
from core.template import Template
from drivers.runner import HostAccess, LocalRunner, Runner, RunnerPool, run_probes
from tests.drivers.conftest import SYSTEM_PATH, write_script
from tests.drivers.documents import Recorder, host_document

if TYPE_CHECKING:
    from drivers.lab import Lab

T = TypeVar("T")

KVM_METRICS = ("HYPERVISOR", "HOSTNAME", "ARCH", "MODELNAME", "CPUSPEED", "TOTALCPU", "USEDCPU",
               "FREECPU", "TOTALMEMORY", "USEDMEMORY", "FREEMEMORY", "NETRX", "NETTX")
NUMERIC = KVM_METRICS[4:]

# The seed's exercise. Lab hosts share one process table, so "on this host" means "in this
# host's network namespace"; on a real host every process is in it and this is pgrep -c.
MY_RVMS = """#!/bin/sh
# im/kvm.d/my_rvms <hid> <host>: qemu processes running on this host.
here=$(readlink /proc/self/ns/net)
n=0
for pid in $(pgrep qemu); do
    [ "$(readlink "/proc/$pid/ns/net" 2>/dev/null)" = "$here" ] && n=$((n + 1))
done
echo "MY_RVMS=$n"
"""
BROKEN = """#!/bin/sh
echo "INFO: zz-broken: looking for the storage controller" >&2
echo "ERROR: zz-broken: cannot read /sys/class/no-such-controller" >&2
exit 1
"""
# What the probes are compared with, read on the host by other means.
FACTS = """#!/bin/sh
echo "NPROC=$(nproc)"
echo "HOSTNAME=$(hostname)"
echo "ARCH=$(uname -m)"
sed -n 's/^MemTotal: *\\([0-9]*\\) kB$/MEMTOTAL=\\1/p' /proc/meminfo
"""
ECHO = "#!/bin/sh\nexec cat\n"
PAYLOAD = 512 * 1024


def nproc() -> int:
    return int(subprocess.run(["nproc"], capture_output=True, text=True, check=True).stdout)


def mem_total(meminfo: str) -> int:
    found = re.search(r"^MemTotal:\s+(\d+) kB$", meminfo, re.M)
    assert found is not None
    return int(found.group(1))


def probe(runner: Runner, host: str = "h1", log: Recorder | None = None) -> Awaitable[Result]:
    """`im/run_probes kvm 3 <host>`, as core.monitor calls it (the host's XML on stdin)."""
    return run_probes(runner, "kvm", 3, host, stdin=host_document(3, host), timeout=10, log=log)


def metrics_of(result: Result) -> Template:
    assert result.ok, result.error
    return parse_metrics(result.stdout)


def number(metrics: Template, name: str) -> int:
    value = metrics.get(name)
    assert isinstance(value, str) and value.isdigit(), f"{name}={value!r}"
    return int(value)


def check_consistent(metrics: Template, cores: int, memtotal: int) -> None:
    """Every KVM metric, with values that agree with each other and with the host."""
    assert set(KVM_METRICS) <= set(metrics.names()), metrics.dumps()
    for name in NUMERIC:
        number(metrics, name)
    assert metrics.get("HYPERVISOR") == "kvm"
    model = metrics.get("MODELNAME")
    assert isinstance(model, str) and model and not set(model) & set(',"\\')
    assert number(metrics, "TOTALCPU") == 100 * cores
    assert number(metrics, "USEDCPU") + number(metrics, "FREECPU") == 100 * cores
    assert number(metrics, "TOTALMEMORY") == memtotal
    assert number(metrics, "USEDMEMORY") + number(metrics, "FREEMEMORY") == memtotal
    assert 0 < number(metrics, "FREEMEMORY") <= memtotal


def fresh_access(lab: Lab, name: str = "h1") -> HostAccess:
    """Access to a host with a remote dir nobody used yet."""
    return lab.access(name, remote_dir=f"{lab.host(name).dir}/probes-{uuid.uuid4().hex[:8]}")


def with_pool(remotes: Path, body: Callable[[RunnerPool], Awaitable[T]]) -> T:
    """`body` with the daemon's RunnerPool over `remotes` (access given per host)."""
    async def go() -> T:
        pool = RunnerPool(remotes, ssh_defaults=HostAccess())
        try:
            return await body(pool)
        finally:
            await pool.close()

    return asyncio.run(go())


def facts(result: Result) -> dict[str, str]:
    assert result.ok, result.error
    return dict(line.split("=", 1) for line in result.stdout.splitlines())


# --- on the front-end ----------------------------------------------------------------------


def test_kvm_probes_report_the_front_end_quickly(local: LocalRunner) -> None:
    log = Recorder()
    started = time.monotonic()
    result = asyncio.run(probe(local, host="localhost", log=log))
    elapsed = time.monotonic() - started
    metrics = metrics_of(result)
    check_consistent(metrics, nproc(), mem_total(Path("/proc/meminfo").read_text()))
    assert metrics.get("HOSTNAME") == platform.node()
    assert metrics.get("ARCH") == platform.machine()
    assert result.stdout.count("\n") == 1  # one line, as 3.4's run_probes prints it
    assert log.messages("E") == []
    assert elapsed < 1.0, f"run_probes kvm took {elapsed:.2f} s"


def test_kvm_probes_parse_canned_proc_files(remotes: Path, tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    (proc / "net").mkdir(parents=True)
    (proc / "cpuinfo").write_text(
        "processor\t: 0\nvendor_id\t: GenuineIntel\n"
        'model name\t: Intel(R) Xeon(R), "Fancy"   CPU \\ E5-2670  \n'
        "cpu MHz\t\t: 2599.998\ncpu cores\t: 8\n\nprocessor\t: 1\nmodel name\t: other\n")
    # one sample repeated: no tick in between, so the share since boot (80 % idle)
    (proc / "stat").write_text("cpu  500 100 400 4000 0 0 0 0 300 0\ncpu0 1 1 1 1 1 1 1 1\n")
    (proc / "meminfo").write_text(  # a kernel before 3.14: no MemAvailable
        "MemTotal:        8000000 kB\nMemFree:          100000 kB\n"
        "Buffers:           20000 kB\nCached:           300000 kB\nSwapCached:  7 kB\n")
    (proc / "net" / "dev").write_text(
        "Inter-|   Receive                                                |  Transmit\n"
        " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets "
        "errs drop fifo colls carrier compressed\n"
        "    lo: 5059834212 5803480 0 0 0 0 0 0 5059834212 5803480 0 0 0 0 0 0\n"
        "  eth0:9000000000   33870    0    0    0     0          0         0  1975285   "
        "18664    0    0    0     0       0          0\n"
        "vnet12: 4000000000 1 0 0 0 0 0 0 5 1 0 0 0 0 0 0\n")
    runner = LocalRunner(remotes, env={**SYSTEM_PATH, "NUBO_PROC_DIR": str(proc)})
    metrics = metrics_of(asyncio.run(probe(runner)))
    total = 100 * nproc()
    assert {name: metrics.get(name) for name in KVM_METRICS[3:]} == {
        "MODELNAME": "Intel(R) Xeon(R) Fancy CPU E5-2670",
        "CPUSPEED": "2599",
        "TOTALCPU": str(total), "USEDCPU": str(total - total * 4 // 5),
        "FREECPU": str(total * 4 // 5),
        "TOTALMEMORY": "8000000", "USEDMEMORY": "7580000", "FREEMEMORY": "420000",
        "NETRX": "13000000000", "NETTX": "1975290",  # beyond 32 bits, lo left out
    }


@pytest.mark.parametrize(("probe_name", "missing_file"), [
    ("cpu.sh", "cpuinfo"), ("memory.sh", "meminfo"), ("net.sh", "net/dev")])
def test_a_kvm_probe_that_cannot_read_its_source_fails_run_probes(
        remotes: Path, tmp_path: Path, probe_name: str, missing_file: str) -> None:
    proc = tmp_path / "proc"
    (proc / "net").mkdir(parents=True)
    for present in {"cpuinfo", "stat", "meminfo", "net/dev"} - {missing_file}:
        (proc / present).write_text(Path("/proc", present).read_text())
    runner = LocalRunner(remotes, env={**SYSTEM_PATH, "NUBO_PROC_DIR": str(proc)})
    log = Recorder()
    result = asyncio.run(probe(runner, log=log))
    expected = f"Error executing {probe_name}: {probe_name}: cannot read {proc}/{missing_file}"
    assert (result.rc, result.error) == (1, expected)
    assert f"{probe_name}: cannot read {proc}/{missing_file}" in log.messages("E")


# --- on lab hosts, over SSH ----------------------------------------------------------------


@pytest.mark.slow
def test_kvm_probes_on_a_lab_host_report_that_host(lab: Lab, remotes: Path) -> None:
    write_script(remotes, "facts/show", FACTS)
    write_script(remotes, "facts/echo", ECHO)
    payload = os.urandom(PAYLOAD)  # incompressible: SSH compression cannot shrink it

    async def body(pool: RunnerPool) -> tuple[dict[str, str], Template, Template, Result]:
        runner = pool.for_host("h1", fresh_access(lab))
        known = facts(await runner.run("facts", "", "show", []))
        before = metrics_of(await probe(runner))
        echoed = await runner.run("facts", "", "echo", [], stdin=payload)
        for _ in range(5):  # and a few more small commands
            assert (await runner.run("facts", "", "show", [])).ok
        return known, before, metrics_of(await probe(runner)), echoed

    known, before, after, echoed = with_pool(remotes, body)
    assert echoed.ok and echoed.stdout
    for metrics in (before, after):
        check_consistent(metrics, int(known["NPROC"]), int(known["MEMTOTAL"]))
        assert metrics.get("HOSTNAME") == known["HOSTNAME"]
        assert metrics.get("ARCH") == known["ARCH"]
    # h1's eth0 carried the payload in (stdin) and out (stdout) between the two probes
    assert number(after, "NETRX") - number(before, "NETRX") >= PAYLOAD
    assert number(after, "NETTX") - number(before, "NETTX") >= PAYLOAD


@pytest.mark.slow
def test_custom_probe_reaches_the_host_after_a_sync(lab: Lab, remotes: Path) -> None:
    access = fresh_access(lab)
    probe_path = "im/kvm.d/my_rvms"
    log = Recorder()

    async def body(pool: RunnerPool) -> tuple[Template, Template, Template]:
        first = metrics_of(await probe(pool.for_host("h1", access)))
        write_script(remotes, probe_path, MY_RVMS)
        # the pool hashed the tree once: the host is not told until `nubo host sync`
        unsynced = metrics_of(await probe(pool.for_host("h1")))
        pool.invalidate()  # what `nubo host sync` does (core.monitor wakes up and calls it)
        synced = metrics_of(await probe(pool.for_host("h1"), log=log))
        return first, unsynced, synced

    first, unsynced, synced = with_pool(remotes, body)
    assert "MY_RVMS" not in first.names() and "MY_RVMS" not in unsynced.names()
    assert f"Copying remotes to h1:{access.remote_dir}" in log.messages("I")
    assert number(synced, "MY_RVMS") >= 0  # no VM runs in this lab: normally 0
    assert set(KVM_METRICS) <= set(synced.names())
    assert os.access(Path(access.remote_dir) / probe_path, os.X_OK)


@pytest.mark.slow
def test_a_failing_probe_fails_run_probes_on_the_host(lab: Lab, remotes: Path) -> None:
    write_script(remotes, "im/kvm.d/zz-broken", BROKEN)
    log = Recorder()
    result = with_pool(remotes, lambda pool: probe(pool.for_host("h2", fresh_access(lab, "h2")),
                                                   host="h2", log=log))
    assert (result.rc, result.error) == (
        1, "Error executing zz-broken: zz-broken: cannot read /sys/class/no-such-controller")
    assert result.stdout == ""  # nothing half-reported: the monitor sets the host in ERROR
    assert "zz-broken: looking for the storage controller" in log.messages("I")
