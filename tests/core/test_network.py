"""Security groups and public addresses in the core, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from core.errors import (
    CapacityExceeded,
    Conflict,
    Forbidden,
    InvalidRequest,
    InvalidState,
    NotFound,
)
from core.models import SecurityGroup
from core.service import addresses, secgroups, tags, vms
from core.service.access import MINE
from core.service.context import Caller, Cloud
from core.service.secgroups import Rule, rule
from tests.core.clouds import ADMIN, VM_TEXT, make_cloud, user


@pytest.fixture
def cloud(db_url: str, tmp_path: Path) -> Iterator[Cloud]:
    c = make_cloud(db_url, tmp_path, ec2_address_pool="192.0.2.0/29")
    yield c
    c.engine.dispose()


def gid(row: SecurityGroup) -> int:
    assert row.id is not None
    return row.id


def vm_with_groups(cloud: Cloud, caller: Caller, groups: list[int]) -> int:
    text = VM_TEXT + f'SECURITY_GROUPS = "{" ".join(map(str, groups))}"\n'
    return vms.create_vm(cloud, caller, text=text)


def test_rules_are_validated_and_normalised() -> None:
    assert rule("6", 22, 22, cidr="0.0.0.0/0") == Rule("tcp", 22, 22, "0.0.0.0/0")
    assert rule("ALL", 1, 2, cidr="::/0") == Rule("-1", None, None, "::/0")
    assert rule("icmp", cidr="10.0.0.0/8") == Rule("icmp", -1, -1, "10.0.0.0/8")
    assert rule("50", 1, 2, group=3) == Rule("50", None, None, group=3)
    assert rule("tcp", 80, 80, cidr="2001:DB8::/32").cidr == "2001:db8::/32"
    assert rule("tcp", 1, 1, cidr="1.2.3.4/32", description="x") == \
        rule("tcp", 1, 1, cidr="1.2.3.4/32")  # a description is not part of the identity
    for bad in (lambda: rule("tcp", None, None, cidr="0.0.0.0/0"),
                lambda: rule("tcp", 90, 80, cidr="0.0.0.0/0"),
                lambda: rule("tcp", 0, 65536, cidr="0.0.0.0/0"),
                lambda: rule("gre", 1, 1, cidr="0.0.0.0/0"),
                lambda: rule("256", cidr="0.0.0.0/0"),
                lambda: rule("tcp", 1, 1, cidr="10.0.0.1/8"),
                lambda: rule("tcp", 1, 1, cidr="nonsense"),
                lambda: rule("tcp", 1, 1),
                lambda: rule("tcp", 1, 1, cidr="0.0.0.0/0", group=1)):
        with pytest.raises(InvalidRequest):
            bad()


def test_default_group_is_lazy_and_permanent(cloud: Cloud) -> None:
    alice = user(cloud, "alice")
    listed = secgroups.list_groups(cloud, alice)
    assert [g.name for g in listed] == ["default"]
    default = listed[0]
    assert secgroups.rules_of(default, "ingress") == [Rule("-1", group=default.id)]
    assert secgroups.rules_of(default, "egress") == [Rule("-1", cidr="0.0.0.0/0")]
    assert secgroups.ensure_default(cloud, alice).id == default.id
    assert secgroups.resolve(cloud, alice) == [default.id]
    with pytest.raises(InvalidRequest):
        secgroups.delete_group(cloud, alice, group_id=gid(default))
    with pytest.raises(Conflict):
        secgroups.create(cloud, alice, name="Default", description="")


def test_concurrent_first_uses_create_one_default(cloud: Cloud) -> None:
    alice = user(cloud, "alice")
    with ThreadPoolExecutor(6) as pool:
        found = set(pool.map(lambda _: secgroups.ensure_default(cloud, alice).id, range(6)))
    assert len(found) == 1


def test_create_authorize_revoke(cloud: Cloud) -> None:
    alice = user(cloud, "alice")
    web = secgroups.create(cloud, alice, name="web", description="web servers")
    assert secgroups.rules_of(web, "ingress") == []
    assert secgroups.rules_of(web, "egress") == [Rule("-1", cidr="0.0.0.0/0")]
    with pytest.raises(Conflict):
        secgroups.create(cloud, alice, name="WEB", description="names ignore case")
    for name in ("sg-1", "", "x" * 256, "tab\there"):
        with pytest.raises(InvalidRequest):
            secgroups.create(cloud, alice, name=name, description="")
    db_group = secgroups.create(cloud, alice, name="db", description="")
    ssh = rule("tcp", 22, 22, cidr="0.0.0.0/0", description="ssh")
    from_db = rule("tcp", 80, 80, group=gid(db_group))
    added = secgroups.authorize(cloud, alice, group_id=gid(web), direction="ingress",
                                rules=[ssh, from_db])
    assert added == [ssh, from_db]
    stored = secgroups.rules_of(secgroups.get(cloud, alice, group_id=gid(web)), "ingress")
    assert stored == [ssh, from_db] and stored[0].description == "ssh"
    http = rule("tcp", 80, 80, cidr="0.0.0.0/0")
    with pytest.raises(Conflict):  # all or nothing: the new rule is not added either
        secgroups.authorize(cloud, alice, group_id=gid(web), direction="ingress",
                            rules=[http, rule("6", 22, 22, cidr="0.0.0.0/0")])
    with pytest.raises(Conflict):
        secgroups.authorize(cloud, alice, group_id=gid(web), direction="ingress",
                            rules=[http, http])
    assert len(secgroups.rules_of(secgroups.get(cloud, alice, group_id=gid(web)),
                                  "ingress")) == 2
    with pytest.raises(NotFound):
        secgroups.revoke(cloud, alice, group_id=gid(web), direction="ingress",
                         rules=[ssh, http])
    gone = secgroups.revoke(cloud, alice, group_id=gid(web), direction="ingress",
                            rules=[rule("tcp", 22, 22, cidr="0.0.0.0/0")])
    assert gone == [ssh] and gone[0].description == "ssh"
    secgroups.revoke(cloud, alice, group_id=gid(web), direction="egress",
                     rules=[rule("-1", cidr="0.0.0.0/0")])
    row = secgroups.get(cloud, alice, group_id=gid(web))
    assert secgroups.rules_of(row, "egress") == []
    assert secgroups.rules_of(row, "ingress") == [from_db]
    # a group referenced by another group's rule stays until the rule goes
    with pytest.raises(Conflict):
        secgroups.delete_group(cloud, alice, group_id=gid(db_group))
    secgroups.revoke(cloud, alice, group_id=gid(web), direction="ingress", rules=[from_db])
    secgroups.delete_group(cloud, alice, group_id=gid(db_group))
    with pytest.raises(NotFound):
        secgroups.get(cloud, alice, group_id=gid(db_group))


def test_groups_in_use_by_vms(cloud: Cloud) -> None:
    alice = user(cloud, "alice")
    web = secgroups.create(cloud, alice, name="web", description="")
    tags.set_tags(cloud, alice, kind="secgroup", ids=[gid(web)], tags={"env": "prod"})
    assert secgroups.resolve(cloud, alice, names=["web"], ids=[gid(web)]) == [gid(web)]
    vm_id = vm_with_groups(cloud, alice, [gid(web)])
    assert secgroups.groups_of(vms.get_vm(cloud, alice, vm_id=vm_id).vm.template) == [gid(web)]
    with pytest.raises(Conflict):
        secgroups.delete_group(cloud, alice, group_id=gid(web))
    vms.act(cloud, alice, vm_id=vm_id, action="finalize")  # an ended VM holds nothing
    secgroups.delete_group(cloud, alice, group_id=gid(web))
    assert tags.list_tags(cloud, alice) == []


def test_users_see_only_their_own_groups(cloud: Cloud) -> None:
    alice, bob = user(cloud, "alice"), user(cloud, "bob")
    web = secgroups.create(cloud, alice, name="web", description="")
    assert [g.name for g in secgroups.list_groups(cloud, bob)] == ["default"]
    with pytest.raises(Forbidden):
        secgroups.get(cloud, bob, group_id=gid(web))
    with pytest.raises(NotFound):
        secgroups.find(cloud, bob, name="web")
    with pytest.raises(NotFound):
        secgroups.resolve(cloud, bob, ids=[gid(web)])
    with pytest.raises(Forbidden):
        secgroups.delete_group(cloud, bob, group_id=gid(web))
    bobs = secgroups.create(cloud, bob, name="web", description="same name, other owner")
    with pytest.raises(NotFound):  # rules name only the owner's groups
        secgroups.authorize(cloud, bob, group_id=gid(bobs), direction="ingress",
                            rules=[rule("-1", group=gid(web))])
    assert secgroups.names(cloud, bob, ids=[gid(web), gid(bobs)]) == {gid(bobs): "web"}
    assert len(secgroups.list_groups(cloud, ADMIN)) == 5  # three defaults, two webs
    assert len(secgroups.list_groups(cloud, ADMIN, flag=MINE)) == 1


def test_addresses_allocate_associate_release(cloud: Cloud) -> None:
    alice = user(cloud, "alice")
    first = addresses.allocate(cloud, alice)
    second = addresses.allocate(cloud, alice)
    assert (first.ip, second.ip) == ("192.0.2.1", "192.0.2.2")
    web, db_vm = vms.create_vm(cloud, alice, text=VM_TEXT), vms.create_vm(cloud, alice,
                                                                          text=VM_TEXT)
    assert first.id is not None and second.id is not None
    row = addresses.associate(cloud, alice, address_id=first.id, vm_id=web)
    assert (row.vm_id, row.associations) == (web, 1)
    assert addresses.associate(cloud, alice, address_id=first.id, vm_id=web).associations == 1
    with pytest.raises(Conflict):
        addresses.associate(cloud, alice, address_id=first.id, vm_id=db_vm, reassociate=False)
    row = addresses.associate(cloud, alice, address_id=first.id, vm_id=db_vm)
    assert (row.vm_id, row.associations) == (db_vm, 2)
    # a VM has one address: a second one takes the first one's place
    addresses.associate(cloud, alice, address_id=second.id, vm_id=db_vm)
    assert addresses.get(cloud, alice, address_id=first.id).vm_id is None
    assert addresses.of_vms(cloud, alice, vm_ids=[web, db_vm]) == {db_vm: "192.0.2.2"}
    with pytest.raises(Conflict):
        addresses.release(cloud, alice, address_id=second.id)
    with pytest.raises(NotFound):  # a stale association
        addresses.disassociate(cloud, alice, address_id=second.id, association=7)
    addresses.disassociate(cloud, alice, address_id=second.id, association=1)
    addresses.disassociate(cloud, alice, address_id=second.id)  # idempotent
    addresses.release(cloud, alice, address_id=second.id)
    assert [a.ip for a in addresses.list_addresses(cloud, alice)] == ["192.0.2.1"]
    assert addresses.allocate(cloud, alice).ip == "192.0.2.2"  # the first free one again
    assert addresses.find(cloud, alice, ip="192.0.2.1").id == first.id


def test_associations_end_with_their_vm(cloud: Cloud) -> None:
    alice = user(cloud, "alice")
    address = addresses.allocate(cloud, alice)
    assert address.id is not None
    vm_id = vms.create_vm(cloud, alice, text=VM_TEXT)
    addresses.associate(cloud, alice, address_id=address.id, vm_id=vm_id)
    vms.act(cloud, alice, vm_id=vm_id, action="finalize")
    assert addresses.of_vms(cloud, alice, vm_ids=[vm_id]) == {}
    assert addresses.list_addresses(cloud, alice)[0].vm_id is None
    with pytest.raises(InvalidState):
        addresses.associate(cloud, alice, address_id=address.id, vm_id=vm_id)
    addresses.release(cloud, alice, address_id=address.id)


def test_the_pool(cloud: Cloud) -> None:
    alice = user(cloud, "alice")
    with pytest.raises(InvalidRequest):
        addresses.allocate(cloud, alice, ip="203.0.113.5")
    assert addresses.allocate(cloud, alice, ip="192.0.2.4").ip == "192.0.2.4"
    with pytest.raises(Conflict):
        addresses.allocate(cloud, alice, ip="192.0.2.4")
    got = [addresses.allocate(cloud, alice).ip for _ in range(5)]  # a /29 has 6 hosts
    assert got == ["192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.5", "192.0.2.6"]
    with pytest.raises(CapacityExceeded):
        addresses.allocate(cloud, alice)
    cloud.config.ec2_address_pool = "not a network"
    with pytest.raises(InvalidRequest):
        addresses.allocate(cloud, alice)


def test_concurrent_allocations_get_distinct_addresses(cloud: Cloud) -> None:
    alice = user(cloud, "alice")
    with ThreadPoolExecutor(6) as pool:
        got = list(pool.map(lambda _: addresses.allocate(cloud, alice).ip, range(6)))
    assert len(set(got)) == 6


def test_users_touch_only_their_own_addresses(cloud: Cloud) -> None:
    alice, bob = user(cloud, "alice"), user(cloud, "bob")
    mine = addresses.allocate(cloud, alice)
    assert mine.id is not None
    alice_vm, bob_vm = (vms.create_vm(cloud, alice, text=VM_TEXT),
                        vms.create_vm(cloud, bob, text=VM_TEXT))
    assert addresses.list_addresses(cloud, bob) == []
    with pytest.raises(NotFound):
        addresses.find(cloud, bob, ip=mine.ip)
    for attempt in (lambda: addresses.get(cloud, bob, address_id=mine.id or 0),
                    lambda: addresses.associate(cloud, bob, address_id=mine.id or 0,
                                                vm_id=bob_vm),
                    lambda: addresses.associate(cloud, alice, address_id=mine.id or 0,
                                                vm_id=bob_vm),
                    lambda: addresses.release(cloud, bob, address_id=mine.id or 0)):
        with pytest.raises(Forbidden):
            attempt()
    with pytest.raises(NotFound):  # the admin may, but not onto a VM of another owner
        addresses.associate(cloud, ADMIN, address_id=mine.id, vm_id=bob_vm)
    addresses.associate(cloud, alice, address_id=mine.id, vm_id=alice_vm)
    assert addresses.of_vms(cloud, bob, vm_ids=[alice_vm]) == {}


def test_ids_are_not_reused(cloud: Cloud) -> None:
    alice = user(cloud, "alice")
    old = gid(secgroups.create(cloud, alice, name="old", description=""))
    secgroups.delete_group(cloud, alice, group_id=old)
    assert gid(secgroups.create(cloud, alice, name="new", description="")) > old
    address = addresses.allocate(cloud, alice)
    assert address.id is not None
    addresses.release(cloud, alice, address_id=address.id)
    again = addresses.allocate(cloud, alice)
    assert again.ip == address.ip and again.id is not None and again.id > address.id
