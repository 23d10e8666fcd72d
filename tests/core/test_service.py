"""The core's use cases on a real database: SQLite file and PostgreSQL server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlmodel import select

from core import db
from core.daemon import schedule_once
from core.errors import Conflict, Forbidden, InvalidRequest, InvalidState, NotFound, Unauthorized
from core.lifecycle import HostState, LcmState, Step, VmState
from core.models import Host, KeyPair, LogEntry, Operation
from core.service import hosts, identity, images, vms
from core.service.context import Cloud
from tests.core.clouds import ADMIN, VM_TEXT, make_cloud, user


@pytest.fixture
def cloud(db_url: str, tmp_path: Path) -> Iterator[Cloud]:
    c = make_cloud(db_url, tmp_path)
    db.migrate(c.engine)  # idempotent: a restart re-runs it
    yield c
    c.engine.dispose()


def monitored_host(cloud: Cloud, name: str = "h1", cpu: int = 800, mem: int = 8 << 20) -> int:
    host_id = hosts.create_host(cloud, ADMIN, name=name, im="dummy", vmm="dummy")
    with cloud.session() as s:
        host = s.get(Host, host_id)
        assert host is not None
        host.state, host.max_cpu, host.free_cpu, host.max_mem, host.free_mem = (
            HostState.MONITORED, cpu, cpu, mem, mem)
        s.add(host)
    return host_id


def test_authentication(cloud: Cloud) -> None:
    assert identity.authenticate(cloud, "oneadmin:pw").admin
    for bad in ("oneadmin:nope", "ghost:pw", "oneadmin", ":pw"):
        with pytest.raises(Unauthorized):
            identity.authenticate(cloud, bad)
    alice = user(cloud, "alice")
    assert not alice.admin
    access, secret = identity.ec2_keys(cloud, alice, user_id=alice.uid)
    assert identity.caller_by_access_key(cloud, access) == (alice, secret)
    with pytest.raises(Conflict):
        identity.create_user(cloud, ADMIN, name="alice", password="x")
    with pytest.raises(Forbidden):
        identity.create_user(cloud, alice, name="mallory", password="x")


def test_users_only_see_their_own(cloud: Cloud) -> None:
    alice, bob = user(cloud, "alice"), user(cloud, "bob")
    a_vm = vms.create_vm(cloud, alice, text=VM_TEXT)
    b_vm = vms.create_vm(cloud, bob, text=VM_TEXT)
    assert [i.vm.id for i in vms.list_vms(cloud, alice)] == [a_vm]
    assert [i.vm.id for i in vms.list_vms(cloud, bob, flag=alice.uid)] == []
    assert {i.vm.id for i in vms.list_vms(cloud, ADMIN)} == {a_vm, b_vm}
    with pytest.raises(Forbidden):
        vms.get_vm(cloud, bob, vm_id=a_vm)
    with pytest.raises(Forbidden):
        vms.act(cloud, bob, vm_id=a_vm, action="hold")
    with pytest.raises(Forbidden):
        identity.get_user(cloud, bob, user_id=alice.uid)
    vms.act(cloud, ADMIN, vm_id=a_vm, action="hold")  # the admin may
    with pytest.raises(NotFound):
        vms.get_vm(cloud, alice, vm_id=9999)


@pytest.mark.parametrize(("text", "fragment"), [
    ('CPU = 1', "MEMORY"),
    ('MEMORY = 128', "CPU"),
    ('MEMORY = lots\nCPU = 1', "MEMORY must be a whole number"),
    ('MEMORY = -5\nCPU = 1', "greater than 0"),
    ('MEMORY = 128\nCPU = 1\nREQUIREMENTS = "FREE_CPU >= 100"', ">="),
    ('MEMORY = 128\nCPU = 1\nDISK = [ IMAGE = "missing" ]', "image missing does not exist"),
    ('MEMORY = 128\nCPU = 1\nDISK = [ TYPE = swap ]', "SIZE"),
    ('MEMORY = [ A = 1', "line 1"),
])
def test_bad_templates_are_refused_clearly(cloud: Cloud, text: str, fragment: str) -> None:
    with pytest.raises((InvalidRequest, NotFound)) as err:
        vms.create_vm(cloud, ADMIN, text=text)
    assert fragment in str(err.value)


def test_illegal_action_names_the_state(cloud: Cloud) -> None:
    vm_id = vms.create_vm(cloud, ADMIN, text=VM_TEXT)
    with pytest.raises(InvalidState) as err:
        vms.act(cloud, ADMIN, vm_id=vm_id, action="shutdown")
    assert "PENDING" in str(err.value) and "shutdown" in str(err.value)
    with pytest.raises(InvalidRequest):
        vms.act(cloud, ADMIN, vm_id=vm_id, action="explode")


def test_scheduler_places_and_queues_prolog_in_one_transaction(cloud: Cloud) -> None:
    host_id = monitored_host(cloud)
    vm_id = vms.create_vm(cloud, ADMIN, text=VM_TEXT)
    assert schedule_once(cloud) == 1
    info = vms.get_vm(cloud, ADMIN, vm_id=vm_id)
    assert (info.vm.state, info.vm.lcm_state) == (VmState.ACTIVE, LcmState.PROLOG)
    assert [h.hostname for h in info.history] == ["h1"]
    with cloud.session() as s:
        ops = s.exec(select(Operation).where(Operation.vm_id == vm_id)).all()
        host = s.get(Host, host_id)
        assert host is not None
    assert [(o.step, o.status, o.seq) for o in ops] == [(Step.PROLOG.value, "pending", 0)]
    assert (host.cpu_usage, host.mem_usage, host.running_vms) == (50, 256 * 1024, 1)


def test_vm_that_fits_nowhere_stays_pending_with_a_reason(cloud: Cloud) -> None:
    monitored_host(cloud, cpu=100, mem=1 << 20)
    vm_id = vms.create_vm(cloud, ADMIN, text='MEMORY = 4096\nCPU = 4\n')
    assert schedule_once(cloud) == 0
    info = vms.get_vm(cloud, ADMIN, vm_id=vm_id)
    assert info.vm.state == VmState.PENDING
    assert "CPU=4" in info.vm.message or "room" in info.vm.message


def test_finalize_releases_capacity_and_images(cloud: Cloud) -> None:
    host_id = monitored_host(cloud)
    image_id = images.create_image(cloud, ADMIN, text='NAME = base\nPATH = /tmp/base.img\n')
    vm_id = vms.create_vm(cloud, ADMIN, text=VM_TEXT + 'DISK = [ IMAGE = "base" ]\n')
    assert images.get_image(cloud, ADMIN, image_id=image_id).running_vms == 1
    with pytest.raises(Conflict):
        images.delete_image(cloud, ADMIN, image_id=image_id)
    schedule_once(cloud)
    vms.act(cloud, ADMIN, vm_id=vm_id, action="finalize")
    with cloud.session() as s:
        host = s.get(Host, host_id)
        assert host is not None and host.cpu_usage == 0 and host.running_vms == 0
        steps = [o.step for o in s.exec(select(Operation).where(Operation.vm_id == vm_id))]
        log = [e.message for e in s.exec(select(LogEntry).where(LogEntry.vm_id == vm_id))]
    assert steps == ["prolog", "cleanup"]
    assert any("DONE" in line for line in log)
    assert images.get_image(cloud, ADMIN, image_id=image_id).running_vms == 0
    images.delete_image(cloud, ADMIN, image_id=image_id)


def test_a_failed_transaction_leaves_nothing_behind(cloud: Cloud) -> None:
    """The state change and its driver work are one unit: an error rolls back both."""
    monitored_host(cloud)
    vm_id = vms.create_vm(cloud, ADMIN, text=VM_TEXT)
    with pytest.raises(RuntimeError):
        with cloud.session() as s:
            from core.models import VM
            from core.service.transitions import apply

            vm = s.get(VM, vm_id)
            assert vm is not None
            apply(s, vm, "hold")
            raise RuntimeError("crash between the write and the commit")
    assert vms.get_vm(cloud, ADMIN, vm_id=vm_id).vm.state == VmState.PENDING


def test_hosts_admin_only_and_validated(cloud: Cloud) -> None:
    alice = user(cloud, "alice")
    with pytest.raises(Forbidden):
        hosts.create_host(cloud, alice, name="x", im="dummy", vmm="dummy")
    with pytest.raises(InvalidRequest) as err:
        hosts.create_host(cloud, ADMIN, name="x", im="nosuch", vmm="dummy")
    assert "nosuch" in str(err.value)
    host_id = monitored_host(cloud)
    with pytest.raises(Conflict):
        hosts.create_host(cloud, ADMIN, name="h1", im="dummy", vmm="dummy")
    vm_id = vms.create_vm(cloud, ADMIN, text=VM_TEXT)
    schedule_once(cloud)
    with pytest.raises(Conflict):
        hosts.delete_host(cloud, ADMIN, host_id=host_id)
    vms.act(cloud, ADMIN, vm_id=vm_id, action="finalize")
    hosts.delete_host(cloud, ADMIN, host_id=host_id)


def test_request_tokens_make_creation_idempotent(cloud: Cloud) -> None:
    from core.errors import IdempotencyMismatch

    first = vms.create_vms(cloud, ADMIN, text=VM_TEXT, count=3, token="t-1", fingerprint="a")
    assert len(first) == 3
    assert vms.create_vms(cloud, ADMIN, text=VM_TEXT, count=3, token="t-1", fingerprint="a") \
        == first
    with pytest.raises(IdempotencyMismatch):
        vms.create_vms(cloud, ADMIN, text=VM_TEXT, count=1, token="t-1", fingerprint="b")
    alice = user(cloud, "alice")  # tokens are per user
    assert vms.create_vms(cloud, alice, text=VM_TEXT, token="t-1", fingerprint="a") != first
    assert len(vms.list_vms(cloud, ADMIN)) == 4


def test_concurrent_retries_create_once(cloud: Cloud) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(
            lambda _: tuple(vms.create_vms(cloud, ADMIN, text=VM_TEXT, count=2, token="same",
                                           fingerprint="f")), range(8)))
    assert len(set(results)) == 1
    assert len(vms.list_vms(cloud, ADMIN)) == 2


def test_tags_on_own_objects_only(cloud: Cloud) -> None:
    from core.service import tags

    alice, bob = user(cloud, "alice"), user(cloud, "bob")
    vm_id = vms.create_vm(cloud, alice, text=VM_TEXT)
    tags.set_tags(cloud, alice, kind="vm", ids=[vm_id], tags={"Name": "web", "env": "prod"})
    tags.set_tags(cloud, alice, kind="vm", ids=[vm_id], tags={"env": "dev"})
    assert {(t.key, t.value) for t in tags.list_tags(cloud, alice)} == {("Name", "web"),
                                                                         ("env", "dev")}
    with pytest.raises(Forbidden):
        tags.set_tags(cloud, bob, kind="vm", ids=[vm_id], tags={"x": "y"})
    assert tags.list_tags(cloud, bob) == []
    tags.delete_tags(cloud, alice, kind="vm", ids=[vm_id], tags={"env": "prod"})  # no match
    tags.delete_tags(cloud, alice, kind="vm", ids=[vm_id], tags={"Name": None})
    assert [(t.key, t.value) for t in tags.list_tags(cloud, alice)] == [("env", "dev")]
    with pytest.raises(InvalidRequest):
        tags.set_tags(cloud, alice, kind="vm", ids=[vm_id], tags={"": "x"})


def test_key_pairs(cloud: Cloud) -> None:
    from core.service import keypairs

    row, pem = keypairs.create(cloud, ADMIN, name="mine")
    assert pem.startswith("-----BEGIN RSA PRIVATE KEY-----")
    assert row.public_key.startswith("ssh-rsa ") and row.fingerprint.count(":") == 15
    with pytest.raises(Conflict):
        keypairs.create(cloud, ADMIN, name="mine")
    imported = keypairs.import_key(cloud, ADMIN, name="other", public_key=row.public_key)
    assert imported.fingerprint == row.fingerprint
    with pytest.raises(InvalidRequest):
        keypairs.import_key(cloud, ADMIN, name="bad", public_key="ssh-rsa not-base64!")
    alice = user(cloud, "alice")
    assert keypairs.list_keys(cloud, alice) == []
    with pytest.raises(NotFound):
        keypairs.find(cloud, alice, name="mine")
    assert row.id is not None
    keypairs.delete_key(cloud, ADMIN, key_id=row.id)
    assert [k.name for k in keypairs.list_keys(cloud, ADMIN)] == ["other"]


def test_deleting_a_user_refuses_while_it_owns_things_and_takes_its_keys(cloud: Cloud) -> None:
    from core.service import keypairs, logins

    carol = user(cloud, "carol")
    image = images.create_image(cloud, carol, text='NAME = "c"\nPATH = "/c.img"')
    keypairs.import_key(cloud, carol, name="laptop",
                        public_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ0cPuFyrSyr9O0M5Ag"
                                   "aiALmSudEFxqKHGSSqbt0SDPl carol@laptop")
    token = logins.login(cloud, carol, ttl=60)
    with pytest.raises(Conflict, match="still owns image"):
        identity.delete_user(cloud, ADMIN, user_id=carol.uid)
    images.delete_image(cloud, carol, image_id=image)
    identity.delete_user(cloud, ADMIN, user_id=carol.uid)
    with pytest.raises(Unauthorized):
        logins.caller_by_token(cloud, token)
    with cloud.session() as s:
        assert s.exec(select(KeyPair).where(KeyPair.uid == carol.uid)).all() == []
    assert user(cloud, "dave").uid > carol.uid  # never carol's id


def test_public_images_are_seen_and_used_by_all_changed_by_their_owner(cloud: Cloud) -> None:
    alice, bob = user(cloud, "alice"), user(cloud, "bob")
    base = images.create_image(cloud, alice, text='NAME = "base"\nPATH = "/b.img"')
    data = images.create_image(cloud, alice, text='NAME = "d"\nTYPE = DATABLOCK\nSIZE = 8\n'
                               'PERSISTENT = YES')
    assert [i.id for i in images.list_images(cloud, bob)] == []
    with pytest.raises(Forbidden):
        images.publish_image(cloud, bob, image_id=base, public=True)
    images.publish_image(cloud, alice, image_id=base, public=True)
    images.publish_image(cloud, alice, image_id=data, public=True)
    assert [i.id for i in images.list_images(cloud, bob)] == [base, data]
    assert images.list_images(cloud, bob, flag=-3) == []  # "mine": not hers
    vm = vms.create_vm(cloud, bob, text=VM_TEXT + f"DISK = [ IMAGE_ID = {base} ]")
    assert vms.get_vm(cloud, bob, vm_id=vm).vm.uid == bob.uid
    with pytest.raises(Forbidden, match="persistent"):  # bob's VM would write alice's data
        vms.create_vm(cloud, bob, text=VM_TEXT + f"DISK = [ IMAGE_ID = {data} ]")
    for change in (lambda: images.delete_image(cloud, bob, image_id=base),
                   lambda: images.update_image(cloud, bob, image_id=base, name="mine")):
        with pytest.raises(Forbidden):
            change()
    images.publish_image(cloud, alice, image_id=base, public=False)
    with pytest.raises(Forbidden):
        vms.create_vm(cloud, bob, text=VM_TEXT + f"DISK = [ IMAGE_ID = {base} ]")
