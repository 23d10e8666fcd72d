"""One port, three front doors: which one answers a request at `/` and at the EC2 prefix,
and what EC2 answers before any handler runs (method, body size), against a live daemon."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import httpx
import pytest

from tests.apis.occi.client import INFRA, Occi, category_line
from tests.live import LiveNubo


def ec2_error(response: httpx.Response) -> str:
    assert response.headers["content-type"].startswith("text/xml"), response.text[:300]
    root = ET.fromstring(response.content)
    assert root.tag == "Response", response.text[:300]
    return root.findtext("Errors/Error/Code") or ""


def test_occi_post_at_root_reads_its_body(nubo: LiveNubo) -> None:
    """The front reads a POST's body to look for an EC2 Action; OCCI still gets all of it."""
    ok, _, _ = nubo.rpc().one.user.allocate(nubo.session, "fiona", "fiona-pw", "core")
    assert ok
    occi = Occi(f"http://127.0.0.1:{nubo.port}/", "text/plain", auth=("fiona", "fiona-pw"))
    try:
        created = occi.send("POST", "/", categories=[category_line("storage", INFRA, "kind")],
                            attributes={"occi.core.title": "from-the-root",
                                        "occi.storage.size": 1.0})
        assert created.status_code == 201, created.text
        location = created.headers["location"]
        seen = occi.read(occi.send("GET", location))
        assert seen.attributes["occi.core.title"] == "from-the-root"
    finally:
        occi.close()


def test_action_in_the_query_is_ec2_even_with_occi_headers(nubo: LiveNubo) -> None:
    answer = httpx.get(f"http://127.0.0.1:{nubo.port}/",
                       params={"Action": "DescribeRegions", "Version": "2016-11-15"},
                       headers={"Accept": "text/occi"})
    assert answer.status_code == 403 and ec2_error(answer) == "MissingAuthenticationToken"


@pytest.mark.parametrize("method", ["PUT", "DELETE"])
def test_ec2_prefix_takes_only_get_and_post(nubo: LiveNubo, method: str) -> None:
    answer = httpx.request(method, f"http://127.0.0.1:{nubo.port}/ec2/",
                           data={"Action": "DescribeRegions"})
    assert answer.status_code == 405 and ec2_error(answer) == "MethodNotAllowed"


def test_ec2_body_over_the_limit(nubo: LiveNubo) -> None:
    body = b"Action=DescribeRegions&Pad=" + b"x" * (4 * 1024 * 1024)
    answer = httpx.post(f"http://127.0.0.1:{nubo.port}/", content=body,
                        headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert answer.status_code == 413 and ec2_error(answer) == "RequestEntityTooLarge"


def test_a_large_occi_body_at_root_reaches_occi_whole(nubo: LiveNubo) -> None:
    """The front stops reading past EC2's limit; OCCI gets what was read and the rest."""
    ok, _, _ = nubo.rpc().one.user.allocate(nubo.session, "gus", "gus-pw", "core")
    assert ok
    line = 'X-OCCI-Attribute: occi.core.summary="' + "x" * 1000 + '"\r\n'
    body = line * 4500  # about 4.5 MB, past both front doors' limits
    answer = httpx.post(f"http://127.0.0.1:{nubo.port}/", content=body, auth=("gus", "gus-pw"),
                        headers={"Content-Type": "text/plain", "Accept": "text/plain"})
    assert answer.status_code == 413, answer.text[:300]
    assert not answer.headers["content-type"].startswith("text/xml")
    assert "larger than" in answer.text
