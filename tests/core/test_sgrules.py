"""What a VM's network driver is told of its security groups (core.service.sgrules), on
SQLite and PostgreSQL: rules as SECURITY_GROUP_RULE vectors, a group peer as the
addresses of its members now, and which groups a new VM may name."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from core.errors import Forbidden, InvalidRequest, NotFound
from core.models import VM
from core.service import secgroups, sgrules, vms, vnets
from core.service.context import Cloud
from core.service.secgroups import rule
from tests.core.clouds import ADMIN, VM_TEXT, make_cloud, user


@pytest.fixture
def cloud(db_url: str, tmp_path: Path) -> Iterator[Cloud]:
    c = make_cloud(db_url, tmp_path)
    yield c
    c.engine.dispose()


def rules_of_vm(cloud: Cloud, vm_id: int) -> list[dict[str, str]]:
    with cloud.session() as s:
        vm = s.get(VM, vm_id)
        assert vm is not None
        return sgrules.document_rules(s, vm)


def test_rules_become_vectors_and_group_peers_their_members(cloud: Cloud) -> None:
    net = vnets.create_vnet(cloud, ADMIN, text='NAME = "lan"\nTYPE = FIXED\nBRIDGE = "br0"\n'
                            'LEASES = [ IP = "10.1.0.5" ]\nLEASES = [ IP = "10.1.0.6" ]\n')
    web = secgroups.create(cloud, ADMIN, name="web", description="")
    db = secgroups.create(cloud, ADMIN, name="db", description="")
    assert web.id is not None and db.id is not None
    secgroups.authorize(cloud, ADMIN, group_id=db.id, direction="ingress", rules=[
        rule("tcp", 5432, 5432, group=web.id), rule("icmp", 8, 0, cidr="10.0.0.0/8"),
        rule("-1", cidr="::/0")])
    secgroups.authorize(cloud, ADMIN, group_id=db.id, direction="egress",
                        rules=[rule("udp", 53, 53, cidr="10.9.9.9/32")])
    nic = f'NIC = [ NETWORK_ID = "{net}" ]\n'
    database = vms.create_vm(cloud, ADMIN, text=VM_TEXT + nic + f'SECURITY_GROUPS = "{db.id}"\n')
    found = rules_of_vm(cloud, database)
    assert {"PROTOCOL": "ICMP", "ICMP_TYPE": "8", "ICMP_CODE": "0", "NETWORK": "10.0.0.0/8",
            "RULE_TYPE": "inbound", "SECURITY_GROUP_ID": str(db.id),
            "SECURITY_GROUP_NAME": "db"} in found
    assert {"PROTOCOL": "ALL", "NETWORK": "::/0", "RULE_TYPE": "inbound",
            "SECURITY_GROUP_ID": str(db.id), "SECURITY_GROUP_NAME": "db"} in found
    assert any(v["RULE_TYPE"] == "outbound" and v.get("RANGE") == "53:53" for v in found)
    assert not any(v.get("RANGE") == "5432:5432" for v in found)  # web has no members yet

    member = vms.create_vm(cloud, ADMIN, text=VM_TEXT + nic + f'SECURITY_GROUPS = "{web.id}"\n')
    peers = [v for v in rules_of_vm(cloud, database) if v.get("RANGE") == "5432:5432"]
    assert [v["NETWORK"] for v in peers] == ["10.1.0.6/32"]
    vms.act(cloud, ADMIN, vm_id=member, action="finalize")  # an ended VM is no peer
    assert not any(v.get("RANGE") == "5432:5432" for v in rules_of_vm(cloud, database))
    assert rules_of_vm(cloud, vms.create_vm(cloud, ADMIN, text=VM_TEXT)) == []


def test_a_new_vm_names_only_its_owners_groups(cloud: Cloud) -> None:
    alice, bob = user(cloud, "alice"), user(cloud, "bob")
    mine = secgroups.create(cloud, alice, name="mine", description="")
    text = VM_TEXT + f'SECURITY_GROUPS = "{mine.id}, {mine.id}"\n'
    vm_id = vms.create_vm(cloud, alice, text=text)
    assert secgroups.groups_of(vms.get_vm(cloud, alice, vm_id=vm_id).vm.template) == [mine.id]
    with pytest.raises(Forbidden):
        vms.create_vm(cloud, bob, text=text)
    with pytest.raises(NotFound):
        vms.create_vm(cloud, alice, text=VM_TEXT + 'SECURITY_GROUPS = "999"\n')
    with pytest.raises(InvalidRequest, match="SECURITY_GROUPS"):
        vms.create_vm(cloud, alice, text=VM_TEXT + 'SECURITY_GROUPS = "mine"\n')
