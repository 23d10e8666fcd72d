"""The ovswitch network driver's makers (drivers/remotes/lib/ovs_rules.py) on their own:
port settings (tag, trunks), the flows of a NIC with their cookie (anti-spoofing, security
groups, port filters), port lists as OpenFlow masks, and bad input refused. The flows
themselves switch real traffic in tests/e2e/test_ovswitch.py and
tests/e2e/test_ovs_secgroups.py."""

from __future__ import annotations

import sys

import pytest

from tests.drivers.conftest import REMOTES

sys.path.insert(0, str(REMOTES / "lib"))
import ovs_rules  # noqa: E402
import vnm_common  # noqa: E402

MAC = "02:00:0a:00:01:05"


def nic(ip: str = "10.0.1.5", **attrs: str) -> vnm_common.Nic:
    return vnm_common.Nic("1", "one-7-1", MAC, ip, "3", "ovsbr0", attrs)


def grouped(*rules: dict[str, str], **attrs: str) -> vnm_common.Nic:
    """A NIC of a VM in security groups, with these SECURITY_GROUP_RULE vectors."""
    return vnm_common.Nic("1", "one-7-1", MAC, "10.0.1.5", "3", "ovsbr0", attrs, True, rules)


def rule(direction: str, protocol: str, network: str = "0.0.0.0/0", **more: str
         ) -> dict[str, str]:
    return {"SECURITY_GROUP_ID": "4", "SECURITY_GROUP_NAME": "web", "RULE_TYPE": direction,
            "PROTOCOL": protocol, "NETWORK": network, **more}


def covered(match: str) -> set[int]:
    value, _, mask = match.partition("/")
    want, bits = int(value, 0), int(mask, 0) if mask else 0xFFFF
    return {port for port in range(65536) if port & bits == want}


def test_the_cookie_names_the_vm_and_the_nic() -> None:
    assert ovs_rules.cookie("7", nic()) == 0x6E75_0000_0007_0001
    assert ovs_rules.cookie("7", nic()) != ovs_rules.cookie("71", nic())
    assert ovs_rules.SHARED_COOKIE == 0x6E75_FFFF_FFFF_FFFF


def test_port_settings_tag_trunks_and_the_owner_mark() -> None:
    assert ovs_rules.port_settings("7", nic(VLAN="YES", VLAN_ID="100")) == [
        "external_ids:nubo-vm=7", "tag=100", "trunks=[]", "vlan_mode=access"]
    assert ovs_rules.port_settings("7", nic(VLAN="YES")) == [  # 2 + network id
        "external_ids:nubo-vm=7", "tag=5", "trunks=[]", "vlan_mode=access"]
    assert ovs_rules.port_settings("7", nic(VLAN_TAGGED_ID="300, 310-312")) == [
        "external_ids:nubo-vm=7", "trunks=300,310,311,312", "tag=[]", "vlan_mode=trunk"]
    assert ovs_rules.port_settings("7", nic(VLAN="YES", VLAN_ID="100",
                                            VLAN_TAGGED_ID="200")) == [
        "external_ids:nubo-vm=7", "trunks=200", "tag=100", "vlan_mode=native-untagged"]
    assert ovs_rules.port_settings("7", nic()) == ["external_ids:nubo-vm=7"]
    assert ovs_rules.plug_command("7", nic(VLAN="YES", VLAN_ID="9")) == [
        "--may-exist", "add-port", "ovsbr0", "one-7-1", "--", "set", "Port", "one-7-1",
        "external_ids:nubo-vm=7", "tag=9", "trunks=[]", "vlan_mode=access"]
    assert ovs_rules.unplug_command(nic()) == ["--if-exists", "del-port", "ovsbr0", "one-7-1"]


def test_anti_spoofing_allows_the_nic_mac_and_ip_only() -> None:
    head = "cookie=0x6e75000000070001,table=0"
    assert ovs_rules.anti_spoofing("7", nic()) == [
        f"{head},priority=46000,in_port=one-7-1,dl_src={MAC},ip,nw_src=10.0.1.5,"
        "actions=resubmit(,1)",
        f"{head},priority=46000,in_port=one-7-1,dl_src={MAC},arp,arp_spa=10.0.1.5,"
        f"arp_sha={MAC},actions=resubmit(,1)",
        f"{head},priority=45000,in_port=one-7-1,ip,actions=drop",
        f"{head},priority=45000,in_port=one-7-1,arp,actions=drop",
        f"{head},priority=40000,in_port=one-7-1,dl_src={MAC},actions=resubmit(,1)",
        f"{head},priority=39000,in_port=one-7-1,actions=drop"]
    assert ovs_rules.anti_spoofing("7", nic(ip="")) == [  # no IP: the MAC only
        f"{head},priority=40000,in_port=one-7-1,dl_src={MAC},actions=resubmit(,1)",
        f"{head},priority=39000,in_port=one-7-1,actions=drop"]
    assert ovs_rules.filters("7", nic()) == []  # nothing to filter toward it


def test_filters_white_wins_black_drops_icmp_drops_established_passes() -> None:
    flows = ovs_rules.filters("7", nic(VLAN="YES", VLAN_ID="100", WHITE_PORTS_TCP="22,80",
                                       BLACK_PORTS_TCP="80", BLACK_PORTS_UDP="53",
                                       ICMP="drop"))
    body = [flow.split(",", 2)[2] for flow in flows]  # without cookie and table
    to = f"dl_dst={MAC}"
    assert all(flow.startswith("cookie=0x6e75000000070001,table=3,") for flow in flows)
    assert body == [
        f"priority=42000,ip,{to},ct_state=-trk,actions=ct(table=3,zone=100)",
        f"priority=41000,ip,{to},ct_state=+trk+est,actions=NORMAL",
        f"priority=41000,ip,{to},ct_state=+trk+rel,actions=NORMAL",
        f"priority=40000,tcp,{to},tp_dst=22,actions=ct(commit,zone=100),NORMAL",
        f"priority=40000,tcp,{to},tp_dst=80,actions=ct(commit,zone=100),NORMAL",
        f"priority=39000,tcp,{to},actions=drop",
        f"priority=40000,udp,{to},tp_dst=53,actions=drop",
        f"priority=40000,icmp,{to},actions=drop",
        f"priority=37000,ip,{to},actions=ct(commit,zone=100),NORMAL",
        "priority=36000,in_port=one-7-1,ip,actions=ct(commit,zone=100),NORMAL"]


def test_port_ranges_become_masks_covering_exactly_the_range() -> None:
    assert ovs_rules.port_ranges("80") == ["80"]
    assert ovs_rules.port_ranges("22:25") == ["0x16/0xfffe", "0x18/0xfffe"]
    assert ovs_rules.port_ranges("0:65535") == ["0x0/0x0"]
    for text in ("1000:1999", "1:1023", "443,8000:8080", "65535"):
        found: set[int] = set()
        for match in ovs_rules.port_ranges(text):
            assert not found & covered(match)  # no overlaps
            found |= covered(match)
        wanted = set()
        for part in text.split(","):
            low, _, high = part.partition(":")
            wanted |= set(range(int(low), int(high or low) + 1))
        assert found == wanted, text


def test_the_batch_replaces_the_nic_flows_in_one_transaction() -> None:
    batch = ovs_rules.flow_batch("7", nic(ICMP="drop")).splitlines()
    assert batch[0] == "delete cookie=0x6e75000000070001/-1"
    assert batch[1:5] == [
        "add cookie=0x6e75ffffffffffff,table=0,priority=1,actions=resubmit(,1)",
        "add cookie=0x6e75ffffffffffff,table=1,priority=0,actions=resubmit(,2)",
        "add cookie=0x6e75ffffffffffff,table=2,priority=0,actions=resubmit(,3)",
        "add cookie=0x6e75ffffffffffff,table=3,priority=0,actions=NORMAL"]
    assert len(batch) == 5 + 6 + 6 and all(line.startswith("add ") for line in batch[1:])
    with_groups = ovs_rules.flow_batch("7", grouped(rule("inbound", "TCP", RANGE="80:80"),
                                                    ICMP="drop")).splitlines()
    assert len(with_groups) == (5 + 6 + (3 + 0 + 1) + (3 + 1 + 1) + 6  # IPv4: no outbound rule
                                + 2 * (3 + 4 + 0 + 1) + 5)  # IPv6: no rule, ND, commits
    assert with_groups[0] == batch[0]  # one cookie: the groups' flows replaced with the rest


@pytest.mark.parametrize(("attrs", "message"), [
    ({"VLAN_TAGGED_ID": "100;200"}, "is not a list of VLAN ids"),
    ({"VLAN_TAGGED_ID": "5000"}, "is not within 1-4094"),
    ({"VLAN_TAGGED_ID": "20-10"}, "is not within 1-4094"),
    ({"VLAN": "YES", "VLAN_ID": "4095"}, "is not an id from 1 to 4094"),
])
def test_bad_vlan_settings_are_refused(attrs: dict[str, str], message: str,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        ovs_rules.port_settings("7", nic(**attrs))
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert message in err and "ERROR MESSAGE" in err


def test_bad_ports_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        ovs_rules.filters("7", nic(BLACK_PORTS_TCP="80;443"))
    assert "is not a list of ports" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        ovs_rules.port_ranges("90:80")
    assert "90:80 is not a port or a port range" in capsys.readouterr().err


def test_security_groups_become_flows_from_and_to_the_nic() -> None:
    flows = ovs_rules.groups("7", grouped(
        rule("inbound", "TCP", "10.0.0.99/32", RANGE="80:80"),
        rule("inbound", "TCP", RANGE="22:25"),
        rule("inbound", "UDP", "192.168.7.9/16", RANGE="0:65535"),
        rule("inbound", "ICMP", ICMP_TYPE="8", ICMP_CODE="0"),
        rule("inbound", "ICMP", "10.9.0.0/24"),
        rule("inbound", "47"),
        rule("inbound", "ALL", "10.0.0.99/32"),
        rule("inbound", "TCP", "10.0.0.99/32", RANGE="80:80"),  # again (another group)
        rule("inbound", "TCP", "fd00::/64", RANGE="80:80"),  # IPv6: its own flows
        rule("inbound", "ICMPV6", "::/0"),
        rule("outbound", "ALL"),
        rule("outbound", "TCP", "10.1.0.0/16", RANGE="443:443"),
        VLAN="YES", VLAN_ID="100"))
    assert all(flow.startswith("cookie=0x6e75000000070001,table=") for flow in flows)
    body = [flow.split(",", 1)[1] for flow in flows]  # without the cookie
    tap, to = "in_port=one-7-1", f"dl_dst={MAC}"
    assert body == [
        f"table=1,priority=42000,ip,{tap},ct_state=-trk,actions=ct(table=1,zone=100)",
        f"table=1,priority=41000,ip,{tap},ct_state=+trk+est,actions=resubmit(,2)",
        f"table=1,priority=41000,ip,{tap},ct_state=+trk+rel,actions=resubmit(,2)",
        f"table=1,priority=40000,ip,{tap},actions=resubmit(,2)",
        f"table=1,priority=40000,tcp,{tap},nw_dst=10.1.0.0/16,tp_dst=443,actions=resubmit(,2)",
        f"table=1,priority=39000,ip,{tap},actions=drop",
        *ipv6(1, tap, 100),
        f"table=1,priority=39000,ipv6,{tap},actions=drop",
        f"table=2,priority=42000,ip,{to},ct_state=-trk,actions=ct(table=2,zone=100)",
        f"table=2,priority=41000,ip,{to},ct_state=+trk+est,actions=resubmit(,3)",
        f"table=2,priority=41000,ip,{to},ct_state=+trk+rel,actions=resubmit(,3)",
        f"table=2,priority=40000,tcp,{to},nw_src=10.0.0.99/32,tp_dst=80,actions=resubmit(,3)",
        f"table=2,priority=40000,tcp,{to},tp_dst=0x16/0xfffe,actions=resubmit(,3)",
        f"table=2,priority=40000,tcp,{to},tp_dst=0x18/0xfffe,actions=resubmit(,3)",
        f"table=2,priority=40000,udp,{to},nw_src=192.168.0.0/16,actions=resubmit(,3)",
        f"table=2,priority=40000,icmp,{to},icmp_type=8,icmp_code=0,actions=resubmit(,3)",
        f"table=2,priority=40000,icmp,{to},nw_src=10.9.0.0/24,actions=resubmit(,3)",
        f"table=2,priority=40000,ip,{to},nw_proto=47,actions=resubmit(,3)",
        f"table=2,priority=40000,ip,{to},nw_src=10.0.0.99/32,actions=resubmit(,3)",
        f"table=2,priority=39000,ip,{to},actions=drop",
        *ipv6(2, to, 100),
        f"table=2,priority=40000,tcp6,{to},ipv6_src=fd00::/64,tp_dst=80,actions=resubmit(,3)",
        f"table=2,priority=40000,icmp6,{to},actions=resubmit(,3)",
        f"table=2,priority=39000,ipv6,{to},actions=drop"]


def ipv6(table: int, own: str, zone: int) -> list[str]:
    """The first IPv6 flows of a group table: conntrack, established, neighbour
    discovery."""
    onward = f"actions=resubmit(,{table + 1})"
    return [f"table={table},priority=42000,ipv6,{own},ct_state=-trk,"
            f"actions=ct(table={table},zone={zone})",
            f"table={table},priority=41000,ipv6,{own},ct_state=+trk+est,{onward}",
            f"table={table},priority=41000,ipv6,{own},ct_state=+trk+rel,{onward}",
            *(f"table={table},priority=41000,icmp6,{own},icmp_type={kind},{onward}"
              for kind in (133, 134, 135, 136))]


def test_ipv6_rules_become_ipv6_flows_and_ipv4_ones_stay_as_they_were() -> None:
    """Each rule goes to its NETWORK's family; IPv6 rules match ipv6_src/ipv6_dst with
    tcp6, udp6, icmp6 and ipv6; the IPv4 flows are those of the same rules without the
    IPv6 ones."""
    v4 = [rule("inbound", "TCP", "10.0.0.99/32", RANGE="80:80"),
          rule("outbound", "ICMP", ICMP_TYPE="8")]
    v6 = [rule("inbound", "TCP", "fd00:1::99/128", RANGE="8080:8081"),
          rule("inbound", "UDP", "fd00:2::/48"),
          rule("inbound", "ICMPV6", "fd00:1::98", ICMP_TYPE="128", ICMP_CODE="0"),
          rule("inbound", "ICMPV6", ICMP_TYPE="1"),  # no NETWORK given: ICMPv6 everywhere
          rule("outbound", "TCP", "::/0", RANGE="443:443"),
          rule("outbound", "ALL", "fd00:3::/64"),
          rule("outbound", "58", "fd00:4::/64"),
          rule("outbound", "ICMP", "fd00::/8"),  # ICMP to an IPv6 block: matches nothing
          rule("outbound", "ICMPV6", "10.0.0.0/8")]  # and ICMPV6 to an IPv4 one
    v6[3].pop("NETWORK")
    both = ovs_rules.groups("7", grouped(*v4, *v6))
    alone = ovs_rules.groups("7", grouped(*v4))
    assert [flow for flow in both if not v6_flow(flow)] == [
        flow for flow in alone if not v6_flow(flow)]  # IPv4: as without the IPv6 rules
    assert len([flow for flow in alone if v6_flow(flow)]) == 2 * 8  # IPv6: no rule
    body = [flow.split(",", 2)[2] for flow in both if "priority=40000" in flow
            and v6_flow(flow)]
    tap, to, on1, on2 = "in_port=one-7-1", f"dl_dst={MAC}", "resubmit(,2)", "resubmit(,3)"
    assert body == [
        f"priority=40000,tcp6,{tap},tp_dst=443,actions={on1}",  # ::/0 is everywhere
        f"priority=40000,ipv6,{tap},ipv6_dst=fd00:3::/64,actions={on1}",
        f"priority=40000,ipv6,{tap},ipv6_dst=fd00:4::/64,nw_proto=58,actions={on1}",
        f"priority=40000,tcp6,{to},ipv6_src=fd00:1::99/128,tp_dst=0x1f90/0xfffe,"
        f"actions={on2}",  # 8080 and 8081
        f"priority=40000,udp6,{to},ipv6_src=fd00:2::/48,actions={on2}",
        f"priority=40000,icmp6,{to},ipv6_src=fd00:1::98/128,icmp_type=128,icmp_code=0,"
        f"actions={on2}",
        f"priority=40000,icmp6,{to},icmp_type=1,actions={on2}"]


def v6_flow(flow: str) -> bool:
    return any(f",{proto}," in flow for proto in ("ipv6", "tcp6", "udp6", "icmp6"))


def test_neighbour_discovery_passes_every_grouped_nic_both_ways() -> None:
    """ICMPv6 133-136 pass in tables 1 and 2 whatever the rules, even with none."""
    flows = ovs_rules.groups("7", grouped())
    nd = [flow.split(",", 2)[1:] for flow in flows if "icmp6" in flow]
    assert nd == [[f"table={table}", f"priority=41000,icmp6,{own},icmp_type={kind},"
                   f"actions=resubmit(,{table + 1})"]
                  for table, own in ((1, "in_port=one-7-1"), (2, f"dl_dst={MAC}"))
                  for kind in (133, 134, 135, 136)]
    assert flows[-1].endswith(f"priority=39000,ipv6,dl_dst={MAC},actions=drop")
    assert ovs_rules.groups("7", nic()) == []  # in no group: IPv6 unfiltered as before


def test_a_group_without_rules_lets_only_established_traffic_through() -> None:
    body = [flow.split(",", 1)[1] for flow in ovs_rules.groups("7", grouped())]
    assert [flow for flow in body if "priority=40000" in flow] == []
    assert body[-1] == f"table=2,priority=39000,ipv6,dl_dst={MAC},actions=drop"
    assert f"table=2,priority=39000,ip,dl_dst={MAC},actions=drop" in body
    assert "ct(table=1,zone=0)" in body[0]  # untagged: zone 0
    assert len(body) == 2 * (4 + 8)  # IPv4, and IPv6 with neighbour discovery
    icmp = ovs_rules.groups("7", grouped(rule("inbound", "ICMP", ICMP_TYPE="3")))
    assert f"icmp,dl_dst={MAC},icmp_type=3,actions=resubmit(,3)" in icmp[-10]


def test_port_filters_follow_the_groups_and_commit_what_passed() -> None:
    """A grouped NIC without port filters still gets table 3's connection tracking and
    commits; a NIC of a VM in no group gets no group flows."""
    assert ovs_rules.groups("7", nic(WHITE_PORTS_TCP="80")) == []
    body = [flow.split(",", 2)[2] for flow in ovs_rules.filters("7", grouped())]
    to = f"dl_dst={MAC}"
    assert body == [
        f"priority=42000,ip,{to},ct_state=-trk,actions=ct(table=3,zone=0)",
        f"priority=41000,ip,{to},ct_state=+trk+est,actions=NORMAL",
        f"priority=41000,ip,{to},ct_state=+trk+rel,actions=NORMAL",
        f"priority=37000,ip,{to},actions=ct(commit,zone=0),NORMAL",
        "priority=36000,in_port=one-7-1,ip,actions=ct(commit,zone=0),NORMAL",
        f"priority=42000,ipv6,{to},ct_state=-trk,actions=ct(table=3,zone=0)",
        f"priority=41000,ipv6,{to},ct_state=+trk+est,actions=NORMAL",
        f"priority=41000,ipv6,{to},ct_state=+trk+rel,actions=NORMAL",
        f"priority=37000,ipv6,{to},actions=ct(commit,zone=0),NORMAL",
        "priority=36000,in_port=one-7-1,ipv6,actions=ct(commit,zone=0),NORMAL"]
    both = ovs_rules.flows("7", grouped(rule("inbound", "ICMP"), ICMP="drop"))
    tables = [flow.split(",")[1] for flow in both]
    assert tables == sorted(tables)  # anti-spoofing, groups out, groups in, port filters
    assert f"priority=40000,icmp,{to},actions=drop" in both[-8]  # ICMP = drop still drops


@pytest.mark.parametrize(("vector", "message"), [
    (rule("inbound", "TCP", "10.0.0.300/32", RANGE="80:80"), "is not an address block"),
    (rule("inbound", "TCP", RANGE="80"), "is not a port range a:b"),
    (rule("inbound", "UDP", RANGE="80-90"), "is not a port range a:b"),
    (rule("inbound", "TCP", RANGE="90:80"), "RANGE = '90:80' is not a port range a:b"),
    (rule("outbound", "TCP", RANGE="0:70000"), "RANGE = '0:70000' is not a port range a:b"),
    (rule("inbound", "ICMP", ICMP_TYPE="echo"), "are not numbers from 0 to 255"),
    (rule("inbound", "ICMP", ICMP_TYPE="8", ICMP_CODE="256"), "are not numbers from 0 to 255"),
    (rule("inbound", "GRE"), "PROTOCOL = 'gre' is unknown"),
    (rule("inbound", "300"), "PROTOCOL = '300' is unknown"),
])
def test_bad_security_group_rules_are_refused(vector: dict[str, str], message: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        ovs_rules.flow_batch("7", grouped(vector))
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert message in err and "ERROR MESSAGE" in err


def test_clean_removes_fw_chains_of_nics_off_ovs_whatever_they_had(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A NIC on a Linux bridge only in groups (no port filters) had fw's group chains:
    clean removes them too."""
    import fw_rules

    removed: list[list[vnm_common.Nic]] = []
    member = grouped()
    monkeypatch.setattr(ovs_rules, "ovs_nics", lambda nics: ([], list(nics)))
    monkeypatch.setattr(fw_rules, "remove", lambda vm_id, nics: removed.append(nics) or 2)
    assert ovs_rules.remove("7", [member]) == (0, 2)
    assert removed == [[member]]
