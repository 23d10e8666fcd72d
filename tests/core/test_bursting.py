"""core.bursting: which leftover VMs a public-cloud region takes (pure, no I/O)."""

from __future__ import annotations

from core.bursting import Burstable, RegionView, is_public, plan, section_for


def region(host_id: int, name: str, free: str, **attrs: str) -> RegionView:
    return RegionView(host_id, name, {"PUBLIC_CLOUD": "YES", "EC2_CAPACITY": free,
                                      "EC2_DEFAULT_TYPE": free.split("=")[0], **attrs})


def test_a_vm_goes_where_it_has_a_section_and_its_type_has_room() -> None:
    east = region(10, "east", "t3.micro=1,m5.large=0")
    west = region(11, "west", "t3.micro=0,m5.large=2")
    vms = [Burstable(1, [{"AMI": "a", "HOST": "east"}]),      # east's default type
           Burstable(2, [{"AMI": "a", "INSTANCETYPE": "m5.large"}]),  # any: west has room
           Burstable(3, [{"AMI": "a", "HOST": "east"}]),      # east is full now
           Burstable(4, []),                                  # never bursts
           Burstable(5, [{"AMI": "a", "HOST": "north"}])]     # names no known region
    result = plan(vms, [east, west], max_dispatch=30, max_host=10)
    assert result.placements == [(1, 10), (2, 11)]
    assert result.unplaced[3] == ("east: no room for t3.micro; west: no EC2 section for it")
    assert result.unplaced[4] == "east: no EC2 section for it; west: no EC2 section for it"
    assert 5 in result.unplaced


def test_rank_then_priority_then_lowest_id_decide_and_limits_hold() -> None:
    low = region(10, "low", "t3.micro=5", PRIORITY="-1")
    high = region(11, "high", "t3.micro=5", PRIORITY="5")
    anywhere = [{"AMI": "a"}]
    result = plan([Burstable(1, anywhere), Burstable(2, anywhere, rank="- PRIORITY"),
                   Burstable(3, anywhere, requirements='NAME = "low"'),
                   Burstable(4, anywhere)], [low, high], max_dispatch=3, max_host=2)
    # 1 by PRIORITY, 2 by its RANK, 3 by REQUIREMENTS, 4 left for the next cycle
    assert result.placements == [(1, 11), (2, 10), (3, 10)]
    assert 4 not in result.unplaced
    capped = plan([Burstable(i, anywhere) for i in range(3)], [high], max_dispatch=30,
                  max_host=1)
    assert capped.placements == [(0, 11)] and not capped.unplaced  # waits, no error


def test_a_bad_expression_is_the_vms_reason_and_sections_match_by_host_or_cloud() -> None:
    result = plan([Burstable(1, [{"AMI": "a"}], requirements="NAME = ")],
                  [region(10, "east", "t3.micro=1")], max_dispatch=30, max_host=1)
    assert result.placements == [] and result.unplaced[1]
    sections = [{"AMI": "generic"}, {"AMI": "old", "CLOUD": "east"}, {"AMI": "new", "HOST": "west"}]
    assert section_for(sections, "east") == {"AMI": "old", "CLOUD": "east"}
    assert section_for(sections, "west") == {"AMI": "new", "HOST": "west"}
    assert section_for(sections, "south") == {"AMI": "generic"}
    assert is_public({"PUBLIC_CLOUD": "yes"}) and not is_public({})


def test_room_is_capacity_less_the_probed_instances_or_the_placed_vms_whichever_more() -> None:
    probed = region(10, "east", "t3.micro=4,m5.large=2", EC2_USED="t3.micro=1,m5.large=2")
    probed.placed = {"t3.micro": 3}  # two not launched (or not probed) yet
    assert probed.free == {"t3.micro": 1, "m5.large": 0}
    probed.placed = {}
    assert probed.free == {"t3.micro": 3, "m5.large": 0}
