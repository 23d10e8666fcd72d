"""Placement: policies, capacity, limits, reasons, and equality with a slow reference."""

from __future__ import annotations

import copy
import random
from collections.abc import Sequence

import pytest

from core.expr import ExpressionError, parse_rank, parse_requirements
from core.scheduler import POLICY_RANKS, HostView, Plan, Policy, VMRequest, plan

GB = 1024 * 1024  # KB


def host(id: int, cores: float = 8, mem_gb: float = 16, *, name: str = "", used_cores: float = 0,
         reserved_cores: float = 0, reserved_gb: float = 0, running: int = 0,
         free_cores: float | None = None, free_gb: float | None = None,
         **template: str) -> HostView:
    max_cpu, max_mem = int(cores * 100), int(mem_gb * GB)
    return HostView(
        id=id, name=name or f"h{id}", template=dict(template), max_cpu=max_cpu,
        max_mem=max_mem,
        free_cpu=int(free_cores * 100) if free_cores is not None else max_cpu - int(used_cores * 100),
        free_mem=int(free_gb * GB) if free_gb is not None else max_mem,
        used_cpu=int(used_cores * 100), used_mem=0, cpu_usage=int(reserved_cores * 100),
        mem_usage=int(reserved_gb * GB), running_vms=running)


def vm(id: int, cpu: float = 1, memory: int = 1024, requirements: str = "",
       rank: str = "") -> VMRequest:
    return VMRequest(id=id, cpu=cpu, memory=memory, requirements=requirements, rank=rank)


def run(vms: Sequence[VMRequest], hosts: Sequence[HostView], **options: object) -> Plan:
    """plan(), checked against the reference on every call."""
    result = plan(vms, hosts, **options)  # type: ignore[arg-type]
    expected = reference_plan(vms, hosts, **options)  # type: ignore[arg-type]
    assert result.placements == expected.placements
    assert result.unplaced.keys() == expected.unplaced.keys()
    return result


# ----------------------------------------------------------------- the slow reference


def reference_plan(vms: Sequence[VMRequest], hosts: Sequence[HostView], *,
                   policy: Policy = Policy.STRIPING, default_rank: str = "",
                   max_dispatch: int = 30, max_host: int = 1) -> Plan:
    """mm_sched spelled out: every VM against every host, nothing cached or skipped."""
    result = Plan()
    if max_dispatch <= 0:
        return result
    state = {h.id: copy.deepcopy(h) for h in hosts}
    taken = {h.id: 0 for h in hosts}
    for request in vms:
        if not hosts:
            result.unplaced[request.id] = "no hosts available"
            continue
        if request.cpu < 0 or request.memory < 0:
            result.unplaced[request.id] = "invalid size"
            continue
        rank_text = request.rank if request.rank.strip() else (
            default_rank if policy == Policy.CUSTOM else POLICY_RANKS[policy])
        try:
            requirement = parse_requirements(request.requirements)
            rank = parse_rank(rank_text)
        except ExpressionError as error:
            result.unplaced[request.id] = str(error)
            continue
        cpu, mem = request.cpu_x100, request.memory * 1024
        best: tuple[tuple[int, int], int] | None = None
        blocked = False
        for h in hosts:
            now = state[h.id]
            variables: dict[str, str | float] = {
                "RUNNING_VMS": now.running_vms, "FREE_CPU": now.free_cpu,
                "FREE_MEM": now.free_mem, "MAX_CPU": now.max_cpu, "MAX_MEM": now.max_mem,
                "USED_CPU": now.used_cpu, "USED_MEM": now.used_mem,
                "CPU_USAGE": now.cpu_usage, "MEM_USAGE": now.mem_usage,
                "NAME": now.name, "ID": now.id}
            variables.update(now.template)
            if not requirement.matches(variables.get):
                continue
            if not (now.cpu_usage + cpu <= now.max_cpu and now.mem_usage + mem <= now.max_mem
                    and now.free_cpu >= cpu and now.free_mem >= mem):
                continue
            if taken[h.id] >= max_host:
                blocked = True
                continue
            score = (rank.value(variables.get), -h.id)
            if best is None or score > best[0]:
                best = (score, h.id)
        if best is None:
            if not blocked:
                result.unplaced[request.id] = "fits nowhere"
            continue
        chosen = state[best[1]]
        chosen.cpu_usage += cpu
        chosen.mem_usage += mem
        chosen.free_cpu -= cpu
        chosen.free_mem -= mem
        chosen.running_vms += 1
        taken[chosen.id] += 1
        result.placements.append((request.id, chosen.id))
        if len(result.placements) >= max_dispatch:
            break
    return result


# ----------------------------------------------------------------- policies and rank


def test_nothing_to_do() -> None:
    assert plan([], [host(1)]) == Plan([], {})
    assert plan([], []) == Plan([], {})


def test_no_hosts() -> None:
    result = run([vm(1), vm(2)], [])
    assert result.unplaced == {1: "no hosts available", 2: "no hosts available"}


def test_striping_is_the_default_and_spreads() -> None:
    hosts = [host(1, running=2), host(2, running=0), host(3, running=1)]
    result = run([vm(i) for i in range(4)], hosts, max_host=10)
    assert result.placements == [(0, 2), (1, 2), (2, 3), (3, 1)]  # ties go to the lowest id


def test_packing_fills_the_busiest() -> None:
    hosts = [host(1, running=2), host(2, running=0), host(3, running=1)]
    result = run([vm(i) for i in range(3)], hosts, policy=Policy.PACKING, max_host=10)
    assert result.placements == [(0, 1), (1, 1), (2, 1)]


def test_load_aware_prefers_free_cpu() -> None:
    hosts = [host(1, used_cores=4), host(2, used_cores=1), host(3, used_cores=2)]
    result = run([vm(i, cpu=2) for i in range(3)], hosts, policy=Policy.LOAD_AWARE,
                 max_host=10)
    # FREE_CPU 400/700/600 -> h2 (500 left) -> h3 (400 left) -> h2 (300 left)
    assert result.placements == [(0, 2), (1, 3), (2, 2)]


def test_custom_policy_uses_default_rank() -> None:
    hosts = [host(1, SPEED="3"), host(2, SPEED="9"), host(3, SPEED="5")]
    result = run([vm(1)], hosts, policy=Policy.CUSTOM, default_rank="SPEED")
    assert result.placements == [(1, 2)]
    result = run([vm(1)], hosts, policy=Policy.CUSTOM, default_rank="")  # all 0: lowest id
    assert result.placements == [(1, 1)]


def test_vm_rank_wins_over_policy() -> None:
    hosts = [host(1, running=0, SPEED="1"), host(2, running=5, SPEED="2")]
    result = run([vm(1, rank="SPEED"), vm(2)], hosts, policy=Policy.STRIPING)
    assert result.placements == [(1, 2), (2, 1)]


def test_policy_may_be_a_plain_int_and_blank_rank_means_policy() -> None:
    hosts = [host(1, used_cores=4), host(2, used_cores=1)]
    result = plan([vm(1, rank="  ")], hosts, policy=2)  # type: ignore[arg-type]
    assert result.placements == [(1, 2)]  # LOAD_AWARE: most FREE_CPU
    with pytest.raises(ValueError):
        plan([vm(1)], hosts, policy=4)  # type: ignore[arg-type]


def test_ties_go_to_the_lowest_host_id_whatever_the_order() -> None:
    hosts = [host(9), host(4), host(7)]
    assert run([vm(1)], hosts).placements == [(1, 4)]


def test_rank_is_truncated_before_comparing() -> None:
    hosts = [host(1, X="1.9"), host(2, X="1.1")]
    assert run([vm(1, rank="X")], hosts).placements == [(1, 1)]  # both rank 1: lowest id
    assert run([vm(1, rank="X * 10")], hosts).placements == [(1, 1)]
    hosts = [host(1, X="1.1"), host(2, X="1.9")]
    assert run([vm(1, rank="X * 10")], hosts).placements == [(1, 2)]


# ----------------------------------------------------------------- requirements


def test_requirements_filter_hosts() -> None:
    hosts = [host(1, ARCH="i686"), host(2, ARCH="x86_64"), host(3, ARCH="x86_64")]
    result = run([vm(1, requirements='ARCH = "x86*"')], hosts)
    assert result.placements == [(1, 2)]


def test_variable_lookup_order_template_share_root() -> None:
    hosts = [host(1, running=0, RUNNING_VMS="7"), host(2, running=7)]
    # the template's RUNNING_VMS shadows the share's
    assert run([vm(1, requirements="RUNNING_VMS = 7")], hosts,
               max_host=5).placements == [(1, 1)]
    hosts = [host(1, name="alpha"), host(2, name="beta")]
    assert run([vm(1, requirements='NAME = "b*"')], hosts).placements == [(1, 2)]
    assert run([vm(1, requirements="ID = 2")], hosts).placements == [(1, 2)]
    assert run([vm(1, requirements="MAX_CPU = 800 & MAX_MEM > 0 & USED_CPU = 0")],
               hosts).placements == [(1, 1)]


def test_requirements_see_the_placements_already_made() -> None:
    hosts = [host(1), host(2)]
    vms = [vm(i, requirements="RUNNING_VMS < 1") for i in range(3)]
    result = run(vms, hosts, max_host=10)
    assert result.placements == [(0, 1), (1, 2)]
    assert "no host satisfies REQUIREMENTS: RUNNING_VMS < 1" == result.unplaced[2]
    vms = [vm(i, cpu=3, requirements="FREE_CPU > 400") for i in range(3)]
    result = run(vms, [host(1)], max_host=10)  # 800 -> 500 -> 200
    assert result.placements == [(0, 1), (1, 1)]
    assert 2 in result.unplaced


def test_requirement_that_turns_true_after_a_placement() -> None:
    hosts = [host(1), host(2)]
    vms = [vm(1), vm(2, requirements="RUNNING_VMS > 0"), vm(3, requirements="RUNNING_VMS > 0")]
    result = run(vms, hosts, max_host=10)
    assert result.placements == [(1, 1), (2, 1), (3, 1)]


def test_packing_rank_follows_each_placement() -> None:
    hosts = [host(1), host(2), host(3)]
    vms = [vm(1, requirements="ID = 3"), vm(2), vm(3), vm(4, requirements="ID != 3")]
    result = run(vms, hosts, policy=Policy.PACKING, max_host=10)
    assert result.placements == [(1, 3), (2, 3), (3, 3), (4, 1)]


def test_shares_shadowed_by_the_template_do_not_move() -> None:
    hosts = [host(1, FREE_CPU="800"), host(2)]
    result = run([vm(i, cpu=2, rank="FREE_CPU") for i in range(3)], hosts, max_host=10)
    assert result.placements == [(0, 1), (1, 1), (2, 1)]


# ----------------------------------------------------------------- capacity


def test_exact_fit_is_allowed() -> None:
    hosts = [host(1, cores=2, mem_gb=4)]
    assert run([vm(1, cpu=2, memory=4096)], hosts).placements == [(1, 1)]
    assert 1 in run([vm(1, cpu=2.01, memory=4096)], hosts).unplaced
    assert 1 in run([vm(1, cpu=2, memory=4097)], hosts).unplaced


def test_capacity_counts_reservations_and_monitored_free() -> None:
    # MAX - USAGE limits
    hosts = [host(1, cores=4, reserved_cores=3), host(2, cores=4)]
    assert run([vm(1, cpu=2)], hosts).placements == [(1, 2)]
    hosts = [host(1, mem_gb=4, reserved_gb=3.5), host(2)]
    assert run([vm(1, memory=1024)], hosts).placements == [(1, 2)]
    # monitored FREE limits too
    hosts = [host(1, cores=4, free_cores=1), host(2, cores=4)]
    assert run([vm(1, cpu=2)], hosts).placements == [(1, 2)]
    hosts = [host(1, mem_gb=4, free_gb=0.5), host(2)]
    assert run([vm(1, memory=1024)], hosts).placements == [(1, 2)]


def test_placements_in_the_plan_use_up_capacity() -> None:
    hosts = [host(1, cores=4, mem_gb=8)]
    vms = [vm(1, cpu=2, memory=2048), vm(2, cpu=2, memory=2048), vm(3, cpu=0.5, memory=512)]
    result = run(vms, hosts, max_host=10)
    assert result.placements == [(1, 1), (2, 1)]
    assert result.unplaced[3].startswith("the only host has no room for CPU=0.5 MEMORY=512MB")
    vms = [vm(1, cpu=0.5, memory=6144), vm(2, cpu=0.5, memory=2048), vm(3, memory=1)]
    result = run(vms, hosts, max_host=10)
    assert result.placements == [(1, 1), (2, 1)]
    assert 3 in result.unplaced


def test_fractional_and_zero_sizes() -> None:
    hosts = [host(1, cores=0.3, mem_gb=1)]
    vms = [vm(1, cpu=0.1, memory=0), vm(2, cpu=0.1, memory=0), vm(3, cpu=0.1, memory=0),
           vm(4, cpu=0.1, memory=0), vm(5, cpu=0, memory=0)]
    result = run(vms, hosts, max_host=10)
    assert result.placements == [(1, 1), (2, 1), (3, 1), (5, 1)]
    assert VMRequest(1, 0.1, 0).cpu_x100 == 10 and VMRequest(1, 0.005, 0).cpu_x100 == 1


def test_invalid_sizes_fail_that_vm_only() -> None:
    result = run([vm(1, cpu=-1), vm(2, memory=-5), vm(3)], [host(1)])
    assert result.placements == [(3, 1)]
    assert "invalid size" in result.unplaced[1] and "invalid size" in result.unplaced[2]


def test_callers_hosts_are_not_modified() -> None:
    hosts = [host(1, TAG="x"), host(2)]
    before = copy.deepcopy(hosts)
    plan([vm(i) for i in range(5)], hosts, max_host=10)
    assert hosts == before


# ----------------------------------------------------------------- limits


def test_max_host_moves_on_to_the_next_best_host() -> None:
    hosts = [host(1, SPEED="9"), host(2, SPEED="5"), host(3, SPEED="1")]
    vms = [vm(i, rank="SPEED") for i in range(3)]
    assert run(vms, hosts).placements == [(0, 1), (1, 2), (2, 3)]
    assert run(vms, hosts, max_host=2).placements == [(0, 1), (1, 1), (2, 2)]


def test_vm_blocked_only_by_max_host_is_left_undecided() -> None:
    result = run([vm(1), vm(2), vm(3, cpu=100)], [host(1)], max_host=1)
    assert result.placements == [(1, 1)]
    assert set(result.unplaced) == {3}  # vm 2 waits for the next cycle


def test_max_host_zero_places_nothing() -> None:
    result = run([vm(1), vm(2, requirements="ID = 99")], [host(1)], max_host=0)
    assert result.placements == []
    assert set(result.unplaced) == {2}


def test_max_dispatch_stops_the_plan() -> None:
    hosts = [host(i) for i in range(1, 6)]
    vms = [vm(1), vm(2, requirements="ID = 99"), vm(3), vm(4), vm(5, requirements="ID = 98")]
    result = run(vms, hosts, max_dispatch=2)
    assert result.placements == [(1, 1), (3, 2)]
    assert set(result.unplaced) == {2}  # decided before the limit; 4 and 5 are not decided
    assert run(vms, hosts, max_dispatch=0) == Plan([], {})


def test_defaults_are_opennebula_34s() -> None:
    hosts = [host(i) for i in range(100)]
    result = run([vm(i, cpu=0.1, memory=1) for i in range(200)], hosts)
    assert len(result.placements) == 30  # MAX_DISPATCH
    assert len({h for _, h in result.placements}) == 30  # MAX_HOST = 1, striping


# ----------------------------------------------------------------- reasons


def test_reason_no_host_satisfies() -> None:
    result = run([vm(1, requirements="FREE_CPU > 900")], [host(1), host(2)])
    assert result.unplaced == {1: "no host satisfies REQUIREMENTS: FREE_CPU > 900"}


def test_reason_no_room() -> None:
    hosts = [host(1, ARCH="x86_64", cores=4, used_cores=2.5),
             host(7, ARCH="x86_64", cores=4, mem_gb=2, used_cores=2.5, free_gb=2),
             host(3, ARCH="x86_64", cores=1, mem_gb=64), host(4, ARCH="arm", cores=64)]
    result = run([vm(1, cpu=2, memory=4096, requirements='ARCH = "x86_64"')], hosts)
    assert result.unplaced == {1: "3 hosts satisfy REQUIREMENTS but none has room for "
                                  "CPU=2 MEMORY=4096MB (most free: h1 with 1.5 CPU and "
                                  "16384 MB)"}
    result = run([vm(1, cpu=2, memory=4096, requirements='ARCH = "x86_64" & ID = 7')], hosts)
    assert result.unplaced == {1: "1 host satisfies REQUIREMENTS but has no room for "
                                  "CPU=2 MEMORY=4096MB (most free: h7 with 1.5 CPU and "
                                  "2048 MB)"}
    result = run([vm(1, cpu=100, memory=1)], hosts)
    assert result.unplaced[1].startswith("none of the 4 hosts has room for CPU=100 MEMORY=1MB "
                                         "(most free: h4 with 64 CPU")


def test_reason_syntax_errors_fail_only_that_vm() -> None:
    vms = [vm(1, requirements="FREE_CPU >= 100"), vm(2, rank="FREE_CPU +"), vm(3)]
    result = run(vms, [host(1)])
    assert result.placements == [(3, 1)]
    assert result.unplaced[1] == (
        "REQUIREMENTS: column 10: '>=' is not an operator; use '>' or '=' joined with '|', "
        "e.g. (FREE_CPU > 100 | FREE_CPU = 100)")
    assert result.unplaced[2].startswith("RANK: column 11: ")


def test_reason_bad_default_rank() -> None:
    result = run([vm(1), vm(2, rank="1")], [host(1)], policy=Policy.CUSTOM, default_rank="* 2")
    assert result.placements == [(2, 1)]
    assert result.unplaced[1].startswith("the scheduler's default rank is invalid: RANK: ")


def test_reason_updates_after_placements() -> None:
    hosts = [host(1, cores=4), host(2, cores=2)]
    vms = [vm(1, cpu=3), vm(2, cpu=3), vm(3, cpu=1), vm(4, cpu=3)]
    result = run(vms, hosts, max_host=10)
    assert result.placements == [(1, 1), (3, 2)]
    assert "(most free: h2 with 2 CPU" in result.unplaced[2]
    assert "(most free: h1 with 1 CPU" in result.unplaced[4]  # tie: lowest id


# ----------------------------------------------------------------- randomized equivalence

ATOMS = [
    'ARCH = "x86_64"', 'ARCH != "arm*"', 'CLUSTER = "c*"', 'CLUSTER = "[cd]1"',
    "ARCH = x86_64", "FREE_CPU > {cpu}", "FREE_CPU < {cpu}", "FREE_MEM > {mem}",
    "FREE_MEM < {mem}", "RUNNING_VMS < {n}", "RUNNING_VMS > {n}", "RUNNING_VMS = {n}",
    "RUNNING_VMS != {n}", "CPU_USAGE < {cpu}", "CPU_USAGE > {cpu}", "MEM_USAGE < {mem}",
    "MEM_USAGE > {mem}", "MAX_CPU > {cpu}", "USED_CPU < {cpu}", "SCORE > {n}",
    "SCORE < {n}", "ID != {n}", "ID = {n}", 'NAME = "h1*"', "MISSING = 1", 'FREE_CPU = "*0"',
    "MAX_MEM > {mem}", "USED_MEM < {mem}",
]
RANKS = [
    "", "", "", "RUNNING_VMS", "- RUNNING_VMS", "FREE_CPU", "FREE_MEM / 1024 + FREE_CPU",
    "SCORE", "- SCORE * 2 + RUNNING_VMS", "FREE_CPU * RUNNING_VMS", "100 / (RUNNING_VMS + 1)",
    "CPU_USAGE - MEM_USAGE / 1000", "1 / 0", "FREE_CPU / 100 - SCORE", "-FREE_MEM / 500",
    "MEM_USAGE / 300", "CPU_USAGE", "ID", "FREE_CPU - 3 *", "(RUNNING_VMS - 2) * (RUNNING_VMS - 2)",
    "FREE_CPU / -50", "MISSING", "SCORE / 3 + FREE_CPU / 70",
]


def random_requirements(rng: random.Random, depth: int = 0) -> str:
    roll = rng.random()
    if depth > 2 or roll < 0.45:
        atom = rng.choice(ATOMS)
        return atom.format(cpu=rng.randint(0, 12) * 50, mem=rng.randint(0, 8) * 512 * 1024,
                           n=rng.randint(0, 4))
    if roll < 0.55:
        return "!" + random_requirements(rng, depth + 1)
    op = rng.choice(["&", "|"])
    text = f"{random_requirements(rng, depth + 1)} {op} {random_requirements(rng, depth + 1)}"
    return f"({text})" if rng.random() < 0.5 else text


def random_instance(rng: random.Random) -> tuple[list[VMRequest], list[HostView]]:
    hosts = []
    for i in rng.sample(range(1, 30), rng.randint(0, 8)):
        cores = rng.choice([1, 2, 4, 6])
        mem_gb = rng.choice([1, 2, 4])
        template = {"ARCH": rng.choice(["x86_64", "arm64"]),
                    "CLUSTER": rng.choice(["c1", "c2", "d1"]),
                    "SCORE": str(rng.randint(0, 5))}
        if rng.random() < 0.1:
            template["FREE_CPU"] = str(rng.randint(0, 600))
        if rng.random() < 0.05:
            template["RUNNING_VMS"] = "busy"
        hosts.append(host(i, cores=cores, mem_gb=mem_gb, running=rng.randint(0, 3),
                          reserved_cores=rng.choice([0, 0, 0.5, 1]),
                          reserved_gb=rng.choice([0, 0, 0.5]),
                          used_cores=rng.choice([0, 0, 0.5, 2]),
                          free_gb=rng.choice([None, None, 0.5, 1])))
        hosts[-1].template.update(template)
    templates = []
    for _ in range(rng.randint(1, 6)):
        requirements = random_requirements(rng) if rng.random() < 0.8 else ""
        if rng.random() < 0.03:
            requirements = "FREE_CPU >= 1"
        templates.append((rng.choice([0, 0.25, 0.5, 1, 1, 2]),
                          rng.choice([0, 128, 256, 512, 1024]), requirements, rng.choice(RANKS)))
    vms = []
    for i in range(rng.randint(0, 30)):
        cpu, memory, requirements, rank = rng.choice(templates)
        vms.append(vm(i, cpu, memory, requirements, rank))
    return vms, hosts


@pytest.mark.parametrize("seed", range(40))
def test_matches_the_reference_on_random_instances(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(60):
        vms, hosts = random_instance(rng)
        options = {
            "policy": rng.choice(list(Policy)),
            "default_rank": rng.choice(RANKS),
            "max_dispatch": rng.choice([0, 1, 3, 30, 10**9]),
            "max_host": rng.choice([0, 1, 1, 2, 5, 10**9]),
        }
        result = plan(vms, hosts, **options)  # type: ignore[arg-type]
        expected = reference_plan(vms, hosts, **options)  # type: ignore[arg-type]
        assert result.placements == expected.placements, (vms, hosts, options)
        assert result.unplaced.keys() == expected.unplaced.keys(), (vms, hosts, options)


@pytest.mark.parametrize("seed", range(4))
def test_matches_the_reference_on_larger_instances(seed: int) -> None:
    rng = random.Random(1000 + seed)
    hosts = [host(i, cores=rng.choice([2, 4, 8]), mem_gb=rng.choice([2, 4, 8]),
                  running=rng.randint(0, 3), ARCH=rng.choice(["x86_64", "arm64"]),
                  CLUSTER=rng.choice(["c1", "c2", "d1"]), SCORE=str(rng.randint(0, 9)))
             for i in rng.sample(range(200), 60)]
    templates = [(rng.choice([0.5, 1, 2]), rng.choice([256, 512, 1024]),
                  random_requirements(rng), rng.choice(RANKS)) for _ in range(12)]
    vms = [vm(i, *rng.choice(templates)) for i in range(400)]
    for policy in Policy:
        for max_host in (1, 3, 10**9):
            options = {"policy": policy, "default_rank": "SCORE - RUNNING_VMS",
                       "max_dispatch": 10**9, "max_host": max_host}
            result = plan(vms, hosts, **options)  # type: ignore[arg-type]
            expected = reference_plan(vms, hosts, **options)  # type: ignore[arg-type]
            assert result.placements == expected.placements
            assert result.unplaced.keys() == expected.unplaced.keys()
