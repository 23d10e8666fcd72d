"""A host's network driver through a live daemon and the dummy drivers: pre, post and
clean run in OpenNebula 3.4's order with its arguments; a failing pre fails the boot, a
failing post cancels the VM and fails it, a failing clean is only logged. The driver is
the operator's own, written into the remotes tree (with a LOCAL marker: it runs on the
front-end, as the dummy host has no machine behind it)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.live import FAST_CONF, LiveNubo, call, wait_until

pytestmark = pytest.mark.slow

# vnm/rec/<action>: one line per call into calls.txt; fails when the VM's name says so
SCRIPT = """#!/bin/sh
dir=$(dirname "$0")
name=$(echo "$1" | base64 -d | sed -n 's:.*<NAME>\\([^<]*\\)</NAME>.*:\\1:p' | head -n 1)
echo "$(basename "$0") $name $#${2:+ $2}" >> "$dir/calls.txt"
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
        live.cli("host", "create", "d1", "--im", "dummy", "--vmm", "dummy", "--vnm", "rec")
        yield live
    finally:
        live.stop()


def calls(nubo: LiveNubo, name: str) -> list[str]:
    path = Path(nubo.var) / "remotes" / "vnm" / "rec" / "calls.txt"
    lines = path.read_text().splitlines() if path.exists() else []
    return [line for line in lines if line.split()[1] == name]


def vm(nubo: LiveNubo, name: str) -> int:
    return int(call(nubo, "one.vm.allocate", f'NAME = "{name}"\nCPU = 0.1\nMEMORY = 32\n'))


def test_pre_post_and_clean_frame_the_vms_life(nubo: LiveNubo) -> None:
    vm_id = vm(nubo, "plain")
    nubo.wait_vm(vm_id, "RUNNING")
    deploy_id = ET.fromstring(call(nubo, "one.vm.info", vm_id)).findtext("DEPLOY_ID")
    assert calls(nubo, "plain") == ["pre plain 1", f"post plain 2 {deploy_id}"]
    call(nubo, "one.vm.action", "shutdown", vm_id)
    nubo.wait_vm(vm_id, "DONE")
    assert calls(nubo, "plain")[2:] == ["clean plain 1"]


def test_a_failing_pre_or_post_fails_the_vm_and_clean_only_logs(nubo: LiveNubo) -> None:
    pre = vm(nubo, "fail-pre")
    wait_until("fail-pre FAILED", lambda: ET.fromstring(call(nubo, "one.vm.info", pre))
               .findtext("STATE") == "7")
    assert calls(nubo, "fail-pre") == ["pre fail-pre 1"]  # nothing deployed
    error = ET.fromstring(call(nubo, "one.vm.info", pre)).findtext("USER_TEMPLATE/ERROR") or ""
    assert "network driver pre: pre says no" in error, error

    post = vm(nubo, "fail-post")
    wait_until("fail-post FAILED", lambda: ET.fromstring(call(nubo, "one.vm.info", post))
               .findtext("STATE") == "7")
    log = nubo.cli("vm", "log", str(post)).stdout
    assert "network driver post: post says no" in log
    assert "vmm/dummy/cancel" in log  # it ran without its rules: cancelled at once
    seen = calls(nubo, "fail-post")
    assert seen[0] == "pre fail-post 1" and seen[1].startswith("post fail-post 2 ")
    assert seen[2] == "clean fail-post 1"

    clean = vm(nubo, "fail-clean")
    nubo.wait_vm(clean, "RUNNING")
    call(nubo, "one.vm.action", "shutdown", clean)
    nubo.wait_vm(clean, "DONE")  # the VM is gone all the same
    assert "network driver clean failed (ignored): clean says no" in nubo.cli(
        "vm", "log", str(clean)).stdout
