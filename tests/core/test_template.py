"""core.template: OpenNebula's attribute language, its XML form, and the Template API."""

from __future__ import annotations

import random
import xml.etree.ElementTree as ET

import pytest

from core.errors import InvalidRequest
from core.template import Template, TemplateError, Value, Vector, dumps, parse

# --- the text form -----------------------------------------------------------------------


def test_scalars_quoted_unquoted_and_empty() -> None:
    t = parse('NAME = web01\nMEMORY = "512"\nDESCRIPTION = "two words"\nEMPTY =\nLAST =')
    assert t.attrs == [("NAME", "web01"), ("MEMORY", "512"), ("DESCRIPTION", "two words"),
                       ("EMPTY", ""), ("LAST", "")]


def test_names_and_keys_are_upper_cased_values_keep_case() -> None:
    t = parse('disk = [ image = "Ubuntu" ]\nName = MixedCase')
    assert t.attrs == [("DISK", {"IMAGE": "Ubuntu"}), ("NAME", "MixedCase")]


def test_names_may_start_with_a_digit_or_underscore() -> None:
    assert parse("_X = 1\n9LIVES = 2").attrs == [("_X", "1"), ("9LIVES", "2")]


def test_escapes_and_lone_backslashes_in_quotes() -> None:
    t = parse(r'A = "say \"hi\"" ' "\n" r'B = "C:\path\\dir\\" ' "\n" r'C = "\n"')
    assert t.get("A") == 'say "hi"'
    assert t.get("B") == "C:\\path\\dir\\"
    assert t.get("C") == "\\n"  # only \" and \\ are escapes


def test_quoted_values_span_lines_and_keep_hashes() -> None:
    t = parse('SCRIPT = "line 1\n# not a comment\nline 3"  # a comment\nNEXT = 1')
    assert t.attrs == [("SCRIPT", "line 1\n# not a comment\nline 3"), ("NEXT", "1")]


def test_comments_blank_lines_and_indentation() -> None:
    text = """
    # header comment
    A = 1 # trailing comment
    \t
    B=2#tight
      # indented comment
    C = # nothing before the comment: empty value
    """
    assert parse(text).attrs == [("A", "1"), ("B", "2"), ("C", "")]


def test_unquoted_values_keep_quotes_unicode_and_symbols() -> None:
    t = parse("A = it's\nB = héllo/漢字:80\nC = $NAME\nD = a&b|c;d()!")
    assert t.attrs == [("A", "it's"), ("B", "héllo/漢字:80"), ("C", "$NAME"), ("D", "a&b|c;d()!")]


def test_bracket_ends_an_unquoted_value() -> None:
    with pytest.raises(TemplateError, match="unexpected"):
        parse("C = $NIC[IP]")  # '[' ends an unquoted value: CONTEXT references need quotes
    assert parse('C = "$NIC[IP, NETWORK=\\"x\\"]"').get("C") == '$NIC[IP, NETWORK="x"]'


def test_vectors_span_lines_with_comments_between_tokens() -> None:
    text = """DISK = [
        image = "Ubuntu 12.04",   # the OS disk
        TARGET
          =
          hda ,
        READONLY = ,
        DRIVER = qcow2
    ]
    DISK = [ TYPE = swap, SIZE = 1024, ]
    NIC = []
    """
    t = parse(text)
    assert t.attrs == [
        ("DISK", {"IMAGE": "Ubuntu 12.04", "TARGET": "hda", "READONLY": "", "DRIVER": "qcow2"}),
        ("DISK", {"TYPE": "swap", "SIZE": "1024"}),
        ("NIC", {}),
    ]
    assert list(t.attrs[0][1]) == ["IMAGE", "TARGET", "READONLY", "DRIVER"]  # order kept


def test_repeated_names_keep_every_copy_in_order() -> None:
    t = parse("NIC = [ NETWORK = a ]\nCPU = 1\nNIC = [ NETWORK = b ]\nNIC = [ NETWORK = c ]")
    assert [v["NETWORK"] for v in t.vectors("nic")] == ["a", "b", "c"]
    assert t.names() == ["NIC", "CPU"]


def test_a_repeated_key_inside_a_vector_keeps_the_first() -> None:
    assert parse("D = [ K = 1, k = 2 ]").vector("D") == {"K": "1"}


@pytest.mark.parametrize("text", ["", "   \n\t\n", "# only a comment", "# a\n\n  # b\n"])
def test_empty_and_comment_only_input(text: str) -> None:
    t = parse(text)
    assert t == Template() and len(t) == 0 and t.dumps() == ""


def test_crlf_line_endings_and_byte_order_mark() -> None:
    t = parse('\ufeffA = 1\r\nB = [ K = v,\r\n L = "w" ]\r\n')
    assert t.attrs == [("A", "1"), ("B", {"K": "v", "L": "w"})]


# --- errors --------------------------------------------------------------------------------

ERRORS = [
    # text, line, column, words in the message
    ('A = 1\nB = "open\nC = 2', 2, 5, "unterminated quoted value"),
    ("A = 1\n\nNAME 3", 3, 6, "expected '=' after NAME"),
    ("NAME", 1, 5, "expected '=' after NAME"),
    ("A = 1\nMY-NAME = 2", 2, 3, "invalid character '-' in name MY"),
    ("NAMÉ = 2", 1, 4, "invalid character 'É'"),
    ("= 3", 1, 1, "expected an attribute name, found '='"),
    ("'A' = 3", 1, 1, "expected an attribute name"),
    ('A = 1\nDISK = [ IMAGE = "x",\n  SIZE = 2\n', 2, 8, "unterminated vector DISK"),
    ("DISK = [", 1, 8, "unterminated vector DISK"),
    ("DISK = [ IMAGE", 1, 8, "unterminated vector DISK"),
    ("DISK = [ IMAGE =", 1, 8, "unterminated vector DISK"),
    ("DISK = [ IMAGE = x,  ", 1, 8, "unterminated vector DISK"),
    ('DISK = [ IMAGE = "x ]', 1, 18, "unterminated quoted value"),
    ("A = b c", 1, 7, "unexpected 'c' after the value of A"),
    ('A = "b" c', 1, 9, "unexpected 'c' after the value of A"),
    ("A = b=c", 1, 6, "unexpected '=' after the value of A"),
    ('A = b"c"', 1, 6, "unexpected '\"' after the value of A"),
    ("A = [ K = v ] B = 1", 1, 15, "unexpected 'B' after the value of A"),
    ("A = ,", 1, 5, "expected a value for A, found ','"),
    ("A = ]", 1, 5, "expected a value for A"),
    ("A = [ K = [ L = 1 ] ]", 1, 11, "nested vectors are not allowed (K in vector A)"),
    ("A = [ K = 1 L = 2 ]", 1, 13, "expected ',' or ']' after K in vector A, found 'L'"),
    ("A = [ , ]", 1, 7, "expected a key in vector A"),
    ("A = [ K = = ]", 1, 11, "expected a value for K in vector A"),
    ("A = [ K 1 ]", 1, 9, "expected '=' after K in vector A"),
    ("A = [ K.X = 1 ]", 1, 8, "invalid character '.' in name K in vector A"),
    ("A = [ K = 1,, ]", 1, 13, "expected a key in vector A"),
    ("A =\n[ K = 1 ]", 2, 1, "expected an attribute name"),  # the value is on its own line
]


@pytest.mark.parametrize(("text", "line", "column", "words"), ERRORS)
def test_errors_name_line_and_column(text: str, line: int, column: int, words: str) -> None:
    with pytest.raises(TemplateError) as caught:
        parse(text)
    err = caught.value
    assert (err.line, err.column) == (line, column), str(err)
    assert words in err.reason
    assert str(err) == f"line {line}, column {column}: {err.reason}"
    assert isinstance(err, InvalidRequest)


# --- the Template API ----------------------------------------------------------------------


def sample() -> Template:
    return parse("A = 1\nDISK = [ IMAGE = x ]\nB = 2\nDISK = [ IMAGE = y ]\nA = 3")


def test_lookups_are_case_insensitive() -> None:
    t = sample()
    assert t.get("a") == "1" and t.get("missing") is None and t.get("missing", "d") == "d"
    assert t.vector("disk") == {"IMAGE": "x"} and t.vector("A") is None
    assert t.all("A") == ["1", "3"]
    assert t.vectors("Disk") == [{"IMAGE": "x"}, {"IMAGE": "y"}]
    assert "disk" in t and "C" not in t and 3 not in t
    assert t.names() == ["A", "DISK", "B"]
    assert len(t) == 5
    assert list(t) == t.attrs


def test_get_skips_vectors_and_vector_skips_scalars() -> None:
    t = parse("X = [ K = v ]\nX = plain")
    assert t.get("X") == "plain"
    assert t.vector("X") == {"K": "v"}
    assert t.get("DISK") is None and t.vectors("X") == [{"K": "v"}]


def test_set_replaces_every_copy_at_the_first_position() -> None:
    t = sample()
    t.set("a", "9")
    assert t.attrs == [("A", "9"), ("DISK", {"IMAGE": "x"}), ("B", "2"),
                       ("DISK", {"IMAGE": "y"})]
    t.set("disk", {"image": "z"})
    assert t.attrs == [("A", "9"), ("DISK", {"IMAGE": "z"}), ("B", "2")]
    t.set("new", "n")
    assert t.attrs[-1] == ("NEW", "n")


def test_add_appends_and_remove_drops_every_copy() -> None:
    t = sample()
    t.add("disk", {"image": "w"})
    assert t.attrs[-1] == ("DISK", {"IMAGE": "w"}) and len(t.vectors("DISK")) == 3
    t.remove("Disk")
    assert t.attrs == [("A", "1"), ("B", "2"), ("A", "3")]
    t.remove("absent")
    assert len(t) == 3


def test_merge_replaces_names_of_the_other_template() -> None:
    t = sample()
    other = parse("DISK = [ IMAGE = new1 ]\nC = 4\nDISK = [ IMAGE = new2 ]")
    t.merge(other)
    assert t.attrs == [("A", "1"), ("DISK", {"IMAGE": "new1"}), ("DISK", {"IMAGE": "new2"}),
                       ("B", "2"), ("A", "3"), ("C", "4")]
    vector = other.vector("DISK")
    assert vector is not None
    vector["IMAGE"] = "changed"  # merge copied the vectors
    assert t.vector("DISK") == {"IMAGE": "new1"}


def test_constructor_normalizes_copies_and_validates() -> None:
    source: Vector = {"image": "x", "Target": "hda"}
    t = Template([("disk", source), ("cpu", "1")])
    assert t.attrs == [("DISK", {"IMAGE": "x", "TARGET": "hda"}), ("CPU", "1")]
    source["image"] = "changed"
    assert t.vector("DISK") == {"IMAGE": "x", "TARGET": "hda"}
    for bad in ["", "A B", "A-B", "NAMÉ", "A\n"]:
        with pytest.raises(InvalidRequest):
            Template([(bad, "x")])
        with pytest.raises(InvalidRequest):
            Template().add("DISK", {bad: "x"})
    with pytest.raises(TypeError):
        Template().set("CPU", 1)  # type: ignore[arg-type]


def test_equality_and_repr() -> None:
    assert sample() == sample()
    assert sample() != parse("A = 1")
    assert sample() != "A = 1"
    assert parse("A = [ X = 1, Y = 2 ]") == parse("A = [ Y = 2, X = 1 ]")  # vectors are maps
    assert parse("A = 1\nB = 2") != parse("B = 2\nA = 1")  # attributes are ordered
    assert repr(parse("A = 1\nD = [ K = v ]")) == "Template([('A', '1'), ('D', {'K': 'v'})])"


def test_dumps_is_canonical() -> None:
    t = parse('b = x\nDISK = [ image = "a \\"q\\" b", target = hda ]\nE =\nN = []\nW = "1\\\\2"')
    expected = (
        'B="x"\n'
        "DISK=[\n"
        '  IMAGE="a \\"q\\" b",\n'
        '  TARGET="hda" ]\n'
        'E=""\n'
        "N=[ ]\n"
        'W="1\\\\2"\n'
    )
    assert t.dumps() == expected == dumps(t)
    assert parse(expected) == t


def test_to_xml() -> None:
    t = parse('NAME = "a <b> & c"\nDISK = [ IMAGE = x, SIZE = 1 ]\nE =')
    element = t.to_xml()
    assert ET.tostring(element, encoding="unicode") == (
        "<TEMPLATE><NAME>a &lt;b&gt; &amp; c</NAME>"
        "<DISK><IMAGE>x</IMAGE><SIZE>1</SIZE></DISK><E /></TEMPLATE>"
    )
    assert t.to_xml("VM_TEMPLATE").tag == "VM_TEMPLATE"
    assert parse(ET.tostring(element, encoding="unicode")) == t


# --- the XML form --------------------------------------------------------------------------


def test_xml_form_with_cdata_vectors_and_any_root() -> None:
    text = """
    <?xml version="1.0"?>
    <VMTEMPLATE>
      <name><![CDATA[web "01" <x>]]></name>
      <DISK><IMAGE>Ubuntu</IMAGE><target>hda</target><EMPTY/></DISK>
      <MEMORY>512</MEMORY>
      <DISK>
        <IMAGE>data</IMAGE>
      </DISK>
      <NOTHING/>
    </VMTEMPLATE>
    """.strip()
    assert parse("\n  " + text).attrs == [
        ("NAME", 'web "01" <x>'),
        ("DISK", {"IMAGE": "Ubuntu", "TARGET": "hda", "EMPTY": ""}),
        ("MEMORY", "512"),
        ("DISK", {"IMAGE": "data"}),
        ("NOTHING", ""),
    ]


@pytest.mark.parametrize(("text", "line", "column", "words"), [
    ("<TEMPLATE><A>1</B></TEMPLATE>", 1, 17, "malformed XML template: mismatched tag"),
    ("\n\n  <T>", 3, 6, "malformed XML template"),
    ("<T><A-B>1</A-B></T>", 1, 4, "invalid attribute name 'A-B'"),
    ("<T>\n<D>\n<E><F/></E></D></T>", 3, 1, "nested vectors are not allowed (E in D)"),
    ('<!DOCTYPE t [<!ENTITY x SYSTEM "file:///etc/passwd">]><t><A>&x;</A></t>', 1, 61,
     "undefined entity"),
])
def test_xml_errors(text: str, line: int, column: int, words: str) -> None:
    with pytest.raises(TemplateError) as caught:
        parse(text)
    assert (caught.value.line, caught.value.column) == (line, column), str(caught.value)
    assert words in caught.value.reason


# --- generated round trips -----------------------------------------------------------------

NAME_CHARS = "ABCXYZabcxyz0189_"
NASTY = ['"', "\\", "\n", "\r", "\t", " ", "#", ",", "=", "[", "]", "'", "<", "&", "$",
         "é", "漢", "🙂", "\x00", "\x7f", "\u2028", "a", "Z", "0", "-", "/", "\\\""]


def random_name(rng: random.Random) -> str:
    return "".join(rng.choice(NAME_CHARS) for _ in range(rng.randint(1, 6))).upper()


def random_value(rng: random.Random, alphabet: list[str] = NASTY) -> str:
    roll = rng.random()
    if roll < 0.1:
        return ""
    if roll < 0.15:
        return "\\" * rng.randint(1, 4)
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12)))


def random_template(rng: random.Random, alphabet: list[str] = NASTY,
                    empty_vectors: bool = True) -> Template:
    pool = [random_name(rng) for _ in range(4)]  # a small pool, so names repeat
    attrs: list[tuple[str, Value]] = []
    for _ in range(rng.randint(0, 8)):
        name = rng.choice(pool)
        if rng.random() < 0.3:
            size = rng.randint(0 if empty_vectors else 1, 4)
            vector = {random_name(rng): random_value(rng, alphabet) for _ in range(size)}
            attrs.append((name, vector))
        else:
            attrs.append((name, random_value(rng, alphabet)))
    return Template(attrs)


def test_generated_templates_round_trip_through_dumps() -> None:
    rng = random.Random(20120403)
    for _ in range(600):
        t = random_template(rng)
        text = t.dumps()
        again = parse(text)
        assert again == t, text
        assert [list(v) for _, v in again if isinstance(v, dict)] == \
            [list(v) for _, v in t if isinstance(v, dict)]  # vector key order too
        assert again.dumps() == text


def human_quote(value: str, rng: random.Random) -> str:
    """Quote the way a person might: a backslash is escaped only where it must be."""
    out = []
    for i, ch in enumerate(value):
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            following = value[i + 1 : i + 2]
            lone_is_safe = following not in ("", '"', "\\")
            out.append("\\" if lone_is_safe and rng.random() < 0.5 else "\\\\")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def human_value(value: str, rng: random.Random) -> str:
    bare = value and not any(c in value for c in ' \t\r\n\f\v=#,[]"')
    if bare and rng.random() < 0.6:
        return value
    return human_quote(value, rng)


def comment(rng: random.Random) -> str:
    return "#" + "".join(rng.choice([c for c in NASTY if c not in "\n\r"]) for _ in range(5))


def gap(rng: random.Random) -> str:
    """Whitespace, newlines and comments as allowed between tokens of a vector."""
    parts = [rng.choice(["", " ", "\t", "\n", "  \n  ", "\r\n"]) for _ in range(rng.randint(0, 2))]
    if rng.random() < 0.2:
        parts.append(" " + comment(rng) + "\n")
    return "".join(parts)


def human_text(t: Template, rng: random.Random) -> str:
    lines = []
    for name, value in t:
        written = name.lower() if rng.random() < 0.3 else name
        blank = rng.choice(["", " ", "\t", "   "])
        if isinstance(value, str):
            if not value and rng.random() < 0.5:
                body = rng.choice(["", " ", " " + comment(rng)])
            else:
                body = blank + human_value(value, rng)
        else:
            pairs = [f"{k.lower() if rng.random() < 0.3 else k}{gap(rng)}={gap(rng)}"
                     f"{human_value(v, rng) if v or rng.random() < 0.5 else ''}{gap(rng)}"
                     for k, v in value.items()]
            trailing = "," + gap(rng) if pairs and rng.random() < 0.2 else ""
            body = f"{blank}[{gap(rng)}{','.join(pairs)}{trailing}]"
        tail = rng.choice(["", " ", "\t", " " + comment(rng)])
        extra = rng.choice(["", "\n", "\n  \n", "\n" + comment(rng) + "\n"])
        lines.append(f"{blank}{written}{blank}={body}{tail}\n{extra}")
    return rng.choice(["", "\n", comment(rng) + "\n"]) + "".join(lines)


def test_generated_hand_written_text_parses_to_the_same_template() -> None:
    rng = random.Random(34)
    for _ in range(600):
        t = random_template(rng)
        text = human_text(t, rng)
        assert parse(text) == t, text


def test_generated_templates_round_trip_through_xml() -> None:
    rng = random.Random(2633)
    xml_safe = [c for c in NASTY if c not in ("\r", "\x00", "\x7f")]
    for _ in range(300):
        t = random_template(rng, xml_safe, empty_vectors=False)
        t = Template(("X" + n, {"X" + k: w for k, w in v.items()} if isinstance(v, dict) else v)
                     for n, v in t)  # an XML name can't start with a digit
        text = ET.tostring(t.to_xml(), encoding="unicode")
        assert parse(text) == t, text


def test_mangled_text_fails_only_with_template_error() -> None:
    rng = random.Random(1)
    tokens = ["A", "b", "_", "=", '"', "\\", "[", "]", ",", "#", " ", "\n", "\t", "x y", "é", "'",
              "<", ">"]
    for _ in range(3000):
        if rng.random() < 0.5:
            text = "".join(rng.choice(tokens) for _ in range(rng.randint(0, 30)))
        else:
            text = random_template(rng).dumps() or "A = 1"
            at = rng.randrange(len(text))
            text = text[:at] + rng.choice(tokens) + text[at + rng.randint(0, 3):]
        try:
            t = parse(text)
        except TemplateError as err:
            assert 1 <= err.line <= text.count("\n") + 1 and err.column >= 1, (text, err)
        else:
            assert parse(t.dumps()) == t, text
