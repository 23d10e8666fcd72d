"""MAC anti-spoofing with ebtables, as OpenNebula 3.4 did it, for the `ebtables` network
driver (vnm/ebtables/{post,clean}) and the seed's hooks (hooks/ebtables-kvm, -flush).

For a VM NIC whose tap is <tap> and MAC is <mac>, two rules of the bridge FORWARD chain:

    -s ! <first five octets of mac>:00/ff:ff:ff:ff:ff:00 -o <tap> -j DROP
        frames into the VM only from its own network: OpenNebula's MACs carry the IPv4
        address (02:00:a:b:c:d), so the first five octets are a /24
    -s ! <mac> -i <tap> -j DROP
        frames out of the VM only with its own MAC

Filtering on MACs, not addresses, is what makes a guest that changes its IP or netmask
no closer to another network. ebtables runs as root, else through `sudo -n` (the seed's
sudoers line: `oneadmin ALL=(ALL) NOPASSWD: /sbin/ebtables *`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from host_command import run


def ebtables(*args: str) -> str:
    return str(run(["ebtables", *args]).stdout)


def listed() -> list[tuple[int, list[str]]]:
    """The FORWARD chain's rules: (number, words) as `ebtables -L FORWARD --Ln` prints them."""
    rules = []
    for line in ebtables("-L", "FORWARD", "--Ln").splitlines():
        number, _, rule = line.strip().partition(" ")
        if number.isdigit():
            rules.append((int(number), rule.split()))
    return rules


def anti_spoofing(tap: str, mac: str) -> list[list[str]]:
    mac = mac.lower()
    network = ":".join(mac.split(":")[:5]) + ":00"
    return [["-s", "!", f"{network}/ff:ff:ff:ff:ff:00", "-o", tap, "-j", "DROP"],
            ["-s", "!", mac, "-i", tap, "-j", "DROP"]]


def add(rules: Iterable[list[str]]) -> int:
    """Append the rules not there yet; how many were added."""
    present = {" ".join(rule) for _, rule in listed()}
    added = 0
    for rule in rules:
        if " ".join(rule) not in present:
            ebtables("-A", "FORWARD", *rule)
            present.add(" ".join(rule))
            added += 1
    return added


def interface(rule: list[str]) -> str:
    """The interface a rule names (-i or -o), "" if none."""
    for option, value in zip(rule, rule[1:], strict=False):
        if option in ("-i", "-o"):
            return value
    return ""


def remove(wanted: Iterable[str] = (), *, gone: bool = False) -> int:
    """Delete the rules naming one of the interfaces `wanted`, or (gone) any VM tap
    (`one-...`) that no longer exists on the host; how many."""
    names = set(wanted)
    doomed = []
    for number, rule in listed():
        name = interface(rule)
        if name in names or (gone and name.startswith("one-")
                             and not os.path.exists(f"/sys/class/net/{name}")):
            doomed.append(number)
    for number in sorted(doomed, reverse=True):  # from the end: numbers stay valid
        ebtables("-D", "FORWARD", str(number))
    return len(doomed)
