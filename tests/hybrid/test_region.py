"""hybrid.region: a region host's settings from its template over nubo.conf's."""

from __future__ import annotations

import pytest

from hybrid.region import Region, RegionError, cloud_tag, parse_capacity, region_for


def test_capacity_in_both_forms_and_a_clear_error() -> None:
    assert parse_capacity("t3.micro=20, m5.large=4") == (("t3.micro", 20), ("m5.large", 4))
    assert parse_capacity("{t3.micro: 20, m5.large: 4}") == (("t3.micro", 20), ("m5.large", 4))
    assert parse_capacity("t3.micro=2 m1.small=3") == (("t3.micro", 2), ("m1.small", 3))
    assert parse_capacity("") == ()
    with pytest.raises(RegionError, match=r"CAPACITY: 't3.micro' is not TYPE=COUNT"):
        parse_capacity("t3.micro")
    with pytest.raises(RegionError, match="not TYPE=COUNT"):
        parse_capacity("t3.micro=many")


def test_the_template_wins_over_nubo_conf_and_secrets_stay_out_of_repr() -> None:
    conf = {"HOST": "aws", "REGION_NAME": "eu-west-1", "ACCESS_KEY_ID": "AKIA1",
            "SECRET_ACCESS_KEY": "s3cr3t", "CAPACITY": "t3.micro=1"}
    region = region_for("aws", {"CAPACITY": "m5.large=2", "EC2_USED": "ignored",
                                "ENDPOINT": ""}, conf)
    assert region.region_name == "eu-west-1" and region.capacity == (("m5.large", 2),)
    assert region.access_key_id == "AKIA1" and region.secret_access_key == "s3cr3t"
    assert region.endpoint == ""  # an empty attribute does not hide nubo.conf's (none here)
    assert "s3cr3t" not in repr(region)
    assert region.instance_type("") == "m5.large" and region.instance_type("t3.nano") == "t3.nano"
    assert Region(host="x").instance_type("") == "m1.small"
    assert region_for("x", {}).region_name == "us-east-1"


def test_the_cloud_tag_is_short_and_stable() -> None:
    assert cloud_tag("front:/var/lib/nubo") == cloud_tag("front:/var/lib/nubo")
    assert cloud_tag("front:/var/lib/nubo") != cloud_tag("other:/var/lib/nubo")
    assert len(cloud_tag("x")) == 10
