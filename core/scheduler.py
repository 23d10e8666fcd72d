"""Pure placement, as OpenNebula 3.4's mm_sched decides it: no I/O, no database.

`plan()` takes pending VMs (oldest first) and host snapshots and returns, in decision
order, which VM goes to which host. For each VM: keep the hosts whose REQUIREMENTS hold and
that have room (MAX - USAGE and the monitored FREE both cover CPU x100 and MEMORY KB), rank
them by the VM's RANK (or the policy's), take the highest (ties: lowest host id). Each
placement is charged to a working copy of the host, so later VMs see RUNNING_VMS, FREE_*,
*_USAGE as they stand after it.

How it stays fast: VMs are grouped into queues by (REQUIREMENTS, RANK, CPU, MEMORY). Each
queue keeps a heap of (-rank, host id, host) over the hosts that may take its VMs. A
REQUIREMENTS or RANK that reads only static attributes is evaluated once per host;
one that reads the share values is re-evaluated only on the host a placement changed,
and only when that host's entry is looked at. Since placing a VM only ever raises
RUNNING_VMS/CPU_USAGE/MEM_USAGE and lowers FREE_CPU/FREE_MEM, a rank that can only fall
(`- RUNNING_VMS`, `FREE_CPU`, ...) leaves stale entries that overestimate, which the heap
corrects when they surface; a rank that can rise (`RUNNING_VMS`, packing) gets a fresh
entry pushed on every change instead. A host that lacks room for a queue's size never
regains it, so it leaves that queue for good.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Generic, TypeVar

from core.expr import (
    ExpressionError,
    Lookup,
    Rank,
    Requirement,
    Trend,
    parse_rank,
    parse_requirements,
)

T = TypeVar("T")

# Share values a placement changes, and which way they move.
SHARE_TRENDS: dict[str, Trend] = {
    "RUNNING_VMS": Trend.UP, "CPU_USAGE": Trend.UP, "MEM_USAGE": Trend.UP,
    "FREE_CPU": Trend.DOWN, "FREE_MEM": Trend.DOWN,
}
_FALLING = (Trend.CONST, Trend.DOWN)


class Policy(IntEnum):
    """sched.conf DEFAULT_SCHED policy: the rank used when a VM has none."""

    PACKING = 0  # RUNNING_VMS: fill the busiest hosts first
    STRIPING = 1  # - RUNNING_VMS: spread VMs (the 3.4 default)
    LOAD_AWARE = 2  # FREE_CPU
    CUSTOM = 3  # the `default_rank` expression


POLICY_RANKS = {Policy.PACKING: "RUNNING_VMS", Policy.STRIPING: "- RUNNING_VMS",
                Policy.LOAD_AWARE: "FREE_CPU"}


@dataclass
class HostView:
    id: int
    name: str
    template: dict[str, str]  # monitored and user attributes, upper-case names
    max_cpu: int  # CPU x100
    max_mem: int  # KB
    free_cpu: int  # monitored
    free_mem: int
    used_cpu: int
    used_mem: int
    cpu_usage: int  # reserved by VMs already placed (CPU x100, KB)
    mem_usage: int
    running_vms: int

    def variables(self) -> dict[str, str | float]:
        """What expressions see: the template first, then the share, then NAME and ID."""
        names: dict[str, str | float] = {"NAME": self.name, "ID": self.id}
        names.update(
            RUNNING_VMS=self.running_vms, FREE_CPU=self.free_cpu, FREE_MEM=self.free_mem,
            MAX_CPU=self.max_cpu, MAX_MEM=self.max_mem, USED_CPU=self.used_cpu,
            USED_MEM=self.used_mem, CPU_USAGE=self.cpu_usage, MEM_USAGE=self.mem_usage)
        names.update(self.template)
        return names


@dataclass
class VMRequest:
    id: int
    cpu: float  # cores
    memory: int  # MB
    requirements: str = ""
    rank: str = ""

    @property
    def cpu_x100(self) -> int:
        """CPU in hundredths of a core, rounded up (0.1 -> 10, 0.005 -> 1)."""
        return math.ceil(round(self.cpu * 100, 6))

    @property
    def memory_kb(self) -> int:
        return self.memory * 1024


@dataclass
class Plan:
    placements: list[tuple[int, int]] = field(default_factory=list)  # (vm id, host id)
    unplaced: dict[int, str] = field(default_factory=dict)  # vm id -> why it fits nowhere


def plan(vms: Sequence[VMRequest], hosts: Sequence[HostView], *,
         policy: Policy = Policy.STRIPING, default_rank: str = "", max_dispatch: int = 30,
         max_host: int = 1) -> Plan:
    """Place `vms` (oldest first) on `hosts`; the caller's objects are not modified.

    At most `max_dispatch` placements, at most `max_host` per host. A VM that fits only on
    hosts that already took `max_host` VMs, and every VM after the `max_dispatch`-th
    placement, is left undecided: in neither list, it waits for the next cycle.
    """
    policy = Policy(policy)
    result = Plan()
    if max_dispatch <= 0:
        return result
    if not hosts:
        result.unplaced = {vm.id: "no hosts available" for vm in vms}
        return result
    cluster = _Cluster(hosts, max_host)
    policy_rank = default_rank if policy is Policy.CUSTOM else POLICY_RANKS[policy]
    keys = [_key(vm, policy_rank) for vm in vms]
    queues: dict[tuple[str, str, int, int], _Queue | str] = {}
    remaining: dict[tuple[str, str, int, int], int] = {}
    for key in keys:
        remaining[key] = remaining.get(key, 0) + 1
    hooked: list[_Queue] = []  # queues that must hear about every placement
    filters: dict[str, _Filter] = {}
    rankers: dict[str, _Ranker] = {}
    for vm, key in zip(vms, keys, strict=True):
        if key[2] < 0:
            result.unplaced[vm.id] = f"CPU={vm.cpu:g} MEMORY={vm.memory}MB: invalid size"
            continue
        queue = queues.get(key)
        if queue is None:
            queue = queues[key] = _open_queue(vm, key, cluster, filters, rankers)
            if isinstance(queue, _Queue) and queue.hooked:
                hooked.append(queue)
        remaining[key] -= 1
        if isinstance(queue, str):
            result.unplaced[vm.id] = queue
            continue
        host = queue.pick()
        if host is None:
            if not queue.dead_fit:
                result.unplaced[vm.id] = queue.reason(vm)
        else:
            cluster.place(host, key[2], key[3])
            result.placements.append((vm.id, cluster.ids[host]))
            if len(result.placements) >= max_dispatch:
                break
            for other in hooked:
                other.touch(host)
        if remaining[key] == 0 and isinstance(queue, _Queue):
            queue.heap = []
            if queue.hooked:
                hooked.remove(queue)
    return result


def _key(vm: VMRequest, policy_rank: str) -> tuple[str, str, int, int]:
    rank = vm.rank if vm.rank.strip() else policy_rank
    if not (math.isfinite(vm.cpu) and vm.cpu >= 0 and vm.memory >= 0):
        return (vm.requirements, rank, -1, -1)
    return (vm.requirements, rank, vm.cpu_x100, vm.memory_kb)


def _open_queue(vm: VMRequest, key: tuple[str, str, int, int], cluster: _Cluster,
                filters: dict[str, _Filter], rankers: dict[str, _Ranker]) -> _Queue | str:
    """The queue for VMs like `vm`, or the reason none of them can be placed."""
    requirements, rank, cpu, mem = key
    try:
        filt = filters.get(requirements) or _Filter(parse_requirements(requirements), cluster)
    except ExpressionError as error:
        return str(error)
    try:
        ranker = rankers.get(rank) or _Ranker(parse_rank(rank), cluster)
    except ExpressionError as error:
        if vm.rank.strip():
            return str(error)
        return f"the scheduler's default rank is invalid: {error}"
    filters[requirements] = filt
    rankers[rank] = ranker
    return _Queue(filt, ranker, cpu, mem, cluster)


class _Cluster:
    """The working copy of the hosts, indexed 0..n-1; `version[h]` counts its changes."""

    def __init__(self, hosts: Sequence[HostView], max_host: int) -> None:
        self.n = len(hosts)
        self.ids = [h.id for h in hosts]
        self.names = [h.name for h in hosts]
        self.max_cpu = [h.max_cpu for h in hosts]
        self.max_mem = [h.max_mem for h in hosts]
        self.cpu_usage = [h.cpu_usage for h in hosts]
        self.mem_usage = [h.mem_usage for h in hosts]
        self.free_cpu = [h.free_cpu for h in hosts]
        self.free_mem = [h.free_mem for h in hosts]
        self.running = [h.running_vms for h in hosts]
        self.placed = [0] * self.n
        self.version = [0] * self.n
        self.max_host = max_host
        self.dead = [max_host <= 0] * self.n  # took max_host VMs in this plan
        self.env = [h.variables() for h in hosts]
        self.shadowed = [frozenset(h.template).intersection(SHARE_TRENDS) for h in hosts]
        self.placements = 0

    def fits(self, h: int, cpu: int, mem: int) -> bool:
        return (self.cpu_usage[h] + cpu <= self.max_cpu[h]
                and self.mem_usage[h] + mem <= self.max_mem[h]
                and self.free_cpu[h] >= cpu and self.free_mem[h] >= mem)

    def room(self, h: int) -> tuple[int, int]:
        return (min(self.max_cpu[h] - self.cpu_usage[h], self.free_cpu[h]),
                min(self.max_mem[h] - self.mem_usage[h], self.free_mem[h]))

    def place(self, h: int, cpu: int, mem: int) -> None:
        self.cpu_usage[h] += cpu
        self.mem_usage[h] += mem
        self.free_cpu[h] -= cpu
        self.free_mem[h] -= mem
        self.running[h] += 1
        shares: dict[str, str | float] = {
            "RUNNING_VMS": self.running[h], "CPU_USAGE": self.cpu_usage[h],
            "MEM_USAGE": self.mem_usage[h], "FREE_CPU": self.free_cpu[h],
            "FREE_MEM": self.free_mem[h]}
        for name in self.shadowed[h]:
            del shares[name]
        self.env[h].update(shares)
        self.version[h] += 1
        self.placed[h] += 1
        self.placements += 1
        if self.placed[h] >= self.max_host:
            self.dead[h] = True


class _PerHost(Generic[T]):
    """An expression's current value on every host, recomputed only where a host changed."""

    def __init__(self, compute: Callable[[Lookup], T], variables: frozenset[str],
                 cluster: _Cluster) -> None:
        self.compute: Callable[[Lookup], T] = compute
        self.cluster = cluster
        self.dynamic = not variables.isdisjoint(SHARE_TRENDS)
        self.value: list[T] = [compute(env.get) for env in cluster.env]
        self.seen = list(cluster.version)

    def get(self, h: int) -> T:
        if self.dynamic and self.seen[h] != self.cluster.version[h]:
            self.value[h] = self.compute(self.cluster.env[h].get)
            self.seen[h] = self.cluster.version[h]
        return self.value[h]

    def current(self) -> list[T]:
        """`value` brought up to date for every host."""
        if self.dynamic:
            seen, version = self.seen, self.cluster.version
            for h in range(self.cluster.n):
                if seen[h] != version[h]:
                    self.get(h)
        return self.value


class _Filter(_PerHost[bool]):
    def __init__(self, requirement: Requirement, cluster: _Cluster) -> None:
        super().__init__(requirement.matches, requirement.variables, cluster)
        self.requirement = requirement
        # Once false, false for the rest of the plan: a failing host can be dropped.
        self.final = requirement.trend(SHARE_TRENDS) in _FALLING


class _Ranker(_PerHost[int]):
    def __init__(self, rank: Rank, cluster: _Cluster) -> None:
        super().__init__(rank.value, rank.variables, cluster)
        # Never rises: a stale heap entry overestimates, and the heap corrects it.
        self.falling = rank.trend(SHARE_TRENDS) in _FALLING


class _Queue:
    """The VMs sharing (REQUIREMENTS, RANK, CPU, MEMORY), and the hosts that may take them.

    A host is in one of three conditions here: in the heap (maybe with a stale rank),
    parked (fails a REQUIREMENTS that may turn true again), or gone (`alive` false: no room
    for this size, a REQUIREMENTS that can only stay false, or MAX_HOST reached).
    """

    def __init__(self, filt: _Filter, ranker: _Ranker, cpu: int, mem: int,
                 cluster: _Cluster) -> None:
        self.filt = filt
        self.ranker = ranker
        self.cpu = cpu
        self.mem = mem
        self.cluster = cluster
        self.eager = not ranker.falling  # stale entries could underestimate: push fresh ones
        self.hooked = self.eager or not filt.final
        self.alive = [True] * cluster.n
        self.parked: set[int] = set()
        self.dead_fit = False  # a host at MAX_HOST would take these VMs
        self.reason_host = -1  # reason() cache: its "most free" host, validity stamp, text
        self.reason_stamp = -1
        self.reason_text = ""
        self.heap: list[tuple[int, int, int]] = []
        self.fill()

    def fill(self) -> None:
        """Sort every host into the heap, parked or gone (touch() for all, unrolled)."""
        cluster, alive, heap, parked = self.cluster, self.alive, self.heap, self.parked
        ok, value, final = self.filt.current(), self.ranker.current(), self.filt.final
        cpu, mem, ids, dead = self.cpu, self.mem, cluster.ids, cluster.dead
        max_cpu, max_mem, free_cpu, free_mem = (cluster.max_cpu, cluster.max_mem,
                                                cluster.free_cpu, cluster.free_mem)
        cpu_usage, mem_usage = cluster.cpu_usage, cluster.mem_usage
        for h in range(cluster.n):
            if not ok[h]:
                if final:
                    alive[h] = False
                else:
                    parked.add(h)
            elif (cpu_usage[h] + cpu > max_cpu[h] or mem_usage[h] + mem > max_mem[h]
                  or free_cpu[h] < cpu or free_mem[h] < mem):
                alive[h] = False
            elif dead[h]:
                self.dead_fit = True
                alive[h] = False
            else:
                heap.append((-value[h], ids[h], h))
        heapq.heapify(heap)

    def touch(self, h: int) -> None:
        """Host `h` took a VM: update its standing if stale entries would not do."""
        if not self.alive[h] or not (self.eager or h in self.parked):
            return
        cluster = self.cluster
        if not self.filt.get(h):
            if self.filt.final:
                self.alive[h] = False
                self.parked.discard(h)
            else:
                self.parked.add(h)
            return
        self.parked.discard(h)
        if not cluster.fits(h, self.cpu, self.mem):
            self.alive[h] = False
        elif cluster.dead[h]:
            self.dead_fit = True
            self.alive[h] = False
        else:
            heapq.heappush(self.heap, (-self.ranker.get(h), cluster.ids[h], h))

    def pick(self) -> int | None:
        """The best host for the next VM of this queue, or None."""
        heap, alive, cluster, filt = self.heap, self.alive, self.cluster, self.filt
        dead, cpu, mem = cluster.dead, self.cpu, self.mem
        while heap:
            negative_rank, host_id, h = heap[0]
            if not alive[h]:
                heapq.heappop(heap)
            elif not filt.get(h):
                heapq.heappop(heap)
                if filt.final:
                    alive[h] = False
                else:
                    self.parked.add(h)
            elif not cluster.fits(h, cpu, mem):
                heapq.heappop(heap)
                alive[h] = False
            elif dead[h]:
                heapq.heappop(heap)
                alive[h] = False
                self.dead_fit = True
            else:
                rank = self.ranker.get(h)
                if rank == -negative_rank:
                    return h
                if self.eager:  # touch() already pushed the fresh entry
                    heapq.heappop(heap)
                else:
                    heapq.heapreplace(heap, (-rank, host_id, h))
        return None

    def reason(self, vm: VMRequest) -> str:
        """Why no host takes `vm` now.

        Placements only shrink a host's room, so with a static REQUIREMENTS the message
        changes only when its "most free" host does; a dynamic one is redone after any
        placement.
        """
        cluster = self.cluster
        best = self.reason_host
        stamp = (cluster.placements if self.filt.dynamic
                 else cluster.version[best] if best >= 0 else 0)
        if self.reason_stamp == stamp:
            return self.reason_text
        best, count = self.most_free()
        text = self.filt.requirement.text.strip()
        if best < 0:
            message = f"no host satisfies REQUIREMENTS: {text}"
        else:
            cpu, mem = cluster.room(best)
            if text and count == 1:
                head = "1 host satisfies REQUIREMENTS but has no room"
            elif text:
                head = f"{count} hosts satisfy REQUIREMENTS but none has room"
            else:
                head = "the only host has no room" if count == 1 else (
                    f"none of the {count} hosts has room")
            message = (f"{head} for CPU={vm.cpu:g} MEMORY={vm.memory}MB (most free: "
                       f"{cluster.names[best]} with {cpu / 100:g} CPU and {mem // 1024} MB)")
        self.reason_host = best
        self.reason_stamp = (cluster.placements if self.filt.dynamic
                             else cluster.version[best] if best >= 0 else 0)
        self.reason_text = message
        return message

    def most_free(self) -> tuple[int, int]:
        """(host closest to fitting this size, or -1; how many hosts pass REQUIREMENTS)."""
        cluster, ok = self.cluster, self.filt.current()
        max_cpu, max_mem, free_cpu, free_mem = (cluster.max_cpu, cluster.max_mem,
                                                cluster.free_cpu, cluster.free_mem)
        cpu_usage, mem_usage, ids = cluster.cpu_usage, cluster.mem_usage, cluster.ids
        # closeness = the smaller of room/demand over CPU and memory (a zero demand ignored)
        cpu_weight = 1 / self.cpu if self.cpu else 0.0
        mem_weight = 1 / self.mem if self.mem else 0.0
        if not (cpu_weight or mem_weight):
            cpu_weight = mem_weight = 1.0
        inf = math.inf
        best, best_score, count = -1, -inf, 0
        for h in range(cluster.n):
            if not ok[h]:
                continue
            count += 1
            cpu_room = min(max_cpu[h] - cpu_usage[h], free_cpu[h])
            mem_room = min(max_mem[h] - mem_usage[h], free_mem[h])
            score = min(cpu_room * cpu_weight if cpu_weight else inf,
                        mem_room * mem_weight if mem_weight else inf)
            if score > best_score or (score == best_score and ids[h] < ids[best]):
                best, best_score = h, score
        return best, count
