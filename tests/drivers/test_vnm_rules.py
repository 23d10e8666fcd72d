"""The network drivers' rule makers (drivers/remotes/lib: vnm_common, fw_rules,
ebtables_rules) on their own: what each NIC gets, in which order, and bad input refused.
The rules themselves are exercised on lab hosts by tests/e2e/test_fw.py,
test_isolation.py and test_secgroups_ipv6.py."""

from __future__ import annotations

import base64
import sys

import pytest

from tests.drivers.conftest import REMOTES

sys.path.insert(0, str(REMOTES / "lib"))
import ebtables_rules  # noqa: E402
import fw_rules  # noqa: E402
import vlan_devices  # noqa: E402
import vnm_common  # noqa: E402


def nic(**attrs: str) -> vnm_common.Nic:
    return vnm_common.Nic("1", "one-7-1", "02:00:0a:00:01:05", "10.0.1.5", "3", "br0", attrs)


def test_a_white_list_wins_and_closes_the_rest_of_its_protocol() -> None:
    rules = fw_rules.rules(nic(WHITE_PORTS_TCP="22,80:90", BLACK_PORTS_TCP="80",
                               BLACK_PORTS_UDP="53", ICMP="drop"))
    assert rules == [
        ["-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"],
        ["-p", "tcp", "-m", "multiport", "--dports", "22,80:90", "-j", "ACCEPT"],
        ["-p", "tcp", "-j", "DROP"],
        ["-p", "udp", "-m", "multiport", "--dports", "53", "-j", "DROP"],
        ["-p", "icmp", "-j", "DROP"]]
    assert fw_rules.chain("7", nic()) == "one-7-3"
    assert fw_rules.jump("7", nic()) == ["FORWARD", "-m", "physdev", "--physdev-is-bridged",
                                         "--physdev-out", "one-7-1", "-j", "one-7-3"]
    assert not fw_rules.filtered(nic()) and fw_rules.filtered(nic(ICMP="drop"))


def test_ports_that_are_not_ports_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        fw_rules.rules(nic(WHITE_PORTS_TCP="22; rm -rf /"))
    assert "WHITE_PORTS_TCP = '22;rm-rf/' is not a list of ports" in capsys.readouterr().err


def test_anti_spoofing_keeps_the_nics_slash_24(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ebtables_rules.anti_spoofing("one-7-1", "02:00:0A:00:01:05") == [
        ["-s", "!", "02:00:0a:00:01:00/ff:ff:ff:ff:ff:00", "-o", "one-7-1", "-j", "DROP"],
        ["-s", "!", "02:00:0a:00:01:05", "-i", "one-7-1", "-j", "DROP"]]
    assert ebtables_rules.interface(["-s", "!", "x", "-i", "one-7-1", "-j", "DROP"]) == "one-7-1"


def test_the_vm_document_gives_each_nic_its_tap(monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    doc = (b"<VM><ID>12</ID><TEMPLATE><NIC><NIC_ID>0</NIC_ID><MAC>02:00:0a:00:00:02</MAC>"
           b"<IP>10.0.0.2</IP><NETWORK_ID>4</NETWORK_ID><ICMP>drop</ICMP></NIC>"
           b"<NIC><NIC_ID>1</NIC_ID></NIC></TEMPLATE></VM>")
    monkeypatch.setattr(sys, "argv", ["post", base64.b64encode(doc).decode(), "one-12"])
    vm_id, nics = vnm_common.vm_nics("post")
    assert vm_id == "12" and [n.tap for n in nics] == ["one-12-0", "one-12-1"]
    assert nics[0].network_id == "4" and nics[0].attributes["ICMP"] == "drop"
    monkeypatch.setattr(sys, "argv", ["clean", "not base64!"])
    with pytest.raises(SystemExit):
        vnm_common.vm_nics("clean")
    assert "clean: the VM document does not decode" in capsys.readouterr().err


def grouped(*rules: dict[str, str]) -> vnm_common.Nic:
    return vnm_common.Nic("1", "one-7-1", "02:00:0a:00:01:05", "10.0.1.5", "3", "br0", {},
                          True, rules)


def test_security_group_rules_return_what_they_allow_and_drop_the_rest() -> None:
    vm = grouped(
        {"RULE_TYPE": "inbound", "PROTOCOL": "TCP", "RANGE": "80:80", "NETWORK": "10.0.0.0/8"},
        {"RULE_TYPE": "inbound", "PROTOCOL": "ICMP", "ICMP_TYPE": "8", "NETWORK": "0.0.0.0/0"},
        {"RULE_TYPE": "inbound", "PROTOCOL": "UDP", "RANGE": "0:65535", "NETWORK": "1.2.3.4/32"},
        {"RULE_TYPE": "inbound", "PROTOCOL": "ALL", "NETWORK": "::/0"},  # not iptables'
        {"RULE_TYPE": "inbound", "PROTOCOL": "50", "NETWORK": "0.0.0.0/0"},
        {"RULE_TYPE": "outbound", "PROTOCOL": "ALL", "NETWORK": "0.0.0.0/0"})
    established = ["-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "RETURN"]
    assert fw_rules.group_rules(vm, "inbound") == [
        established,
        ["-s", "10.0.0.0/8", "-p", "tcp", "--dport", "80:80", "-j", "RETURN"],
        ["-p", "icmp", "--icmp-type", "8", "-j", "RETURN"],
        ["-s", "1.2.3.4/32", "-p", "udp", "-j", "RETURN"],
        ["-p", "50", "-j", "RETURN"],
        ["-j", "DROP"]]
    assert fw_rules.group_rules(vm, "outbound") == [established, ["-j", "RETURN"],
                                                    ["-j", "DROP"]]
    # the group chains are inserted last, so they come first in FORWARD; each has a
    # bridged jump and one for traffic the host routes
    jumps = [j for j, _ in fw_rules.wanted("7", [grouped()])]
    assert [j[-1] for j in jumps] == ["one-7-1-o", "one-7-1-o", "one-7-1-i", "one-7-1-i"]
    assert jumps[0][4] == "--physdev-in" and jumps[2][4] == "--physdev-out"
    assert "!" in jumps[1] and "!" in jumps[3]
    assert fw_rules.group_rules(grouped(), "inbound") == [established, ["-j", "DROP"]]


def test_security_group_rules_that_are_not_rules_are_refused(
        capsys: pytest.CaptureFixture[str]) -> None:
    for bad in ({"PROTOCOL": "TCP", "RANGE": "80; reboot"}, {"PROTOCOL": "GRE"},
                {"PROTOCOL": "ALL", "NETWORK": "10.0.0.0/33"},
                {"PROTOCOL": "ICMP", "ICMP_TYPE": "echo"},
                {"PROTOCOL": "ALL", "NETWORK": "fd00::/129"},
                {"PROTOCOL": "TCP", "RANGE": "22", "NETWORK": "::/0"},
                {"PROTOCOL": "ICMPV6", "ICMP_TYPE": "128", "ICMP_CODE": "256"},
                {"PROTOCOL": "ICMPV6", "ICMP_TYPE": "128; reboot", "NETWORK": "::/0"}):
        with pytest.raises(SystemExit):
            fw_rules.group_rules(grouped({"RULE_TYPE": "inbound", **bad}), "inbound")
    assert "fw: security group rule" in capsys.readouterr().err


ND = [["-p", "ipv6-icmp", "--icmpv6-type", kind, "-j", "RETURN"]
      for kind in ("133", "134", "135", "136")]


def test_ipv6_rules_go_to_ip6tables_and_ipv4_ones_to_iptables() -> None:
    vm = grouped(
        {"RULE_TYPE": "inbound", "PROTOCOL": "TCP", "RANGE": "22:22", "NETWORK": "::/0"},
        {"RULE_TYPE": "inbound", "PROTOCOL": "TCP", "RANGE": "80:80", "NETWORK": "10.0.0.0/8"},
        {"RULE_TYPE": "inbound", "PROTOCOL": "UDP", "RANGE": "0:65535",
         "NETWORK": "fd00:221::99/128"},
        {"RULE_TYPE": "inbound", "PROTOCOL": "ICMPV6", "ICMP_TYPE": "128", "ICMP_CODE": "0",
         "NETWORK": "fd00:221::/64"},
        {"RULE_TYPE": "inbound", "PROTOCOL": "ICMPV6", "NETWORK": "2001:db8::/32"},
        {"RULE_TYPE": "inbound", "PROTOCOL": "ICMPV6", "NETWORK": "0.0.0.0/0"},  # no packet
        {"RULE_TYPE": "inbound", "PROTOCOL": "ICMP", "NETWORK": "::/0"},  # no packet
        {"RULE_TYPE": "inbound", "PROTOCOL": "50", "NETWORK": "fd00::1:0/112"},
        {"RULE_TYPE": "outbound", "PROTOCOL": "ALL", "NETWORK": "::/0"},
        {"RULE_TYPE": "outbound", "PROTOCOL": "ALL", "NETWORK": "0.0.0.0/0"})
    established = ["-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "RETURN"]
    assert fw_rules.group_rules(vm, "inbound", 6) == [
        established, *ND,
        ["-p", "tcp", "--dport", "22:22", "-j", "RETURN"],  # ::/0: from anywhere
        ["-s", "fd00:221::99/128", "-p", "udp", "-j", "RETURN"],
        ["-s", "fd00:221::/64", "-p", "ipv6-icmp", "--icmpv6-type", "128/0", "-j", "RETURN"],
        ["-s", "2001:db8::/32", "-p", "ipv6-icmp", "-j", "RETURN"],
        ["-s", "fd00::1:0/112", "-p", "50", "-j", "RETURN"],
        ["-j", "DROP"]]
    assert fw_rules.group_rules(vm, "outbound", 6) == [established, *ND, ["-j", "RETURN"],
                                                       ["-j", "DROP"]]
    assert fw_rules.group_rules(vm, "inbound") == [
        established, ["-s", "10.0.0.0/8", "-p", "tcp", "--dport", "80:80", "-j", "RETURN"],
        ["-j", "DROP"]]
    # without rules of its own, IPv6 is dropped but neighbour discovery
    assert fw_rules.group_rules(grouped(), "inbound", 6) == [established, *ND, ["-j", "DROP"]]
    # the same chains in ip6tables' own tables, bridged jumps only (no IPv6 routes)
    assert [j for j, _ in fw_rules.wanted6("7", [grouped(), nic(ICMP="drop")])] == [
        ["FORWARD", "-m", "physdev", "--physdev-is-bridged", "--physdev-in", "one-7-1",
         "-j", "one-7-1-o"],
        ["FORWARD", "-m", "physdev", "--physdev-is-bridged", "--physdev-out", "one-7-1",
         "-j", "one-7-1-i"]]


def test_one_reader_gives_each_rule_its_family() -> None:
    rule = vnm_common.group_rule
    assert rule({"PROTOCOL": "TCP", "RANGE": "22:22", "NETWORK": "fd00::/8"}, "x") == (
        vnm_common.GroupRule(6, vnm_common.ipaddress.ip_network("fd00::/8"), "tcp", (22, 22)))
    assert rule({"PROTOCOL": "ICMPV6", "ICMP_TYPE": "128"}, "x") == (
        vnm_common.GroupRule(6, None, "icmpv6", None, "128"))  # no NETWORK: IPv6 anywhere
    assert rule({"PROTOCOL": "ALL"}, "x") == vnm_common.GroupRule(4, None, "all")
    assert rule({"PROTOCOL": "ICMP", "NETWORK": "fd00::/8"}, "x") is None


class Tables:
    """One family's iptables and restore, faked: the jumps and chains it holds."""

    def __init__(self) -> None:
        self.jumps: list[list[str]] = []
        self.chains: set[str] = set()
        self.loads: list[str] = []

    def tables(self, *args: str, check: bool = True) -> bool:
        what, rest = args[0], list(args[1:])
        if what == "-C":
            return rest in self.jumps
        if what == "-I":
            self.jumps.insert(0, rest)
        if what == "-D" and rest in self.jumps:
            self.jumps.remove(rest)
            return True
        if what == "-F":
            return rest[0] in self.chains
        if what == "-X":
            self.chains.discard(rest[0])
        return what in ("-I", "-X")

    def load(self, text: str) -> None:
        self.loads.append(text)
        self.chains |= {line[1:].split()[0] for line in text.splitlines() if line[:1] == ":"}


def test_apply_loads_each_family_once_and_remove_empties_both(
        monkeypatch: pytest.MonkeyPatch) -> None:
    v4, v6 = Tables(), Tables()
    for name, fake in (("iptables", v4.tables), ("restore", v4.load),
                       ("ip6tables", v6.tables), ("restore6", v6.load)):
        monkeypatch.setattr(fw_rules, name, fake)
    rule = {"RULE_TYPE": "inbound", "PROTOCOL": "TCP", "RANGE": "8080:8080",
            "NETWORK": "fd00:221::99/128"}
    assert fw_rules.apply("7", [grouped(rule)]) == 2  # one-7-1-i and -o, in both families
    assert len(v4.loads) == len(v6.loads) == 1 and v6.chains == {"one-7-1-i", "one-7-1-o"}
    assert "-A one-7-1-i -s fd00:221::99/128 -p tcp --dport 8080:8080 -j RETURN" in v6.loads[0]
    assert "fd00" not in v4.loads[0] and len(v4.jumps) == 4 and len(v6.jumps) == 2
    fw_rules.apply("7", [grouped()])  # update_sg: replaced, jumps not doubled
    assert "fd00" not in v6.loads[1] and len(v6.jumps) == 2
    assert fw_rules.remove("7", [grouped()]) == 2
    assert v4.jumps == v6.jumps == [] and v4.chains == v6.chains == set()


def test_the_vm_document_gives_each_nic_the_vms_group_rules(
        monkeypatch: pytest.MonkeyPatch) -> None:
    doc = ("<VM><ID>9</ID><TEMPLATE><SECURITY_GROUPS>4</SECURITY_GROUPS>"
           "<NIC><NIC_ID>0</NIC_ID><IP>10.0.0.2</IP></NIC><NIC><NIC_ID>1</NIC_ID></NIC>"
           "<SECURITY_GROUP_RULE><RULE_TYPE>inbound</RULE_TYPE><PROTOCOL>ALL</PROTOCOL>"
           "</SECURITY_GROUP_RULE></TEMPLATE></VM>")
    monkeypatch.setattr(sys, "argv", ["update_sg", base64.b64encode(doc.encode()).decode(), "x"])
    vm_id, nics = vnm_common.vm_nics("update_sg")
    assert vm_id == "9" and all(n.grouped for n in nics)
    assert [n.rules for n in nics] == [({"RULE_TYPE": "inbound", "PROTOCOL": "ALL"},)] * 2


def vlan_nic(nic_id: str = "0", network: str = "5", **attrs: str) -> vnm_common.Nic:
    return vnm_common.Nic(nic_id, f"one-7-{nic_id}", "02:00:0a:00:01:05", "10.0.1.5", network,
                          attrs.pop("BRIDGE", f"onebr{network}"), {"VLAN": "YES", **attrs})


def test_802_1q_makes_what_is_missing_in_order() -> None:
    nics = [vlan_nic(PHYDEV="eth1"), vlan_nic("1", PHYDEV="eth1"),
            vlan_nic("2", "6", PHYDEV="eth1", VLAN_ID="300", BRIDGE="br300"),
            vnm_common.Nic("3", "one-7-3", "", "", "9", "br0", {"PHYDEV": "eth1"})]
    assert vlan_devices.commands(nics, "802.1Q", lambda device: device == "br300") == [
        ["ip", "link", "add", "onebr5", "type", "bridge"],
        ["ip", "link", "add", "link", "eth1", "name", "eth1.7", "type", "vlan", "id", "7"],
        ["ip", "link", "set", "eth1.7", "master", "onebr5"],
        ["ip", "link", "set", "eth1.7", "up"],
        ["ip", "link", "set", "onebr5", "up"],
        ["ip", "link", "add", "link", "eth1", "name", "eth1.300", "type", "vlan", "id", "300"],
        ["ip", "link", "set", "eth1.300", "master", "br300"],
        ["ip", "link", "set", "eth1.300", "up"],
        ["ip", "link", "set", "br300", "up"]]
    # all there already: only joined and brought up again
    assert vlan_devices.commands(nics[:1], "802.1Q", lambda device: True) == [
        ["ip", "link", "set", "eth1.7", "master", "onebr5"],
        ["ip", "link", "set", "eth1.7", "up"], ["ip", "link", "set", "onebr5", "up"]]


def test_vxlan_gives_each_vni_its_multicast_group() -> None:
    nics = [vlan_nic(PHYDEV="eth0", VLAN_ID="100"),
            vlan_nic("1", "6", PHYDEV="eth0", VLAN_ID="70000", VXLAN_MC="239.1.0.0")]
    found = vlan_devices.commands(nics, "vxlan", lambda device: False)
    assert ["ip", "link", "add", "eth0.100", "type", "vxlan", "id", "100", "group",
            "239.0.0.100", "dev", "eth0", "dstport", "4789"] in found
    assert ["ip", "link", "add", "eth0.70000", "type", "vxlan", "id", "70000", "group",
            "239.2.17.112", "dev", "eth0", "dstport", "4789"] in found


@pytest.mark.parametrize("kind, attrs, message", [
    ("802.1Q", {}, "names no PHYDEV"),
    ("802.1Q", {"PHYDEV": "eth1", "VLAN_ID": "4095"}, "not an id from 1 to 4094"),
    ("802.1Q", {"PHYDEV": "eth1", "VLAN_ID": "1; reboot"}, "not an id"),
    ("802.1Q", {"PHYDEV": "averylongdevice", "VLAN_ID": "12"}, "cannot be a device name"),
    ("vxlan", {"PHYDEV": "eth0", "VXLAN_MC": "10.0.0.0"}, "not a multicast group"),
    ("vxlan", {"PHYDEV": "eth0", "VXLAN_MC": "nonsense"}, "not a multicast group"),
])
def test_vlan_settings_that_cannot_work_are_refused(kind: str, attrs: dict[str, str],
                                                    message: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        vlan_devices.commands([vlan_nic(**attrs)], kind, lambda device: False)
    assert message in capsys.readouterr().err
