"""The OCCI header structures: what real clients send is read, what we write is strict."""

from __future__ import annotations

import pytest

from apis.occi import text
from apis.occi.text import Category, Link, Message, OcciSyntaxError

COMPUTE = "http://schemas.ogf.org/occi/infrastructure#"


def test_split_respects_quotes_and_escapes() -> None:
    assert text.split('a=1, b="x, y", c="q\\"uote, z"', ",") == \
        ['a=1', 'b="x, y"', 'c="q\\"uote, z"']
    with pytest.raises(OcciSyntaxError):
        text.split('a="open', ",")


@pytest.mark.parametrize("raw", [
    'compute; scheme="http://schemas.ogf.org/occi/infrastructure#"; class="kind"',
    'compute; scheme="http://schemas.ogf.org/occi/infrastructure#"; class=kind',
    'compute;scheme="http://schemas.ogf.org/occi/infrastructure#";class="kind";',
    'compute; scheme="http://schemas.ogf.org/occi/infrastructure#compute"; class="kind"',
])
def test_category_shapes_clients_send(raw: str) -> None:
    c = text.parse_category(raw)
    assert (c.term, c.scheme, c.cls) == ("compute", COMPUTE, "kind")
    assert c.type_id == COMPUTE + "compute"


def test_category_without_class_and_with_every_parameter() -> None:
    c = text.parse_category('my_tag; scheme="http://example.org/tags#"; title="Mine"; '
                            'rel="http://schemas.ogf.org/occi/core#resource"; '
                            'location="/my_tag/"; attributes="a.b c.d{required}"')
    assert (c.cls, c.title, c.location, c.attributes) == ("", "Mine", "/my_tag/",
                                                          "a.b c.d{required}")
    assert text.parse_category("Ubuntu-22.04; scheme=\"http://x/os#\"").term == "Ubuntu-22.04"


@pytest.mark.parametrize(("raw", "why"), [
    ('compute', "scheme is missing"),
    ('compute; scheme="http://x/no-hash"', "ends with '#'"),
    ('-bad; scheme="http://x#"', "not a valid term"),
    ('compute; scheme="http://x#"; class="thing"', "class must be"),
    ('compute; scheme', "expected name=value"),
])
def test_bad_categories(raw: str, why: str) -> None:
    with pytest.raises(OcciSyntaxError, match=why):
        text.parse_category(raw)


@pytest.mark.parametrize(("raw", "value"), [
    ('occi.compute.cores=4', 4),
    ('occi.compute.memory=2.5', 2.5),
    ('occi.compute.memory = 1.0', 1.0),
    ('occi.core.title="web, front"', "web, front"),
    ('occi.core.title="say \\"hi\\""', 'say "hi"'),
    ('x.flag=true', True),
    ('x.flag="true"', "true"),
    ('occi.compute.architecture=x64', "x64"),
])
def test_attribute_values(raw: str, value: object) -> None:
    name, parsed = text.parse_attribute(raw)
    assert parsed == value and type(parsed) is type(value)
    assert name == raw.split("=")[0].strip()


def test_comma_joined_and_repeated_headers_mean_the_same() -> None:
    joined = text.parse([("X-OCCI-Attribute", 'occi.compute.cores=4, occi.core.title="web, front"')])
    repeated = text.parse([("X-OCCI-Attribute", "occi.compute.cores=4"),
                           ("x-occi-attribute", 'occi.core.title="web, front"')])
    assert joined == repeated
    assert joined.attributes == {"occi.compute.cores": 4, "occi.core.title": "web, front"}


def test_the_ogf_quote_escaping_case() -> None:
    """A title holding an escaped quote, a comma and `occi.compute.memory=1.0` must not
    change the memory attribute sent next to it."""
    message = text.parse([("X-OCCI-Attribute",
                           'occi.core.title="a \\"b\\", occi.compute.memory=1.0", '
                           'occi.compute.memory=3.6')])
    assert message.attributes == {"occi.core.title": 'a "b", occi.compute.memory=1.0',
                                  "occi.compute.memory": 3.6}


def test_links() -> None:
    link = text.parse_link('</network/3>; rel="http://schemas.ogf.org/occi/infrastructure#network"; '
                           'category="http://schemas.ogf.org/occi/infrastructure#networkinterface"; '
                           'occi.networkinterface.interface="eth0"; occi.core.target="/network/3"')
    assert link.target == "/network/3"
    assert link.categories == ["http://schemas.ogf.org/occi/infrastructure#networkinterface"]
    assert link.attributes == {"occi.networkinterface.interface": "eth0",
                               "occi.core.target": "/network/3"}
    with pytest.raises(OcciSyntaxError, match="expected <target>"):
        text.parse_link('/network/3; rel="x"')


@pytest.mark.parametrize("newline", ["\r\n", "\n", "\n\r"])
def test_text_plain_line_endings(newline: str) -> None:
    body = newline.join([
        'Category: compute; scheme="http://schemas.ogf.org/occi/infrastructure#"; class="kind"',
        "X-OCCI-Attribute: occi.compute.cores=2",
        "", "X-OCCI-Location: /compute/1",
    ]) + newline
    message = text.parse(text.body_fields(body))
    assert [c.term for c in message.categories] == ["compute"]
    assert message.attributes == {"occi.compute.cores": 2}
    assert message.locations == ["/compute/1"]


def test_text_plain_rejects_other_lines() -> None:
    with pytest.raises(OcciSyntaxError, match="expected Category"):
        text.body_fields("Hello: world\n")


def test_rendering_is_strict_and_round_trips() -> None:
    c = Category("compute", COMPUTE, "kind", "Compute Resource",
                 "http://schemas.ogf.org/occi/core#resource", "/compute/",
                 "occi.compute.cores occi.compute.state{immutable}")
    rendered = text.render_category(c)
    assert rendered.startswith('compute; scheme="http://schemas.ogf.org/occi/infrastructure#"; '
                               'class="kind"; title="Compute Resource"; rel=')
    assert rendered.index("location=") < rendered.index("attributes=")
    message = Message([c], [Link("/storage/1", "http://x#storage", "/storagelink/1_1",
                                 ["http://x#storagelink"], {"occi.storagelink.deviceid": "vdb"})],
                      {"occi.compute.memory": 2.0, "occi.compute.cores": 2, "occi.core.title":
                       'with "quotes", commas'}, ["/compute/1"])
    assert text.parse(text.lines(message)) == message
    assert ("X-OCCI-Attribute", "occi.compute.memory=2.0") in text.lines(message)
