"""Security groups filter IPv6: the `fw` network driver's ip6tables chains
(drivers/remotes/lib/fw_rules.py) on one lab host, checked with real IPv6 traffic.

Lab host h1 has a Linux bridge with two veth endpoints (ep-a fd00:221::99, ep-b
fd00:221::98, each with an IPv4 address too) and a stand-in for a VM: a veth whose
host-side name is the tap the qemu driver would give NIC 0 of VM 900 (`one-900-0`), with
fd00:221::2 and 10.221.0.2 in its namespace and a tiny web server on port 8080. The
driver's `post`, `update_sg` and `clean` run by hand in the host's namespace with a
written VM document in a group (as test_elastic_ips.py does for SNAT): tcp/8080 is
allowed over IPv6 from ep-a only and over IPv4 from ep-b only, so each family obeys its
own rules; ICMPv6 echo is dropped until an ICMPV6 rule allows it; neighbour discovery
passes though the stand-in may send nothing else on its own; clean leaves neither
family's chains nor jumps.

The daemon is not involved: Nubo's networks give a guest no IPv6 configuration, so a
real guest would never speak IPv6 in a test. Everything is read inside the lab's
namespaces (curl, ping, `ip -6 neigh`, `ip6tables -S`), never from Nubo."""

from __future__ import annotations

import base64
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from drivers.lab import Lab
from tests.e2e.labcloud import make_lab, run
from tests.live import wait_until
from tests.strict import missing

pytestmark = pytest.mark.slow
BRIDGE, PORT, VM = "br-v6", 8080, "900"
ENDPOINTS = {"ep-a": ("fd00:221::99", "10.221.0.99"), "ep-b": ("fd00:221::98", "10.221.0.98")}
STAND_IN, STAND_IN_IP6, STAND_IN_IP = f"one-{VM}-0", "fd00:221::2", "10.221.0.2"
FW = Path(__file__).resolve().parents[2] / "drivers" / "remotes" / "vnm" / "fw"


def plug(lab: Lab, name: str, ip6: str, ip: str) -> str:
    """Namespace `<prefix>-<name>` (removed with the lab) whose eth0 has `ip6`/64 (no
    duplicate address detection, usable at once) and `ip`/24; its peer `name` is a port
    of the bridge on h1. Returns the namespace."""
    host, ns = lab.host("h1").netns, f"{lab.prefix}-{name}"
    run("ip", "netns", "add", ns)
    lab.namespaces.append(ns)
    run("ip", "-n", host, "link", "add", name, "type", "veth", "peer", "name", "eth0",
        "netns", ns)
    run("ip", "-n", host, "link", "set", name, "master", BRIDGE, "up")
    run("ip", "-n", ns, "link", "set", "eth0", "up")
    run("ip", "-n", ns, "addr", "add", f"{ip6}/64", "dev", "eth0", "nodad")
    run("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0")
    return ns


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    made = make_lab(tmp_path_factory.mktemp("v6-lab"), "v6", 1)
    server: subprocess.Popen[bytes] | None = None
    try:
        host = made.host("h1").netns
        for tool in ("ip6tables", "ip6tables-restore"):
            if run("ip", "netns", "exec", host, tool, "--version", check=False).returncode:
                missing(f"{tool} (package iptables)")
        call = run("ip", "netns", "exec", host, "sysctl", "-n",
                   "net.bridge.bridge-nf-call-ip6tables", check=False).stdout.strip()
        if call != "1":
            missing(f"bridged IPv6 through ip6tables (bridge-nf-call-ip6tables = {call!r})")
        run("ip", "-n", host, "link", "add", BRIDGE, "type", "bridge")
        run("ip", "-n", host, "link", "set", BRIDGE, "up")
        for name, (ip6, ip) in ENDPOINTS.items():
            plug(made, name, ip6, ip)
        stand_in = plug(made, STAND_IN, STAND_IN_IP6, STAND_IN_IP)
        site = tmp_path_factory.mktemp("v6-site")
        (site / "index.html").write_text("hello from the stand-in\n")
        server = subprocess.Popen(  # noqa: S603
            ["ip", "netns", "exec", stand_in, sys.executable, "-m", "http.server", "--bind",
             "::", "--directory", str(site), str(PORT)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until("the stand-in's web server", lambda: web(made, "ep-a", STAND_IN_IP6) != "", 20)
        yield made
    finally:
        if server is not None:
            server.terminate()
            server.wait(10)
        made.destroy()


def at(lab: Lab, name: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return run("ip", "netns", "exec", f"{lab.prefix}-{name}", *argv, check=False)


def web(lab: Lab, name: str, address: str) -> str:
    """What the stand-in's port 8080 answers endpoint `name` at `address` ("" for
    nothing)."""
    url = f"http://[{address}]:{PORT}/" if ":" in address else f"http://{address}:{PORT}/"
    return at(lab, name, "curl", "-s", "-g", "--max-time", "3", url).stdout.strip()


def ping(lab: Lab, name: str, address: str) -> bool:
    return at(lab, name, "ping", "-c", "1", "-W", "2", address).returncode == 0


def listing(lab: Lab, tool: str) -> list[str]:
    """`tool -S` in h1 (iptables or ip6tables), the lines of the VM's chains and jumps."""
    out = run("ip", "netns", "exec", lab.host("h1").netns, tool, "-S").stdout
    return [line for line in out.splitlines() if "one-" in line]


def rule(direction: str, protocol: str, network: str, **more: str) -> str:
    fields = {"RULE_TYPE": direction, "PROTOCOL": protocol, **more, "NETWORK": network}
    return ("<SECURITY_GROUP_RULE>" + "".join(f"<{k}>{v}</{k}>" for k, v in fields.items())
            + "</SECURITY_GROUP_RULE>")


def driver(lab: Lab, action: str, *rules: str) -> None:
    """The fw driver's `action` run by hand in h1 for VM 900 in group 1 with `rules`;
    its NIC 0 (tap `one-900-0`) is the stand-in."""
    nic = (f"<NIC><NIC_ID>0</NIC_ID><IP>{STAND_IN_IP}</IP><BRIDGE>{BRIDGE}</BRIDGE>"
           "<NETWORK_ID>1</NETWORK_ID></NIC>")
    doc = (f"<VM><ID>{VM}</ID><TEMPLATE><SECURITY_GROUPS>1</SECURITY_GROUPS>{nic}"
           + "".join(rules) + "</TEMPLATE></VM>")
    run("ip", "netns", "exec", lab.host("h1").netns, sys.executable, str(FW / action),
        base64.b64encode(doc.encode()).decode(), f"one-{VM}")


def resolved(lab: Lab, name: str) -> bool:
    """Whether endpoint `name` has found the stand-in's link-layer address (neighbour
    discovery answered)."""
    return "lladdr" in at(lab, name, "ip", "-6", "neigh", "show", STAND_IN_IP6).stdout


WEB = ("TCP", {"RANGE": f"{PORT}:{PORT}"})


def test_ipv6_obeys_the_groups_ipv6_rules(lab: Lab) -> None:
    a6, a4 = ENDPOINTS["ep-a"]
    b6, b4 = ENDPOINTS["ep-b"]
    # unfiltered before the driver: both endpoints, both families
    assert "hello" in web(lab, "ep-b", STAND_IN_IP6) and ping(lab, "ep-b", STAND_IN_IP6)
    assert "hello" in web(lab, "ep-a", STAND_IN_IP)

    rules = (rule("inbound", WEB[0], f"{a6}/128", **WEB[1]),
             rule("inbound", WEB[0], f"{b4}/32", **WEB[1]))
    try:
        driver(lab, "post", *rules)
        v6 = listing(lab, "ip6tables")
        assert f"-A one-{VM}-0-i -s {a6}/128 -p tcp -m tcp --dport {PORT} -j RETURN" in v6, v6
        assert f"-A one-{VM}-0-i -j DROP" in v6 and f"-A one-{VM}-0-o -j DROP" in v6
        assert len([line for line in v6 if line.startswith("-A FORWARD")]) == 2, v6
        assert not any(b4 in line for line in v6)  # IPv4 rules stay in iptables
        v4 = listing(lab, "iptables")
        assert not any(a6 in line for line in v4) and any(b4 in line for line in v4), v4

        # each family its own rules: ep-a over IPv6 only, ep-b over IPv4 only
        for name in ENDPOINTS:
            at(lab, name, "ip", "-6", "neigh", "flush", "dev", "eth0")
        at(lab, STAND_IN, "ip", "-6", "neigh", "flush", "dev", "eth0")
        assert "hello" in web(lab, "ep-a", STAND_IN_IP6)
        assert web(lab, "ep-b", STAND_IN_IP6) == ""
        assert "hello" in web(lab, "ep-b", STAND_IN_IP)
        assert web(lab, "ep-a", STAND_IN_IP) == ""
        # the stand-in may send nothing of its own, yet its neighbour advertisements pass:
        # ep-b, refused, still found it
        assert resolved(lab, "ep-b") and resolved(lab, "ep-a")
        # no ICMP rule in either family: echo dropped
        assert not ping(lab, "ep-a", STAND_IN_IP6) and not ping(lab, "ep-b", STAND_IN_IP6)
        assert not ping(lab, "ep-a", STAND_IN_IP)

        # a running VM's rules change (update_sg): ICMPv6 echo from ep-b now
        echo = rule("inbound", "ICMPV6", f"{b6}/128", ICMP_TYPE="128")
        driver(lab, "update_sg", *rules, echo)
        assert ping(lab, "ep-b", STAND_IN_IP6) and not ping(lab, "ep-a", STAND_IN_IP6)
        assert not ping(lab, "ep-b", STAND_IN_IP)  # ICMPV6 is not ICMP
        assert "hello" in web(lab, "ep-a", STAND_IN_IP6)  # the rest as it was
        assert len([line for line in listing(lab, "ip6tables")
                    if line.startswith("-A FORWARD")]) == 2  # replaced, not doubled
        driver(lab, "update_sg", *rules)
        assert not ping(lab, "ep-b", STAND_IN_IP6)
    finally:
        driver(lab, "clean")
    assert listing(lab, "ip6tables") == [] and listing(lab, "iptables") == []
    assert "hello" in web(lab, "ep-b", STAND_IN_IP6) and ping(lab, "ep-a", STAND_IN_IP6)
