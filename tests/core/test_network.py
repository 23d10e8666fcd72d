"""Security groups and public addresses (leases of the public network) in the core, on
SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlmodel import col, select, update

from core import errors, template
from core.errors import (
    Conflict,
    Forbidden,
    InvalidRequest,
    InvalidState,
    NotFound,
)
from core.lifecycle import LcmState, VmState
from core.models import VM, Operation, SecurityGroup
from core.service import addresses, secgroups, tags, vms, vnets
from core.service.access import MINE
from core.service.context import Caller, Cloud
from core.service.secgroups import Rule, rule
from tests.core.clouds import ADMIN, VM_TEXT, make_cloud, user

# the Elastic IPs' network (six addresses), and a network every user may lease from
PUBLIC = "NAME = public\nNETWORK_ADDRESS = 192.0.2.0/29\n"
LAN = "NAME = lan\nNETWORK_ADDRESS = 10.1.0.0/24\nPUBLIC = YES\n"
NIC_VM = VM_TEXT + "NIC = [ NETWORK = lan ]\n"


@pytest.fixture
def cloud(db_url: str, tmp_path: Path) -> Iterator[Cloud]:
    c = make_cloud(db_url, tmp_path, ec2_public_network="public")
    vnets.create_vnet(c, ADMIN, text=PUBLIC)
    vnets.create_vnet(c, ADMIN, text=LAN)
    yield c
    c.engine.dispose()


def held(cloud: Cloud) -> list[str]:
    """The public network's leases on hold."""
    _, leases = vnets.get_vnet(cloud, ADMIN, vnet_id=vnets.find_vnet(cloud, ADMIN, ref="public"))
    return [lease.ip for lease in leases if lease.vm_id == vnets.HELD]


def public_ips(cloud: Cloud, vm_id: int) -> list[str]:
    """PUBLIC_IP of each NIC of the VM ("" for none)."""
    vm = vms.get_vm(cloud, ADMIN, vm_id=vm_id).vm
    return [nic.get("PUBLIC_IP", "") for nic in template.parse(vm.template).vectors("NIC")]


def run(cloud: Cloud, vm_id: int) -> None:
    """Pretend the VM is running on a host."""
    with cloud.session() as s:
        vm = s.get(VM, vm_id)
        assert vm is not None
        vm.state, vm.lcm_state = int(VmState.ACTIVE), int(LcmState.RUNNING)
        s.add(vm)


def refilters(cloud: Cloud) -> list[int]:
    """VMs with an update_sg queued, in id order."""
    with cloud.session() as s:
        return sorted(s.exec(select(Operation.vm_id).where(
            Operation.step == "update_sg", col(Operation.status) == "pending")).all())


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


def test_addresses_are_held_leases_of_the_public_network(cloud: Cloud) -> None:
    alice = user(cloud, "alice")
    first = addresses.allocate(cloud, alice)
    second = addresses.allocate(cloud, alice)
    assert (first.ip, second.ip) == ("192.0.2.1", "192.0.2.2")
    assert held(cloud) == ["192.0.2.1", "192.0.2.2"]
    public = vnets.find_vnet(cloud, ADMIN, ref="public")
    with pytest.raises(Conflict):  # no NIC gets a held lease, none is released under it
        vms.create_vm(cloud, ADMIN, text=VM_TEXT + "NIC = [ NETWORK = public, IP = 192.0.2.1 ]")
    with pytest.raises(Conflict, match="Elastic IP"):
        vnets.hold(cloud, ADMIN, vnet_id=public, text="LEASES = [ IP = 192.0.2.1 ]", on=False)
    with pytest.raises(Conflict, match="Elastic IP"):
        vnets.delete_vnet(cloud, ADMIN, vnet_id=public)
    assert addresses.allocate(cloud, alice, ip="192.0.2.5").ip == "192.0.2.5"
    with pytest.raises(errors.LeaseTaken):
        addresses.allocate(cloud, alice, ip="192.0.2.5")
    with pytest.raises(errors.OutsideNetwork):
        addresses.allocate(cloud, alice, ip="203.0.113.5")
    got = [addresses.allocate(cloud, alice).ip for _ in range(3)]
    assert got == ["192.0.2.3", "192.0.2.4", "192.0.2.6"]
    with pytest.raises(errors.NoFreeLease):
        addresses.allocate(cloud, alice)
    addresses.release(cloud, alice, address_id=second.id or 0)
    assert "192.0.2.2" not in held(cloud)
    assert addresses.allocate(cloud, alice).ip == "192.0.2.2"  # the first free one again
    assert addresses.find(cloud, alice, ip="192.0.2.1").id == first.id


def test_no_public_network_no_addresses(cloud: Cloud) -> None:
    alice = user(cloud, "alice")
    cloud.config.ec2_public_network = ""
    with pytest.raises(errors.NotConfigured, match="not set"):
        addresses.allocate(cloud, alice)
    cloud.config.ec2_public_network = "nowhere"
    with pytest.raises(errors.NotConfigured, match="nowhere"):
        addresses.allocate(cloud, alice)
    vnets.create_vnet(cloud, alice, text="NAME = nowhere\nNETWORK_ADDRESS = 10.7.0.0/24")
    with pytest.raises(errors.NotConfigured):  # a user's network is not the operator's
        addresses.allocate(cloud, alice)
    cloud.config.ec2_public_network = str(vnets.find_vnet(cloud, ADMIN, ref="public"))
    assert addresses.allocate(cloud, alice).ip == "192.0.2.1"  # an id does too


def test_associations_write_public_ip_and_refilter(cloud: Cloud) -> None:
    alice = user(cloud, "alice")
    first, second = addresses.allocate(cloud, alice), addresses.allocate(cloud, alice)
    assert first.id is not None and second.id is not None
    web, db_vm = vms.create_vm(cloud, alice, text=NIC_VM), vms.create_vm(cloud, alice,
                                                                         text=NIC_VM)
    run(cloud, web)
    row = addresses.associate(cloud, alice, address_id=first.id, vm_id=web)
    assert (row.vm_id, row.associations) == (web, 1)
    assert public_ips(cloud, web) == ["192.0.2.1"]
    assert refilters(cloud) == [web]  # db_vm is not running: its next boot reads the NIC
    assert addresses.associate(cloud, alice, address_id=first.id, vm_id=web).associations == 1
    with pytest.raises(Conflict):
        addresses.associate(cloud, alice, address_id=first.id, vm_id=db_vm, reassociate=False)
    row = addresses.associate(cloud, alice, address_id=first.id, vm_id=db_vm)
    assert (row.vm_id, row.associations) == (db_vm, 2)
    assert (public_ips(cloud, web), public_ips(cloud, db_vm)) == ([""], ["192.0.2.1"])
    # a VM has one address: a second one takes the first one's place
    addresses.associate(cloud, alice, address_id=second.id, vm_id=db_vm)
    assert addresses.get(cloud, alice, address_id=first.id).vm_id is None
    assert public_ips(cloud, db_vm) == ["192.0.2.2"]
    with pytest.raises(Conflict):
        addresses.release(cloud, alice, address_id=second.id)
    with pytest.raises(NotFound):  # a stale association
        addresses.disassociate(cloud, alice, address_id=second.id, association=7)
    addresses.disassociate(cloud, alice, address_id=second.id, association=1)
    assert public_ips(cloud, db_vm) == [""]
    addresses.disassociate(cloud, alice, address_id=second.id)  # idempotent
    addresses.release(cloud, alice, address_id=second.id)
    assert [a.ip for a in addresses.list_addresses(cloud, alice)] == ["192.0.2.1"]
    log = [e.message for e in vms.vm_log_entries(cloud, alice, vm_id=web)]
    assert "Queued driver work: update_sg (elastic IP 192.0.2.1)" in log


def test_an_address_needs_a_nic(cloud: Cloud) -> None:
    alice = user(cloud, "alice")
    address = addresses.allocate(cloud, alice)
    bare = vms.create_vm(cloud, alice, text=VM_TEXT)
    with pytest.raises(InvalidRequest, match="no NIC"):
        addresses.associate(cloud, alice, address_id=address.id or 0, vm_id=bare)


def test_associations_end_with_their_vm(cloud: Cloud) -> None:
    alice = user(cloud, "alice")
    address = addresses.allocate(cloud, alice)
    assert address.id is not None
    vm_id = vms.create_vm(cloud, alice, text=NIC_VM)
    addresses.associate(cloud, alice, address_id=address.id, vm_id=vm_id)
    vms.act(cloud, alice, vm_id=vm_id, action="finalize")
    assert addresses.list_addresses(cloud, alice)[0].vm_id is None
    assert public_ips(cloud, vm_id) == [""]
    assert held(cloud) == [address.ip]  # the address stays its owner's
    with pytest.raises(InvalidState):
        addresses.associate(cloud, alice, address_id=address.id, vm_id=vm_id)
    addresses.release(cloud, alice, address_id=address.id)
    assert held(cloud) == []


def test_concurrent_allocations_get_distinct_addresses(cloud: Cloud) -> None:
    alice = user(cloud, "alice")
    with ThreadPoolExecutor(6) as pool:
        got = list(pool.map(lambda _: addresses.allocate(cloud, alice).ip, range(6)))
    assert len(set(got)) == 6


def test_users_touch_only_their_own_addresses(cloud: Cloud) -> None:
    alice, bob = user(cloud, "alice"), user(cloud, "bob")
    mine = addresses.allocate(cloud, alice)
    assert mine.id is not None
    alice_vm, bob_vm = (vms.create_vm(cloud, alice, text=NIC_VM),
                        vms.create_vm(cloud, bob, text=NIC_VM))
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
    assert public_ips(cloud, bob_vm) == [""]


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


def test_rule_changes_refilter_the_vms_they_concern(cloud: Cloud) -> None:
    alice = user(cloud, "alice")
    web = gid(secgroups.create(cloud, alice, name="web", description=""))
    app = gid(secgroups.create(cloud, alice, name="app", description=""))
    other = gid(secgroups.create(cloud, alice, name="other", description=""))
    in_web, in_app, in_other = (vm_with_groups(cloud, alice, [g]) for g in (web, app, other))
    stopped = vm_with_groups(cloud, alice, [web])
    for vm_id in (in_web, in_app, in_other):
        run(cloud, vm_id)
    secgroups.authorize(cloud, alice, group_id=app, direction="ingress",
                        rules=[rule("tcp", 80, 80, group=web)])  # app names web as peer
    assert refilters(cloud) == [in_app]
    with cloud.session() as s:  # done: the next change queues again
        s.execute(update(Operation).values(status="done"))
    secgroups.authorize(cloud, alice, group_id=web, direction="ingress",
                        rules=[rule("tcp", 22, 22, cidr="10.0.0.0/8")])
    # web's members only: app's rules name web's members, not web's rules
    assert refilters(cloud) == [in_web]  # not `stopped`, not `in_other`
    log = [e.message for e in vms.vm_log_entries(cloud, alice, vm_id=in_web)]
    assert f"Queued driver work: update_sg (security group {web})" in log
    secgroups.revoke(cloud, alice, group_id=web, direction="ingress",
                     rules=[rule("tcp", 22, 22, cidr="10.0.0.0/8")])
    assert refilters(cloud) == [in_web]  # one pending update_sg each is enough
    assert stopped not in refilters(cloud)


def test_a_peer_group_gaining_or_losing_a_member_refilters_who_names_it(cloud: Cloud) -> None:
    alice = user(cloud, "alice")
    web = gid(secgroups.create(cloud, alice, name="web", description=""))
    app = gid(secgroups.create(cloud, alice, name="app", description=""))
    secgroups.authorize(cloud, alice, group_id=app, direction="ingress",
                        rules=[rule("tcp", 80, 80, group=web)])  # app names web as peer
    in_app, in_web = vm_with_groups(cloud, alice, [app]), vm_with_groups(cloud, alice, [web])
    run(cloud, in_app)
    run(cloud, in_web)
    assert refilters(cloud) == []
    joined = vm_with_groups(cloud, alice, [web])  # one peer address more for app
    assert refilters(cloud) == [in_app]
    log = [e.message for e in vms.vm_log_entries(cloud, alice, vm_id=in_app)]
    assert f"Queued driver work: update_sg (VM {joined} joined a peer security group)" in log
    with cloud.session() as s:
        s.execute(update(Operation).values(status="done"))
    vm_with_groups(cloud, alice, [app])  # nobody names app: nothing to do
    assert refilters(cloud) == []
    vms.act(cloud, alice, vm_id=joined, action="finalize")  # one fewer
    assert refilters(cloud) == [in_app]
