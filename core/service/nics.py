"""A VM's network interfaces after creation: attached and detached while the VM is not on
a host (PENDING or HOLD, or STOPPED: its network is set up again when it resumes). A
running VM keeps its NICs: no hypervisor driver plugs NICs yet (OpenNebula 4.0's
attach_nic); it answers InvalidState."""

from __future__ import annotations

from sqlmodel import Session

from core import template
from core.errors import InvalidState, NotFound
from core.lifecycle import VmState, state_name
from core.models import VM
from core.service import leases
from core.service.access import fetch
from core.service.context import Caller, Cloud, vm_log

OFF_HOST = (VmState.PENDING, VmState.HOLD, VmState.STOPPED)


def _vm(s: Session, caller: Caller, vm_id: int, verb: str) -> VM:
    vm = fetch(s, VM, vm_id, caller, "VM", lock=True)
    if vm.state not in OFF_HOST:
        raise InvalidState(state_name(vm.state, vm.lcm_state), f"{verb} a NIC (stop it first)")
    return vm


def attach_nic(cloud: Cloud, caller: Caller, *, vm_id: int, network_id: int,
               ip: str = "") -> int:
    """A new NIC on a network; returns its NIC_ID."""
    with cloud.session() as s:
        vm = _vm(s, caller, vm_id, "attach")
        tmpl = template.parse(vm.template)
        used = [int(n["NIC_ID"]) for n in tmpl.vectors("NIC") if n.get("NIC_ID", "").isdigit()]
        nic_id = max(used, default=-1) + 1
        nic = {"NETWORK_ID": str(network_id)} | ({"IP": ip} if ip else {})
        leases.lease_nic(s, caller, nic, vm_id, nic_id)
        tmpl.add("NIC", nic)
        vm.template = tmpl.dumps()
        s.add(vm)
        vm_log(s, vm_id, f"NIC {nic_id} attached: {nic['IP']} on network {nic['NETWORK']}")
        return nic_id


def detach_nic(cloud: Cloud, caller: Caller, *, vm_id: int, nic_id: int) -> None:
    with cloud.session() as s:
        vm = _vm(s, caller, vm_id, "detach")
        tmpl = template.parse(vm.template)
        nic = next((n for n in tmpl.vectors("NIC") if n.get("NIC_ID") == str(nic_id)), None)
        if nic is None:
            raise NotFound("NIC", f"{nic_id} of VM {vm_id}")
        leases.release_lease(s, vm_id, nic)
        tmpl.attrs = [(k, v) for k, v in tmpl.attrs if v is not nic]
        vm.template = tmpl.dumps()
        s.add(vm)
        vm_log(s, vm_id, f"NIC {nic_id} detached: {nic.get('IP', '')} back to network "
               f"{nic.get('NETWORK', '')}")
