"""Scheduler benchmark: 10,000 pending VMs onto 1,000 heterogeneous hosts in one plan().

Run by hand: `.venv/bin/python bench/scheduler.py [--seed N] [--runs N]`.

Peer: OpenNebula 3.4's mm_sched with its shipped sched.conf dispatches at most
MAX_DISPATCH=30 VMs every SCHED_INTERVAL=30 s, i.e. 1 VM/s. Second line: the naive
per-VM x per-host reference (tests/core/test_scheduler.py) on a 1/10 problem, with the
same placements required from both.

After timing, the plan is checked without the scheduler's help: the placements are
replayed in order on fresh copies of the hosts, every VM's REQUIREMENTS is re-parsed from
scratch and must hold on its host as it stood just before the placement, and no host's
CPU or memory (MAX - USAGE, monitored FREE) may be exceeded at any step. Exit 1 if not.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core import expr  # noqa: E402
from core.scheduler import HostView, Plan, Policy, VMRequest, plan  # noqa: E402

ONE_MAX_DISPATCH = 30  # OpenNebula 3.4 sched.conf defaults
ONE_SCHED_INTERVAL = 30  # seconds
GB = 1024 * 1024  # KB

SHAPES = [  # (cores, MB): instance-type like sizes
    (0.5, 512), (1, 1024), (1, 2048), (2, 2048), (2, 4096), (4, 4096), (4, 8192), (8, 16384),
]
REQUIREMENTS = [
    "",
    'ARCH = "x86_64"',
    'CLUSTER = "c*" & FREE_CPU > 200',
    'HYPERVISOR != "xen" | MEM_TOTAL > 100000000',
    'ARCH = "x86_64" & !(HYPERVISOR = "vmware")',
    'MODELNAME = "*Xeon*" & DISK_SPEED > 300',
    "RUNNING_VMS < 60 & MAX_CPU > 1000",
]
RANKS = ["", "", "FREE_CPU", "- RUNNING_VMS", "FREE_MEM / 1024 + FREE_CPU", "DISK_SPEED",
         "RUNNING_VMS"]
MODELS = ["Intel(R) Xeon(R) CPU E5-2670", "Intel(R) Xeon(R) CPU E5-2650 v2",
          "AMD Opteron(tm) Processor 6272", "Intel(R) Core(TM) i7-3770"]


def make_hosts(count: int, rng: random.Random) -> list[HostView]:
    hosts = []
    for i in range(count):
        cores = rng.choice([16, 24, 32, 48, 64, 96])
        max_cpu = cores * 100
        max_mem = cores * rng.choice([2, 4, 8]) * GB
        running = rng.randint(0, 4)
        cpu_usage = running * 100
        mem_usage = running * 2 * GB
        used_cpu = rng.randint(0, cpu_usage)
        used_mem = rng.randint(0, mem_usage)
        template = {
            "HOSTNAME": f"node{i:04d}",
            "ARCH": rng.choices(["x86_64", "aarch64", "i686"], [85, 12, 3])[0],
            "HYPERVISOR": rng.choices(["kvm", "xen", "vmware"], [70, 20, 10])[0],
            "CLUSTER": rng.choice(["c1", "c2", "c3", "c4", "d1", "d2"]),
            "MODELNAME": rng.choice(MODELS),
            "MEM_TOTAL": str(max_mem),
            "DISK_SPEED": str(rng.randint(100, 900)),
        }
        hosts.append(HostView(
            id=i, name=f"node{i:04d}", template=template, max_cpu=max_cpu, max_mem=max_mem,
            free_cpu=max_cpu - used_cpu, free_mem=max_mem - used_mem, used_cpu=used_cpu,
            used_mem=used_mem, cpu_usage=cpu_usage, mem_usage=mem_usage, running_vms=running))
    return hosts


def make_vms(count: int, rng: random.Random) -> list[VMRequest]:
    """VMs come from a few dozen templates, as they do in a real cloud."""
    templates = [(rng.choice(SHAPES), rng.choice(REQUIREMENTS), rng.choice(RANKS))
                 for _ in range(40)]
    vms = []
    for i in range(count):
        (cpu, memory), requirements, rank = rng.choice(templates)
        vms.append(VMRequest(id=i, cpu=cpu, memory=memory, requirements=requirements,
                             rank=rank))
    return vms


def timed(runs: int, vms: Sequence[VMRequest], hosts: Sequence[HostView]) -> tuple[Plan, float]:
    """plan() with the benchmark's options, `runs` times: (last plan, median seconds)."""
    times = []
    result = Plan()
    for _ in range(runs):
        start = time.perf_counter()
        result = plan(vms, hosts, policy=Policy.STRIPING, max_dispatch=10**9, max_host=10**9)
        times.append(time.perf_counter() - start)
    return result, statistics.median(times)


def verify(vms: Sequence[VMRequest], hosts: Sequence[HostView], result: Plan) -> list[str]:
    """Replay the placements on fresh host copies; return every violation found."""
    problems: list[str] = []
    expr.clear_caches()
    by_id = {v.id: v for v in vms}
    state = {h.id: {"RUNNING_VMS": h.running_vms, "FREE_CPU": h.free_cpu,
                    "FREE_MEM": h.free_mem, "CPU_USAGE": h.cpu_usage, "MEM_USAGE": h.mem_usage}
             for h in hosts}
    host_by_id = {h.id: h for h in hosts}
    seen: set[int] = set()
    for vm_id, host_id in result.placements:
        request, host, now = by_id[vm_id], host_by_id[host_id], state[host_id]
        if vm_id in seen or vm_id in result.unplaced:
            problems.append(f"VM {vm_id} decided twice")
        seen.add(vm_id)
        variables: dict[str, str | float] = {
            "NAME": host.name, "ID": host.id, "MAX_CPU": host.max_cpu,
            "MAX_MEM": host.max_mem, "USED_CPU": host.used_cpu, "USED_MEM": host.used_mem,
            **now, **host.template}
        if not expr.parse_requirements(request.requirements).matches(variables.get):
            problems.append(f"VM {vm_id} on {host.name}: REQUIREMENTS "
                            f"{request.requirements!r} do not hold")
        cpu = math.ceil(round(request.cpu * 100, 6))  # hundredths of a core, rounded up
        mem = request.memory * 1024
        now["RUNNING_VMS"] += 1
        now["CPU_USAGE"] += cpu
        now["MEM_USAGE"] += mem
        now["FREE_CPU"] -= cpu
        now["FREE_MEM"] -= mem
    for host in hosts:
        now = state[host.id]
        if now["CPU_USAGE"] > host.max_cpu or now["FREE_CPU"] < 0:
            problems.append(f"{host.name}: CPU over capacity ({now['CPU_USAGE']} of "
                            f"{host.max_cpu}, free {now['FREE_CPU']})")
        if now["MEM_USAGE"] > host.max_mem or now["FREE_MEM"] < 0:
            problems.append(f"{host.name}: memory over capacity ({now['MEM_USAGE']} of "
                            f"{host.max_mem}, free {now['FREE_MEM']})")
    if len(result.placements) != len(vms):
        problems.append(f"only {len(result.placements)} of {len(vms)} VMs placed "
                        f"(the generator promises room for all): {result.unplaced}")
    return problems


def naive_line(seed: int, runs: int) -> str:
    """The reference implementation against plan() on a 1/10 problem; same placements."""
    from tests.core.test_scheduler import reference_plan

    rng = random.Random(seed)
    hosts = make_hosts(100, rng)
    vms = make_vms(1_000, rng)
    naive_times, fast_times = [], []
    for _ in range(runs):
        start = time.perf_counter()
        expected = reference_plan(vms, hosts, policy=Policy.STRIPING, max_dispatch=10**9,
                                  max_host=10**9)
        naive_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        result = plan(vms, hosts, policy=Policy.STRIPING, max_dispatch=10**9, max_host=10**9)
        fast_times.append(time.perf_counter() - start)
    naive, fast = statistics.median(naive_times), statistics.median(fast_times)
    same = "identical placements" if result.placements == expected.placements else "DIFFERENT"
    return (f"1/10 scale, {len(vms):,} VMs x {len(hosts)} hosts: naive reference "
            f"{naive:.3f} s ({len(expected.placements) / naive:,.0f}/s), plan() {fast:.3f} s "
            f"({len(result.placements) / fast:,.0f}/s) | speedup {naive / fast:,.1f}x | {same}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=34)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    hosts = make_hosts(1000, rng)
    vms = make_vms(10_000, rng)
    result, seconds = timed(args.runs, vms, hosts)
    rate = len(result.placements) / seconds
    peer = ONE_MAX_DISPATCH / ONE_SCHED_INTERVAL
    print(f"{len(result.placements):,} VMs on {len(hosts):,} hosts: plan() {seconds:.3f} s "
          f"(median of {args.runs}) = {rate:,.0f} placements/s | OpenNebula 3.4 default "
          f"MAX_DISPATCH={ONE_MAX_DISPATCH} per SCHED_INTERVAL={ONE_SCHED_INTERVAL}s = "
          f"{peer:g} VM/s | ratio {rate / peer:,.0f}x")
    line = naive_line(args.seed, args.runs)
    print(line)
    problems = verify(vms, hosts, result)
    if "DIFFERENT" in line:
        problems.append("plan() and the naive reference disagree on the 1/10 problem")
    for problem in problems[:20]:
        print(f"CHECK FAILED: {problem}")
    if problems:
        return 1
    print(f"check: {len(result.placements):,} placements replayed independently; REQUIREMENTS "
          f"hold at placement time and no host exceeds CPU or memory (MAX-USAGE and FREE)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
