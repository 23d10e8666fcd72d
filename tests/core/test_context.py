"""core.context: OpenNebula's $VARIABLES in CONTEXT values."""

from __future__ import annotations

from core import context, template

VM = template.parse('''
NAME = "web"
MEMORY = "512"
NIC = [ NETWORK = "private", IP = "10.0.0.7", MAC = "02:00:0a:00:00:07" ]
NIC = [ NETWORK = "public", IP = "192.0.2.9" ]
DISK = [ IMAGE = "debian", TARGET = "vda" ]
CONTEXT = [
  HOSTNAME = "$NAME-$VMID",
  ETH0_IP = "$NIC[IP]",
  ETH1_IP = "$NIC[IP, NETWORK=\\"public\\"]",
  ETH1_MAC = "$NIC[ MAC , NETWORK = \\"private\\" ]",
  ROOT = "$DISK[TARGET]",
  RAM = "${MEMORY}",
  NOTHING = "[$GATEWAY][$NIC[GATEWAY]][$NIC[IP, NETWORK=\\"dmz\\"]]",
  PRICE = "5 $ a day, $5",
  SSH_PUBLIC_KEY = "ssh-ed25519 AAAA user@host" ]
''')


def test_variables_are_replaced() -> None:
    resolved = context.resolve(VM, 42)
    assert resolved is not None
    assert resolved["HOSTNAME"] == "web-42"
    assert resolved["ETH0_IP"] == "10.0.0.7"  # the first NIC
    assert resolved["ETH1_IP"] == "192.0.2.9"  # the NIC on that network
    assert resolved["ETH1_MAC"] == "02:00:0a:00:00:07"
    assert resolved["ROOT"] == "vda"
    assert resolved["SSH_PUBLIC_KEY"] == "ssh-ed25519 AAAA user@host"


def test_what_names_nothing_is_empty_and_lone_dollars_stay() -> None:
    resolved = context.resolve(VM, 42)
    assert resolved is not None
    assert resolved["NOTHING"] == "[][][]"
    assert resolved["PRICE"] == "5 $ a day, $5"
    assert resolved["RAM"] == "${MEMORY}"  # not OpenNebula's syntax: left alone


def test_no_context() -> None:
    assert context.resolve(template.parse('NAME = "bare"\n'), 1) is None
