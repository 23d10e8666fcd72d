"""A host's network driver through a live daemon and the dummy drivers: pre, post and
clean run in OpenNebula 3.4's order with its arguments, on the host the document names
(a live migration: pre and post on the target, clean on the source); a failing pre fails
the boot, a failing post cancels the VM and fails it, a failing clean is only logged. The driver is
the operator's own, written into the remotes tree (with a LOCAL marker: it runs on the
front-end, as the dummy host has no machine behind it)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.live import FAST_CONF, LiveNubo, call, wait_until

pytestmark = pytest.mark.slow

# vnm/rec/<action>: one line per call into calls.txt (the action, the VM's name, the host
# of the document's last placement, the argument count and the deploy id); fails when the
# VM's name says so
SCRIPT = """#!/bin/sh
dir=$(dirname "$0")
doc=$(echo "$1" | base64 -d)
name=$(echo "$doc" | sed -n 's:.*<NAME>\\([^<]*\\)</NAME>.*:\\1:p' | head -n 1)
host=$(echo "$doc" | grep -o '<HOSTNAME>[^<]*' | tail -n 1 | cut -d '>' -f 2)
echo "$(basename "$0") $name $host $#${2:+ $2}" >> "$dir/calls.txt"
case "$name" in *"fail-$(basename "$0")"*) echo "$(basename "$0") says no" >&2; exit 3;; esac
"""


@pytest.fixture(scope="module")
def nubo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveNubo]:
    var = tmp_path_factory.mktemp("vnm")
    folder = var / "remotes" / "vnm" / "rec"
    folder.mkdir(parents=True)
    (folder / "LOCAL").write_text("")
    for action in ("pre", "post", "clean"):
        (folder / action).write_text(SCRIPT)
        (folder / action).chmod(0o755)
    live = LiveNubo(var, conf=FAST_CONF + "REGISTER_LOCALHOST = NO\n")
    live.start()
    try:
        for name in ("d1", "d2"):
            live.cli("host", "create", name, "--im", "dummy", "--vmm", "dummy", "--vnm", "rec")
        yield live
    finally:
        live.stop()


def calls(nubo: LiveNubo, name: str) -> list[str]:
    path = Path(nubo.var) / "remotes" / "vnm" / "rec" / "calls.txt"
    lines = path.read_text().splitlines() if path.exists() else []
    return [line for line in lines if line.split()[1] == name]


def vm(nubo: LiveNubo, name: str, extra: str = "") -> int:
    return int(call(nubo, "one.vm.allocate", f'NAME = "{name}"\nCPU = 0.1\nMEMORY = 32\n'
                    'REQUIREMENTS = "NAME = \\"d1\\""\n' + extra))


def test_pre_post_and_clean_frame_the_vms_life(nubo: LiveNubo) -> None:
    vm_id = vm(nubo, "plain")
    nubo.wait_vm(vm_id, "RUNNING")
    deploy_id = ET.fromstring(call(nubo, "one.vm.info", vm_id)).findtext("DEPLOY_ID")
    assert calls(nubo, "plain") == ["pre plain d1 1", f"post plain d1 2 {deploy_id}"]
    call(nubo, "one.vm.action", "shutdown", vm_id)
    nubo.wait_vm(vm_id, "DONE")
    assert calls(nubo, "plain")[2:] == ["clean plain d1 1"]


def test_a_failing_pre_or_post_fails_the_vm_and_clean_only_logs(nubo: LiveNubo) -> None:
    pre = vm(nubo, "fail-pre")
    wait_until("fail-pre FAILED", lambda: ET.fromstring(call(nubo, "one.vm.info", pre))
               .findtext("STATE") == "7")
    assert calls(nubo, "fail-pre") == ["pre fail-pre d1 1"]  # nothing deployed
    error = ET.fromstring(call(nubo, "one.vm.info", pre)).findtext("USER_TEMPLATE/ERROR") or ""
    assert "network driver pre: pre says no" in error, error

    post = vm(nubo, "fail-post")
    wait_until("fail-post FAILED", lambda: ET.fromstring(call(nubo, "one.vm.info", post))
               .findtext("STATE") == "7")
    log = nubo.cli("vm", "log", str(post)).stdout
    assert "network driver post: post says no" in log
    assert "vmm/dummy/cancel" in log  # it ran without its rules: cancelled at once
    seen = calls(nubo, "fail-post")
    assert seen[0] == "pre fail-post d1 1" and seen[1].startswith("post fail-post d1 2 ")
    assert seen[2] == "clean fail-post d1 1"

    clean = vm(nubo, "fail-clean")
    nubo.wait_vm(clean, "RUNNING")
    call(nubo, "one.vm.action", "shutdown", clean)
    nubo.wait_vm(clean, "DONE")  # the VM is gone all the same
    assert "network driver clean failed (ignored): clean says no" in nubo.cli(
        "vm", "log", str(clean)).stdout


def d2(nubo: LiveNubo) -> int:
    return next(int(h.findtext("ID") or -1) for h in ET.fromstring(
        call(nubo, "one.hostpool.info")).findall("HOST") if h.findtext("NAME") == "d2")


def test_a_live_migration_moves_the_rules_with_the_guest(nubo: LiveNubo) -> None:
    vm_id = vm(nubo, "mover")
    nubo.wait_vm(vm_id, "RUNNING")
    deploy_id = ET.fromstring(call(nubo, "one.vm.info", vm_id)).findtext("DEPLOY_ID")
    call(nubo, "one.vm.migrate", vm_id, d2(nubo), True)
    wait_until("mover on d2", lambda: len(calls(nubo, "mover")) == 5)
    nubo.wait_vm(vm_id, "RUNNING")
    assert calls(nubo, "mover")[2:] == ["pre mover d2 1", f"post mover d2 2 {deploy_id}",
                                        "clean mover d1 1"]


def test_a_failed_live_migration_cleans_the_target_only(nubo: LiveNubo) -> None:
    vm_id = vm(nubo, "stayer", 'DUMMY_FAIL = "migrate"\n')
    nubo.wait_vm(vm_id, "RUNNING")
    call(nubo, "one.vm.migrate", vm_id, d2(nubo), True)
    wait_until("the target cleaned", lambda: len(calls(nubo, "stayer")) == 4)
    assert calls(nubo, "stayer")[2:] == ["pre stayer d2 1", "clean stayer d2 1"]
    nubo.wait_vm(vm_id, "RUNNING")  # on d1, its rules untouched
