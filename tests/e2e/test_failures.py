"""Failures in every phase reach a clear state and message, through a live daemon:
driver failures in PROLOG, BOOT and EPILOG, what VMM polls report, and probes that
fail or hang."""

from __future__ import annotations

import json
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.live import FAST_CONF, LiveNubo

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def nubo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveNubo]:
    live = LiveNubo(tmp_path_factory.mktemp("failures"),
                    conf=FAST_CONF.replace("MONITOR_TIMEOUT = 10", "MONITOR_TIMEOUT = 1"))
    try:
        live.start()
        yield live
    finally:
        live.stop()


def vm_doc(nubo: LiveNubo, vm_id: int) -> ET.Element:
    ok, doc, _ = nubo.rpc().one.vm.info(nubo.session, vm_id)
    assert ok, doc
    return ET.fromstring(doc)


def create(nubo: LiveNubo, extra: str) -> int:
    ok, vm_id, _ = nubo.rpc().one.vm.allocate(
        nubo.session, f'MEMORY = 64\nCPU = 0.1\nDISK = [ TYPE = swap, SIZE = 8 ]\n{extra}')
    assert ok, vm_id
    return int(vm_id)


@pytest.mark.parametrize(("fail", "phase"), [
    ("mkswap", "prolog"), ("deploy", "boot"),
])
def test_failure_before_running_is_failed_with_the_driver_message(
        nubo: LiveNubo, fail: str, phase: str) -> None:
    vm_id = create(nubo, f'DUMMY_FAIL = "{fail}"\n')
    nubo.wait_vm(vm_id, "FAILED")
    root = vm_doc(nubo, vm_id)
    assert root.findtext("USER_TEMPLATE/ERROR") == f"{phase} failed: dummy: injected failure of {fail}"
    log = nubo.cli("vm", "log", str(vm_id)).stdout
    assert f"failed: dummy: injected failure of {fail}" in log
    assert "Command execution:" in log
    # each line carries a timestamp like `Tue Nov 24 15:52:00 2026 [I]: ...`
    assert all(line[:3].isalpha() and "[" in line for line in log.splitlines() if line)
    nubo.cli("vm", "delete", str(vm_id))


def test_epilog_failure(nubo: LiveNubo) -> None:
    vm_id = create(nubo, 'DUMMY_FAIL = "delete"\n')
    nubo.wait_vm(vm_id, "RUNNING")
    nubo.cli("vm", "shutdown", str(vm_id))
    nubo.wait_vm(vm_id, "FAILED")
    assert "epilog failed: dummy: injected failure of delete" == \
        vm_doc(nubo, vm_id).findtext("USER_TEMPLATE/ERROR")
    nubo.cli("vm", "delete", str(vm_id))


def test_failed_shutdown_returns_to_running(nubo: LiveNubo) -> None:
    vm_id = create(nubo, 'DUMMY_FAIL = "shutdown"\n')
    nubo.wait_vm(vm_id, "RUNNING")
    nubo.cli("vm", "shutdown", str(vm_id))
    deadline = time.monotonic() + 20
    while "shutdown failed" not in (vm_doc(nubo, vm_id).findtext("USER_TEMPLATE/ERROR") or ""):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    nubo.wait_vm(vm_id, "RUNNING")
    nubo.cli("vm", "cancel", str(vm_id))
    nubo.wait_vm(vm_id, "DONE")


def test_poll_error_fails_the_vm(nubo: LiveNubo) -> None:
    vm_id = create(nubo, 'DUMMY_POLL_STATE = "e"\n')
    nubo.wait_vm(vm_id, "FAILED", timeout=30)
    assert vm_doc(nubo, vm_id).findtext("USER_TEMPLATE/ERROR") == "the hypervisor reports an error"
    nubo.cli("vm", "delete", str(vm_id))


def test_vanished_vm_goes_unknown_and_comes_back(nubo: LiveNubo) -> None:
    vm_id = create(nubo, "")
    nubo.wait_vm(vm_id, "RUNNING")
    state_file = nubo.var / "datastores" / "0" / str(vm_id) / "dummy.json"
    record = json.loads(state_file.read_text())
    state_file.write_text(json.dumps({**record, "state": "off"}))  # the guest died
    nubo.wait_vm(vm_id, "UNKNOWN", timeout=30)
    state_file.write_text(json.dumps({**record, "state": "running"}))  # and is back
    nubo.wait_vm(vm_id, "RUNNING", timeout=30)
    state_file.write_text(json.dumps({**record, "state": "off"}))
    nubo.wait_vm(vm_id, "UNKNOWN", timeout=30)
    nubo.cli("vm", "restart", str(vm_id))  # 3.4's answer to UNKNOWN: boot it again
    nubo.wait_vm(vm_id, "RUNNING")
    assert json.loads(state_file.read_text())["deploys"] == 2
    nubo.cli("vm", "cancel", str(vm_id))
    nubo.wait_vm(vm_id, "DONE")


def host_doc(nubo: LiveNubo, name: str) -> ET.Element:
    ok, doc, _ = nubo.rpc().one.hostpool.info(nubo.session)
    assert ok
    for host in ET.fromstring(doc).findall("HOST"):
        if host.findtext("NAME") == name:
            return host
    raise AssertionError(f"no host {name}")


def wait_host(nubo: LiveNubo, name: str, state: int, timeout: float = 20) -> ET.Element:
    deadline = time.monotonic() + timeout
    while True:
        host = host_doc(nubo, name)
        if int(host.findtext("STATE") or -1) == state:
            return host
        assert time.monotonic() < deadline, ET.tostring(host)
        time.sleep(0.1)


@pytest.mark.parametrize(("attrs", "message"), [
    ('DUMMY_FAIL = "monitor"', "dummy: injected failure of monitor"),
    ("DUMMY_DELAY_MONITOR = 5", "timed out after 1"),
])
def test_probe_failure_puts_the_host_in_error_until_it_answers(
        nubo: LiveNubo, tmp_path: Path, attrs: str, message: str) -> None:
    name = f"flaky-{abs(hash(attrs)) % 1000}"
    nubo.cli("host", "create", name, "--im", "dummy", "--vmm", "dummy")
    wait_host(nubo, name, 2)
    spec = tmp_path / "attrs"
    spec.write_text(attrs + "\n")
    nubo.cli("host", "update", name, str(spec), "--merge")
    host = wait_host(nubo, name, 3)  # ERROR
    assert message in (host.findtext("TEMPLATE/ERROR") or "")
    assert message in nubo.cli("host", "show", name).stdout
    spec.write_text('DUMMY_FAIL = ""\nDUMMY_DELAY_MONITOR = 0\n')
    nubo.cli("host", "update", name, str(spec), "--merge")
    host = wait_host(nubo, name, 2)  # MONITORED again
    assert host.findtext("TEMPLATE/ERROR") in (None, "")
    nubo.cli("host", "delete", name)
