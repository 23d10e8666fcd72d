"""Moving a running VM to another host (`onevm migrate`, one.vm.migrate).

Cold: the VM is saved on its host (SAVE_MIGRATE), its directory moves to the target
through the transfer manager's `mv` (PROLOG_MIGRATE), and it is restored there (BOOT).
Live: the target receives the running guest from the source (MIGRATE) and the VM never
stops. Live migration moves memory only, so the VM's directory must be the same files on
both hosts: a system datastore on shared storage, at the same location on both.

While it moves, the VM holds capacity on both hosts; core.service.transitions releases
the one it no longer uses when the step ends.
"""

from __future__ import annotations

from core import bursting, lifecycle
from core.errors import Forbidden, InvalidRequest, InvalidState, NotFound
from core.lifecycle import Event, HistoryReason, HostState, LcmState, VmState
from core.models import SYSTEM_DATASTORE_ID, VM, Datastore, History, Host
from core.service.context import DISPATCHER, Caller, Cloud, vm_log
from core.service.transitions import apply, last_history, reserve
from core.service.vms import ds_location_for

# transfer managers whose system datastore every host sees as the same files
SHARED_TMS = frozenset({"shared", "qcow2", "dummy"})


def migrate(cloud: Cloud, caller: Caller, *, vm_id: int, host_id: int, live: bool = False,
            enforce: bool = False) -> None:
    """Move a RUNNING VM to `host_id` (oneadmin only). With `enforce`, the target must
    have room for it, as OpenNebula 4's flag; by default, as in 3.4, an operator may
    overcommit a host on purpose."""
    if not caller.admin:
        raise Forbidden("only members of group oneadmin may migrate VMs")
    action = "live-migrate" if live else "migrate"
    with cloud.session() as s:
        vm = s.get(VM, vm_id, with_for_update=True)
        if vm is None:
            raise NotFound("VM", vm_id)
        target = s.get(Host, host_id)
        if target is None:
            raise NotFound("host", host_id)
        if vm.state != VmState.ACTIVE or vm.lcm_state != LcmState.RUNNING:
            raise InvalidState(lifecycle.state_name(vm.state, vm.lcm_state), action)
        source = last_history(s, vm_id)
        assert source is not None and vm.id is not None and target.id is not None
        if target.id == source.host_id:
            raise InvalidRequest(f"VM {vm_id} already runs on host {target.name}")
        if target.state in (HostState.DISABLED, HostState.ERROR):
            raise InvalidRequest(f"host {target.name} is "
                                 f"{HostState(target.state).name.lower()}: it takes no VMs")
        source_host = s.get(Host, source.host_id)
        for host in (source_host, target):
            if host is not None and bursting.public_host(host):
                raise InvalidRequest(f"host {host.name} is a public cloud: its instances "
                                     "cannot migrate (shut the VM down and create it again)")
        if target.vmm_mad != source.vmm_mad:
            raise InvalidRequest(f"host {target.name} runs VMs with {target.vmm_mad}, not "
                                 f"{source.vmm_mad}: a VM cannot move between hypervisors")
        if enforce:
            _check_room(vm, target)
        system = s.get(Datastore, SYSTEM_DATASTORE_ID)
        tm_mad = system.tm_mad if system else "dummy"
        location = ds_location_for(cloud, target)
        if live and (tm_mad not in SHARED_TMS or location != source.ds_location):
            raise InvalidRequest(
                "a live migration moves memory only: the VM's directory must be on shared "
                f"storage (system datastore TM_MAD shared or qcow2, not {tm_mad}) at the same "
                f"DATASTORE_LOCATION on both hosts ({source.ds_location} on "
                f"{source.hostname}, {location} on {target.name}); use a cold migration")
        source.reason = HistoryReason.USER
        s.add(source)
        s.add(History(vm_id=vm.id, seq=source.seq + 1, host_id=target.id,
                      hostname=target.name, vmm_mad=target.vmm_mad, vnm_mad=target.vnm_mad,
                      tm_mad=tm_mad, ds_location=location))
        reserve(s, vm, target.id, 1)
        vm.host_id = target.id
        s.flush()
        vm_log(s, vm_id, f"User {caller.name} asked for {action} from {source.hostname} to "
               f"{target.name} (history seq {source.seq + 1})")
        apply(s, vm, Event.LIVE_MIGRATE if live else Event.MIGRATE)
    cloud.wakeups.notify(DISPATCHER)


def _check_room(vm: VM, host: Host) -> None:
    cpu, memory = round(vm.cpu * 100), vm.memory * 1024
    if host.cpu_usage + cpu > host.max_cpu or host.mem_usage + memory > host.max_mem:
        raise InvalidRequest(
            f"host {host.name} has no room for VM {vm.id} (CPU {host.cpu_usage}+{cpu} of "
            f"{host.max_cpu}, memory {host.mem_usage}+{memory} of {host.max_mem} KB)")
