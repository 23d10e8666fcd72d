"""The driver work of disk steps (see core.service.disks): which TM and VMM actions run.

On a running VM the disk file lives on the host and the hypervisor plugs or unplugs it;
on a stopped VM the files wait on the front-end and only the TM runs there.

VMM actions (arguments before the appended `<vmid> <host>`, the VM document on stdin):
  attach_disk <deploy_id> <disk path> <target> <disk id>
  detach_disk <deploy_id> <disk path> <target> <disk id>
Both must be idempotent: after a crash of the daemon the step runs again.
TM action cpds `<location>:<disk path> <new image source>` copies a disk into a datastore.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.lifecycle import Step, VmState
from core.transfers import disk_file

if TYPE_CHECKING:
    from core.dispatcher import Dispatcher, Job, LogSink

Outcome = tuple[bool, str, None]


async def run(d: Dispatcher, job: Job, sink: LogSink) -> Outcome:
    flag = {Step.ATTACH: "ATTACH", Step.DETACH: "DETACH", Step.SAVE_DISK: "SAVE_AS"}[job.step]
    position = next((i for i, disk in enumerate(job.disks) if disk.get(flag)), None)
    if position is None:
        return False, f"no disk of the VM is marked {flag}", None
    stopped = job.vm.state == VmState.STOPPED
    where = d.frontend if stopped else job.hostname
    if job.step is Step.ATTACH:
        return await _attach(d, job, sink, position, where, stopped)
    if job.step is Step.DETACH:
        return await _detach(d, job, sink, position, where, stopped)
    disk = job.disks[position]
    return await d.tm_lines(job, sink, [("cpds", job.disk_tm.get(position, job.system_tm),
                                         [f"{where}:{disk_file(job, position)}",
                                          disk["SAVE_AS_SOURCE"]])])


async def _attach(d: Dispatcher, job: Job, sink: LogSink, position: int, where: str,
                  stopped: bool) -> Outcome:
    disk = job.disks[position]
    path = disk_file(job, position)
    action = "ln" if disk.get("CLONE", "YES").upper() == "NO" else "clone"
    tm_mad = job.disk_tm.get(position, job.system_tm)
    args = [d.fe(disk.get("SOURCE", "")), f"{where}:{path}"]
    ok, error, _ = await d.tm_lines(job, sink, [(action, tm_mad, args)])
    if not ok or stopped:
        return ok, error, None
    ok, error = await _vmm(d, job, sink, "attach_disk", position)
    if not ok:  # do not leave the copy behind
        await d.tm_lines(job, sink, [("delete", tm_mad, [f"{where}:{path}"])])
    return ok, error, None


async def _detach(d: Dispatcher, job: Job, sink: LogSink, position: int, where: str,
                  stopped: bool) -> Outcome:
    disk = job.disks[position]
    if not stopped:
        ok, error = await _vmm(d, job, sink, "detach_disk", position)
        if not ok:
            return False, error, None
    tm_mad = job.disk_tm.get(position, job.system_tm)
    located = f"{where}:{disk_file(job, position)}"
    lines = []
    if disk.get("SAVE", "NO").upper() == "YES" and disk.get("SOURCE"):
        lines.append(("mvds", tm_mad, [located, disk["SOURCE"]]))
    lines.append(("delete", tm_mad, [located]))
    return await d.tm_lines(job, sink, lines)


async def _vmm(d: Dispatcher, job: Job, sink: LogSink, action: str,
               position: int) -> tuple[bool, str]:
    assert job.history is not None
    disk = job.disks[position]
    host, vmid = job.hostname, str(job.vm.id)
    args = [job.vm.deploy_id or f"one-{vmid}", disk_file(job, position), disk.get("TARGET", ""),
            disk.get("DISK_ID", str(position)), vmid, host]
    result = await d.host_runner(job).run("vmm", job.history.vmm_mad, action, args,
                                          stdin=job.doc, timeout=d.cloud.config.driver_timeout,
                                          log=sink)
    return result.ok, result.error
