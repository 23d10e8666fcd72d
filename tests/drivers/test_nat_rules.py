"""Elastic IPs on the host (drivers/remotes/lib/nat_rules.py) and the routed jumps that
fw_rules adds for them, on their own: which chains, jumps and host addresses a NIC with
PUBLIC_IP gets, how update_sg and clean go from what is installed to what the document
says, and bad values refused. The rules themselves carry traffic in
tests/e2e/test_elastic_ips.py."""

from __future__ import annotations

import sys

import pytest

from tests.drivers.conftest import REMOTES

sys.path.insert(0, str(REMOTES / "lib"))
import fw_rules  # noqa: E402
import nat_rules  # noqa: E402
import vnm_common  # noqa: E402


def nic(public: str = "203.0.113.5", grouped: bool = False, **attrs: str) -> vnm_common.Nic:
    found = {"PUBLIC_IP": public, **attrs} if public else dict(attrs)
    return vnm_common.Nic("0", "one-7-0", "02:00:0a:00:01:05", "10.0.1.5", "3", "br0", found,
                          grouped, ())


# what `iptables -t nat -S` lists once VM 7's NIC 0 is mapped (and VM 8 maps .9)
LISTING = """-P PREROUTING ACCEPT
-N one-7-0-dnat
-N one-7-0-snat
-N one-8-0-dnat
-A PREROUTING -d 203.0.113.9/32 -j one-8-0-dnat
-A PREROUTING -d 203.0.113.5/32 -j one-7-0-dnat
-A OUTPUT -d 203.0.113.5/32 -j one-7-0-dnat
-A POSTROUTING -s 10.0.1.5/32 -j one-7-0-snat
-A one-7-0-dnat -d 203.0.113.5/32 -j DNAT --to-destination 10.0.1.5
-A one-7-0-snat -s 10.0.1.5/32 ! -o br0 -j SNAT --to-source 203.0.113.5
-A one-8-0-dnat -d 203.0.113.9/32 -j DNAT --to-destination 10.0.2.5
"""


def test_a_public_address_gets_a_dnat_and_an_snat_chain() -> None:
    m = nat_rules.mapping(nic())
    assert m == nat_rules.Mapping("0", "203.0.113.5", "10.0.1.5", "br0")
    assert nat_rules.chain_rules("7", m) == {
        "one-7-0-dnat": ["-d", "203.0.113.5/32", "-j", "DNAT", "--to-destination", "10.0.1.5"],
        "one-7-0-snat": ["-s", "10.0.1.5/32", "!", "-o", "br0", "-j", "SNAT",
                         "--to-source", "203.0.113.5"]}
    assert nat_rules.jumps("7", m) == [
        ["PREROUTING", "-d", "203.0.113.5/32", "-j", "one-7-0-dnat"],
        ["OUTPUT", "-d", "203.0.113.5/32", "-j", "one-7-0-dnat"],
        ["POSTROUTING", "-s", "10.0.1.5/32", "-j", "one-7-0-snat"]]
    assert nat_rules.mapping(nic(public="")) is None


def test_what_is_installed_is_read_back_from_the_listing() -> None:
    found = nat_rules.installed("7", LISTING)
    assert found.chains == {"one-7-0-dnat", "one-7-0-snat"}
    assert found.publics == {"one-7-0-dnat": "203.0.113.5"}
    assert found.elsewhere == {"203.0.113.9"}
    assert found.jumps == [j for j in nat_rules.jumps("7", nat_rules.mapping(nic()))]
    assert nat_rules.installed("70", LISTING).chains == set()  # not VM 7's prefix


def test_one_transaction_from_what_is_installed_to_what_is_wanted() -> None:
    m = nat_rules.mapping(nic())
    assert m is not None
    fresh = nat_rules.restore_text("7", [m], nat_rules.installed("7", ""))
    assert fresh.splitlines() == [
        "*nat", ":one-7-0-dnat - [0:0]", ":one-7-0-snat - [0:0]",
        "-A one-7-0-dnat -d 203.0.113.5/32 -j DNAT --to-destination 10.0.1.5",
        "-A one-7-0-snat -s 10.0.1.5/32 ! -o br0 -j SNAT --to-source 203.0.113.5",
        "-I PREROUTING -d 203.0.113.5/32 -j one-7-0-dnat",
        "-I OUTPUT -d 203.0.113.5/32 -j one-7-0-dnat",
        "-I POSTROUTING -s 10.0.1.5/32 -j one-7-0-snat", "COMMIT"]
    now = nat_rules.installed("7", LISTING)
    again = nat_rules.restore_text("7", [m], now)  # installed: chains rewritten, no new jump
    assert "-I" not in again and "-D" not in again and ":one-7-0-dnat - [0:0]" in again
    moved = nat_rules.mapping(nic(public="203.0.113.6"))
    assert moved is not None
    lines = nat_rules.restore_text("7", [moved], now).splitlines()
    assert "-D PREROUTING -d 203.0.113.5/32 -j one-7-0-dnat" in lines
    assert "-I PREROUTING -d 203.0.113.6/32 -j one-7-0-dnat" in lines
    assert "-D POSTROUTING -s 10.0.1.5/32 -j one-7-0-snat" not in lines  # unchanged
    gone = nat_rules.restore_text("7", [], now).splitlines()
    assert gone == ["*nat", "-D PREROUTING -d 203.0.113.5/32 -j one-7-0-dnat",
                    "-D OUTPUT -d 203.0.113.5/32 -j one-7-0-dnat",
                    "-D POSTROUTING -s 10.0.1.5/32 -j one-7-0-snat",
                    ":one-7-0-dnat - [0:0]", ":one-7-0-snat - [0:0]",
                    "-X one-7-0-dnat", "-X one-7-0-snat", "COMMIT"]
    assert nat_rules.restore_text("7", [], nat_rules.installed("7", "")) == ""


class Host:
    """nat_rules' view of a host, faked: the nat listing, the addresses on lo, and every
    command it ran."""

    def __init__(self, listing: str, held: set[str]) -> None:
        self.listing, self.held, self.ran, self.restored = listing, held, [], []

    def run(self, argv: list[str], **_: object) -> object:
        self.ran.append(list(argv))
        out = self.listing if argv[:4] == ["iptables", "-w", "-t", "nat"] else ""
        return type("Done", (), {"stdout": out, "returncode": 0})()


@pytest.fixture
def host(monkeypatch: pytest.MonkeyPatch) -> Host:
    fake = Host(LISTING, {"127.0.0.1", "203.0.113.5", "203.0.113.9"})
    monkeypatch.setattr(nat_rules, "run", fake.run)
    monkeypatch.setattr(nat_rules, "_held", lambda: fake.held)
    monkeypatch.setattr(nat_rules, "_forwarding", lambda: fake.ran.append(["forwarding"]))
    monkeypatch.setattr(fw_rules, "restore", fake.restored.append)
    return fake


def test_an_address_moved_leaves_lo_and_the_new_one_comes(host: Host) -> None:
    assert nat_rules.apply("7", [nic(public="203.0.113.6")]) == 1
    addr = [argv for argv in host.ran if argv[0] == "ip"]
    assert addr == [["ip", "addr", "del", "203.0.113.5/32", "dev", "lo"],
                    ["ip", "addr", "add", "203.0.113.6/32", "dev", "lo"]]
    assert ["forwarding"] in host.ran and len(host.restored) == 1


def test_update_sg_first_takes_away_only_what_the_document_lost(host: Host) -> None:
    nat_rules.apply("7", [nic(public="203.0.113.6")], add=False)  # moved: the old goes
    assert [a for a in host.ran if a[0] == "ip"] == [
        ["ip", "addr", "del", "203.0.113.5/32", "dev", "lo"]]
    assert "-I" not in host.restored[0] and "-D PREROUTING" in host.restored[0]
    host.ran.clear()
    host.restored.clear()
    nat_rules.apply("7", [nic()], add=False)  # the same mapping: kept as it is
    assert [a for a in host.ran if a[0] == "ip"] == [] and "-X" not in host.restored[0]


def test_clean_removes_what_is_installed_whatever_the_document_says(host: Host) -> None:
    assert nat_rules.remove("7") == 1
    assert [a for a in host.ran if a[0] == "ip"] == [
        ["ip", "addr", "del", "203.0.113.5/32", "dev", "lo"]]
    assert "-X one-7-0-dnat" in host.restored[0] and "one-8" not in host.restored[0]
    assert ["forwarding"] not in host.ran


def test_an_address_another_vm_still_maps_stays_on_lo(host: Host) -> None:
    """Moved between two VMs of one host: the new VM's post may run before the old
    one's update_sg."""
    host.listing = LISTING.replace("203.0.113.9", "203.0.113.5")
    nat_rules.remove("7")
    assert [a for a in host.ran if a[0] == "ip"] == []


@pytest.mark.parametrize("attrs, message", [
    ({"PUBLIC_IP": "203.0.113.5; reboot"}, "PUBLIC_IP = '203.0.113.5; reboot' is not an IPv4"),
    ({"PUBLIC_IP": "2001:db8::1"}, "is not an IPv4 address"),
])
def test_bad_values_are_refused(attrs: dict[str, str], message: str,
                                capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        nat_rules.mapping(vnm_common.Nic("0", "one-7-0", "", "10.0.1.5", "3", "br0", attrs))
    assert message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        nat_rules.mapping(vnm_common.Nic("0", "one-7-0", "", "", "3", "br0", {
            "PUBLIC_IP": "203.0.113.5"}))
    assert "no IP to map it to" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        nat_rules.mapping(vnm_common.Nic("0", "one-7-0", "", "10.0.1.5", "3", "br0 -j ACCEPT",
                                         {"PUBLIC_IP": "203.0.113.5"}))
    assert "cannot be a device name" in capsys.readouterr().err


def test_a_nic_is_filtered_on_routed_traffic_too() -> None:
    jumps = [j for j, _ in fw_rules.wanted("7", [nic(grouped=True, ICMP="drop")])]
    assert jumps == [
        ["FORWARD", "-m", "physdev", "--physdev-is-bridged", "--physdev-out", "one-7-0",
         "-j", "one-7-3"],
        ["FORWARD", "-d", "10.0.1.5/32", "-o", "br0", "-m", "physdev", "!",
         "--physdev-is-bridged", "-j", "one-7-3"],
        ["FORWARD", "-m", "physdev", "--physdev-is-bridged", "--physdev-in", "one-7-0",
         "-j", "one-7-0-o"],
        ["FORWARD", "-m", "physdev", "--physdev-in", "one-7-0", "!", "--physdev-is-bridged",
         "-j", "one-7-0-o"],
        ["FORWARD", "-m", "physdev", "--physdev-is-bridged", "--physdev-out", "one-7-0",
         "-j", "one-7-0-i"],
        ["FORWARD", "-d", "10.0.1.5/32", "-o", "br0", "-m", "physdev", "!",
         "--physdev-is-bridged", "-j", "one-7-0-i"]]
    # with or without PUBLIC_IP: the host may route to the NIC's network (its GATEWAY)
    assert len(fw_rules.wanted("7", [nic(public="", grouped=True)])) == 4
    bare = vnm_common.Nic("0", "one-7-0", "", "", "3", "br0", {}, True, ())
    assert fw_rules.routed_jump("7", bare, "one-7-0-i") is None  # no address, no route


def test_routed_jumps_stay_with_their_chains(monkeypatch: pytest.MonkeyPatch) -> None:
    """update_sg after a disassociation: the document no longer has PUBLIC_IP, the group
    chains and both their jumps stay; a chain no longer needed goes with both jumps."""
    calls: list[list[str]] = []

    def iptables(*args: str, check: bool = True) -> bool:
        calls.append(list(args))
        return args[0] == "-D" and calls.count(list(args)) == 1  # each jump was there once

    monkeypatch.setattr(fw_rules, "iptables", iptables)
    monkeypatch.setattr(fw_rules, "restore", lambda text: None)
    monkeypatch.setattr(fw_rules, "ip6tables", lambda *args, check=True: False)  # IPv6 aside
    monkeypatch.setattr(fw_rules, "restore6", lambda text: None)
    assert fw_rules.apply("7", [nic(public="", grouped=True)]) == 2
    deleted = [c[1:] for c in calls if c[0] == "-D"]
    assert fw_rules.routed_jump("7", nic(), "one-7-0-i") not in deleted  # kept
    assert fw_rules.group_jump("7", nic(), "inbound") not in deleted
    assert fw_rules.routed_jump("7", nic(), "one-7-3") in deleted  # no port filters
    assert fw_rules.jump("7", nic()) in deleted
    assert not any(c[0] in ("-F", "-X") and c[1] != "one-7-3" for c in calls)
