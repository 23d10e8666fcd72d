"""pyone, OpenNebula's Python binding from PyPI, against a live daemon."""

from __future__ import annotations

import time
import xmlrpc.client
from collections.abc import Iterator

import pyone
import pytest

from core.lifecycle import LcmState, VmState
from tests.live import LiveNubo, proxy


@pytest.fixture(scope="module")
def one(nubo: LiveNubo) -> pyone.OneServer:
    return pyone.OneServer(nubo.url, session=nubo.session)


@pytest.fixture(scope="module")
def alice(nubo: LiveNubo, one: pyone.OneServer) -> Iterator[pyone.OneServer]:
    one.user.allocate("alice", "alice-pw", "core")
    yield pyone.OneServer(nubo.url, session="alice:alice-pw")


def wait_state(one: pyone.OneServer, vm_id: int, state: VmState, lcm: LcmState | None = None,
               timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    vm = one.vm.info(vm_id)
    while time.monotonic() < deadline:
        vm = one.vm.info(vm_id)
        if vm.STATE == state and (lcm is None or vm.LCM_STATE == lcm):
            return
        time.sleep(0.1)
    raise AssertionError(f"VM {vm_id} is {vm.STATE}/{vm.LCM_STATE}, wanted {state}/{lcm}")


def test_version(one: pyone.OneServer) -> None:
    assert one.system.version() == "3.4.1"


def test_users(one: pyone.OneServer, alice: pyone.OneServer) -> None:
    uid = one.user.allocate("bob", "bob-pw", "core")
    info = one.user.info(uid)
    assert (info.ID, info.NAME, info.GID) == (uid, "bob", 1)
    assert "bob" in [u.NAME for u in one.userpool.info().USER]
    one.user.passwd(uid, "new-pw")
    url = one._ServerProxy__host
    assert pyone.OneServer(f"http://{url}/RPC2", session="bob:new-pw").user.info(-1).ID == uid
    with pytest.raises(pyone.OneAuthenticationException):
        pyone.OneServer(f"http://{url}/RPC2", session="bob:bob-pw").user.info(-1)
    one.user.delete(uid)
    with pytest.raises(pyone.OneNoExistsException):
        one.user.info(uid)
    # a user sees only itself
    assert [u.NAME for u in alice.userpool.info().USER] == ["alice"]
    with pytest.raises(pyone.OneAuthorizationException):
        alice.user.allocate("eve", "x", "core")


def test_authentication_errors(nubo: LiveNubo) -> None:
    with pytest.raises(pyone.OneAuthenticationException):
        pyone.OneServer(nubo.url, session="oneadmin:wrong").vmpool.info(-2, -1, -1, -1)
    ok, message, code = nubo.rpc().one.vm.info("nobody:x", 0)
    assert (ok, code) == (False, 0x100)


def test_hosts(one: pyone.OneServer) -> None:
    host_id = one.host.allocate("node-a", "dummy", "dummy", "dummy", -1)  # 3.4 argument order
    host_b = one.host.allocate("node-b", "dummy", "dummy", -1)  # later versions' order
    deadline = time.monotonic() + 20
    while one.host.info(host_id).STATE != 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    host = one.host.info(host_id)
    assert host.NAME == "node-a" and host.STATE == 2  # MONITORED
    assert host.HOST_SHARE.MAX_CPU == 800
    assert host.TEMPLATE["HYPERVISOR"] == "dummy"
    names = [h.NAME for h in one.hostpool.info().HOST]
    assert {"localhost", "node-a", "node-b"} <= set(names)
    one.host.enable(host_b, False)
    assert one.host.info(host_b).STATE == 4  # DISABLED
    one.host.update(host_b, 'RACK = "r7"', 1)
    assert one.host.info(host_b).TEMPLATE["RACK"] == "r7"
    one.host.delete(host_b)
    with pytest.raises(pyone.OneNoExistsException):
        one.host.info(host_b)
    with pytest.raises(pyone.OneActionException):
        one.host.allocate("node-c", "nosuchdriver", "dummy", -1)


def test_datastores_and_images(one: pyone.OneServer, alice: pyone.OneServer) -> None:
    stores = {d.NAME: d.ID for d in one.datastorepool.info().DATASTORE}
    assert stores["system"] == 0 and stores["default"] == 1
    assert one.datastore.info(1).NAME == "default"
    ds_id = one.datastore.allocate('NAME = "fast"\nTM_MAD = "dummy"\n', -1)
    assert one.datastore.info(ds_id).NAME == "fast"
    with pytest.raises(pyone.OneAuthorizationException):
        alice.datastore.allocate('NAME = "mine"', -1)
    with pytest.raises(pyone.OneActionException, match="no TM driver"):
        one.datastore.allocate('NAME = "odd"\nTM_MAD = "../../bin"\n', -1)
    one.datastore.update(ds_id, 'TM_MAD = "ssh"\nDS_MAD = "fs"\nDESCRIPTION = "nfs"\n')
    updated = one.datastore.info(ds_id)
    assert (updated.TM_MAD, updated.TEMPLATE["DESCRIPTION"]) == ("ssh", "nfs")
    with pytest.raises(pyone.OneActionException, match="no TM driver"):
        one.datastore.update(ds_id, 'TM_MAD = "nosuch"\n')
    assert one.datastore.info(ds_id).TM_MAD == "ssh"  # unchanged by the refused update
    one.datastore.update(ds_id, 'TM_MAD = "shared"\n', 1)  # merged: the rest stays
    merged = one.datastore.info(ds_id)
    assert (merged.TM_MAD, merged.TEMPLATE["DESCRIPTION"]) == ("shared", "nfs")
    with pytest.raises(pyone.OneAuthorizationException):
        alice.datastore.update(0, 'TM_MAD = "ssh"\n')
    with pytest.raises(pyone.OneNoExistsException):
        one.datastore.update(999, 'TM_MAD = "ssh"\n')
    one.datastore.delete(ds_id)
    with pytest.raises(pyone.OneNoExistsException):
        one.datastore.info(ds_id)
    with pytest.raises(pyone.OneAuthorizationException):
        one.datastore.delete(0)  # built in
    image_id = alice.image.allocate('NAME = "alice-os"\nPATH = "/var/tmp/x.img"\nSIZE = 10', 1)
    image = alice.image.info(image_id)
    assert (image.NAME, image.UNAME, image.STATE, image.SIZE) == ("alice-os", "alice", 1, 10)
    assert [i.ID for i in alice.imagepool.info(-3, -1, -1).IMAGE] == [image_id]
    with pytest.raises(pyone.OneActionException):  # same name twice
        alice.image.allocate('NAME = "alice-os"\nPATH = "/var/tmp/x.img"', 1)
    alice.image.persistent(image_id, True)
    assert alice.image.info(image_id).PERSISTENT == 1
    alice.image.enable(image_id, False)
    assert alice.image.info(image_id).STATE == 3
    alice.image.chtype(image_id, "DATABLOCK")
    assert alice.image.info(image_id).TYPE == 2
    alice.image.delete(image_id)
    with pytest.raises(pyone.OneNoExistsException):
        alice.image.info(image_id)


def test_templates(one: pyone.OneServer, alice: pyone.OneServer) -> None:
    tid = alice.template.allocate('NAME = "small"\nMEMORY = 64\nCPU = 0.1\n')
    row = alice.template.info(tid)
    assert row.NAME == "small" and row.TEMPLATE["MEMORY"] == "64"
    alice.template.update(tid, 'NAME = "small"\nMEMORY = 96\nCPU = 0.1\n', 0)
    assert alice.template.info(tid).TEMPLATE["MEMORY"] == "96"
    assert [t.ID for t in alice.templatepool.info(-3, -1, -1).VMTEMPLATE] == [tid]
    vm_id = alice.template.instantiate(tid, "from-template", False, "", False)
    vm = alice.vm.info(vm_id)
    assert vm.NAME == "from-template" and vm.TEMPLATE["MEMORY"] == "96"
    wait_state(alice, vm_id, VmState.ACTIVE, LcmState.RUNNING)
    alice.vm.action("finalize", vm_id)
    alice.template.delete(tid)
    with pytest.raises(pyone.OneNoExistsException):
        alice.template.info(tid)


def test_vm_lifecycle(one: pyone.OneServer) -> None:
    vm_id = one.vm.allocate('NAME = "life"\nMEMORY = 128\nCPU = 0.25\n', False)
    wait_state(one, vm_id, VmState.ACTIVE, LcmState.RUNNING)
    vm = one.vm.info(vm_id)
    assert vm.HISTORY_RECORDS.HISTORY[-1].HOSTNAME
    assert vm.DEPLOY_ID == f"dummy-{vm_id}"
    for action, state, lcm in [
        ("suspend", VmState.SUSPENDED, None),
        ("resume", VmState.ACTIVE, LcmState.RUNNING),
        ("reboot", VmState.ACTIVE, LcmState.RUNNING),
        ("stop", VmState.STOPPED, None),
        ("resume", VmState.ACTIVE, LcmState.RUNNING),
        ("shutdown", VmState.DONE, None),
    ]:
        one.vm.action(action, vm_id)
        wait_state(one, vm_id, state, lcm)
    assert len(one.vm.info(vm_id).HISTORY_RECORDS.HISTORY) == 2  # stop/resume placed it again
    with pytest.raises(pyone.OneActionException) as err:
        one.vm.action("shutdown", vm_id)
    assert "DONE" in str(err.value)


def test_vm_hold_release_and_resubmit(one: pyone.OneServer) -> None:
    vm_id = one.vm.allocate('NAME = "held"\nMEMORY = 64\nCPU = 0.1\n', True)
    assert one.vm.info(vm_id).STATE == VmState.HOLD
    one.vm.action("release", vm_id)
    wait_state(one, vm_id, VmState.ACTIVE, LcmState.RUNNING)
    one.vm.action("resubmit", vm_id)
    wait_state(one, vm_id, VmState.ACTIVE, LcmState.RUNNING)
    assert len(one.vm.info(vm_id).HISTORY_RECORDS.HISTORY) == 2
    one.vm.action("delete", vm_id)
    assert one.vm.info(vm_id).STATE == VmState.DONE


def test_vm_failure_is_reported(one: pyone.OneServer) -> None:
    vm_id = one.vm.allocate('NAME = "doomed"\nMEMORY = 64\nCPU = 0.1\nDUMMY_FAIL = "deploy"\n')
    wait_state(one, vm_id, VmState.FAILED)
    vm = one.vm.info(vm_id)
    assert "injected failure of deploy" in str(vm.USER_TEMPLATE["ERROR"])
    one.vm.action("finalize", vm_id)


def test_vm_pool_filters(one: pyone.OneServer, alice: pyone.OneServer) -> None:
    mine = alice.vm.allocate('NAME = "a1"\nMEMORY = 64\nCPU = 0.1\n', True)
    theirs = one.vm.allocate('NAME = "o1"\nMEMORY = 64\nCPU = 0.1\n', True)
    alice_ids = [v.ID for v in alice.vmpool.info(-2, -1, -1, -1).VM]
    assert mine in alice_ids and theirs not in alice_ids
    admin_ids = [v.ID for v in one.vmpool.info(-2, -1, -1, -1).VM]
    assert {mine, theirs} <= set(admin_ids)
    assert [v.ID for v in one.vmpool.info(-3, -1, -1, -1).VM if v.ID == mine] == []
    alice_uid = alice.user.info(-1).ID
    assert [v.ID for v in one.vmpool.info(alice_uid, -1, -1, -1).VM if v.ID == mine] == [mine]
    assert [v.ID for v in one.vmpool.info(-2, mine, mine, -1).VM] == [mine]
    held = [v.ID for v in one.vmpool.info(-2, -1, -1, VmState.HOLD).VM]
    assert {mine, theirs} <= set(held)
    with pytest.raises(pyone.OneAuthorizationException):
        alice.vm.action("release", theirs)
    with pytest.raises(pyone.OneAuthorizationException):
        alice.vm.info(theirs)
    for vm_id in (mine, theirs):
        one.vm.action("finalize", vm_id)


def test_bad_calls_get_the_api_error(nubo: LiveNubo) -> None:
    rpc = nubo.rpc()
    ok, message, code = rpc.one.vm.info(nubo.session, "seven")
    assert (ok, code) == (False, 0x1000) and "int" in message
    ok, message, code = rpc.one.vm.action(nubo.session, 5)
    assert (ok, code) == (False, 0x1000)
    ok, message, code = rpc.one.no.such.method(nubo.session)
    assert (ok, code) == (False, 0x1000) and "unknown method" in message
    with pytest.raises(xmlrpc.client.Fault):  # not XML-RPC at all
        proxy(nubo.url)._ServerProxy__transport.request(
            f"127.0.0.1:{nubo.port}", "/RPC2", b"<not-xml", verbose=False)
    ok, message, code = rpc.one.vm.allocate(nubo.session, "MEMORY = [ broken")
    assert (ok, code) == (False, 0x800) and "line 1" in message


def test_virtual_networks(one: pyone.OneServer, alice: pyone.OneServer) -> None:
    net = one.vn.allocate('NAME = "red"\nNETWORK_ADDRESS = 10.7.0.0/29\nBRIDGE = br7\n', -1)
    vm_id = one.vm.allocate('MEMORY = 64\nCPU = 0.1\nNIC = [ NETWORK = "red" ]\n', True)
    info = one.vn.info(net)
    assert (info.NAME, info.BRIDGE, info.USED_LEASES) == ("red", "br7", 1)
    (ar,) = info.AR_POOL.AR  # pyone reads the address range of later versions
    assert (ar.IP, ar.MAC, ar.SIZE) == ("10.7.0.1", "02:00:0a:07:00:01", 6)
    assert [(lease.IP, lease.MAC, lease.VM) for lease in ar.LEASES.LEASE] == \
        [("10.7.0.1", "02:00:0a:07:00:01", vm_id)]
    nic = one.vm.info(vm_id).TEMPLATE["NIC"]
    assert (nic["IP"], nic["NETWORK_ID"], nic["BRIDGE"]) == ("10.7.0.1", str(net), "br7")
    one.vn.hold(net, "LEASES = [ IP = 10.7.0.2 ]")
    assert one.vm.info(one.vm.allocate('MEMORY = 64\nCPU = 0.1\nNIC = [ NETWORK_ID = '
                                       f'{net} ]\n', True)).TEMPLATE["NIC"]["IP"] == "10.7.0.3"
    assert "red" in [v.NAME for v in one.vnpool.info(-2, -1, -1).VNET]
    assert "red" not in [v.NAME for v in alice.vnpool.info(-2, -1, -1).VNET]
    with pytest.raises(pyone.OneAuthorizationException):
        alice.vn.info(net)
    with pytest.raises(pyone.OneException, match="in use"):
        one.vn.delete(net)


def test_nics_after_creation(one: pyone.OneServer) -> None:
    net = one.vn.allocate('NAME = "nics"\nNETWORK_ADDRESS = 10.12.0.0/29\n', -1)
    vm_id = one.vm.allocate("MEMORY = 64\nCPU = 0.1\n", True)
    one.vm.attachnic(vm_id, 'NIC = [ NETWORK = "nics", IP = 10.12.0.4 ]')
    nic = one.vm.info(vm_id).TEMPLATE["NIC"]
    assert (nic["IP"], nic["NIC_ID"], nic["NETWORK_ID"]) == ("10.12.0.4", "0", str(net))
    one.vm.detachnic(vm_id, 0)
    assert "NIC" not in one.vm.info(vm_id).TEMPLATE
    with pytest.raises(pyone.OneException, match="NIC"):
        one.vm.detachnic(vm_id, 0)
