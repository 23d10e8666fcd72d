"""OCCI-XML over raw HTTP: authentication, documents the driver never sends (multipart and
plain-body volumes, networks, 2.x create shapes), and every error answer: plain text, the
right status, never a traceback."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable

import httpx
import pytest

from tests.apis.occi_xml.conftest import User, element
from tests.live import LiveNubo

pytestmark = pytest.mark.slow
Http = Callable[[User], httpx.Client]


def basic(name: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{name}:{secret}".encode()).decode()}


def refused(response: httpx.Response, status: int, words: str) -> None:
    """An error answer: the status, a plain-text message saying `words`, no traceback."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("text/plain"), response.headers
    assert words in response.text and "Traceback" not in response.text, response.text


def compute(user: User, name: str, size: str = "t2.micro") -> str:
    return (f"<COMPUTE><NAME>{name}</NAME><INSTANCE_TYPE>{size}</INSTANCE_TYPE>"
            f'<DISK><STORAGE href="/storage/{user.image}"/></DISK>'
            f'<NIC><NETWORK href="/network/{user.network}"/><IP>10.1.0.77</IP></NIC></COMPUTE>')


def test_authentication(nubo: LiveNubo, alice: User) -> None:
    url = f"http://127.0.0.1:{nubo.occi_xml_port}/compute"
    sha1 = hashlib.sha1(alice.password.encode()).hexdigest()
    assert httpx.get(url, headers=basic("alice", sha1)).status_code == 200
    assert httpx.get(url, headers=basic("alice", alice.password)).status_code == 200
    for headers in ({}, basic("alice", "wrong"), basic("nobody", sha1), basic("alice", sha1.upper()),
                    {"Authorization": "Basic !!!"}, {"Authorization": "Bearer x"}):
        answer = httpx.get(url, headers=headers)
        refused(answer, 401, "")
        assert answer.headers["www-authenticate"] == 'Basic realm="Nubo OCCI-XML"'


def test_create_with_a_chosen_ip_and_read_back(http: Http, alice: User) -> None:
    client = http(alice)
    created = client.post("/compute", content=compute(alice, "raw-web"))
    assert created.status_code == 201, created.text
    doc = element(created)
    vm_id = doc.findtext("ID")
    assert created.headers["location"].endswith(f"/compute/{vm_id}")
    assert doc.get("href") == f"{client.base_url}/compute/{vm_id}"
    assert (doc.findtext("NAME"), doc.findtext("INSTANCE_TYPE"), doc.findtext("MEMORY"),
            doc.findtext("CPU")) == ("raw-web", "t2.micro", "1024", "0.5")
    assert doc.findtext("NIC/IP") == "10.1.0.77"
    assert doc.find("NIC/NETWORK").get("name") == "lan"
    assert doc.find("DISK").get("id") == "0" and doc.findtext("DISK/TYPE") == "DISK"
    assert element(client.get(f"/compute/{vm_id}")).findtext("NAME") == "raw-web"
    listed = element(client.get("/compute"))
    assert listed.tag == "COMPUTE_COLLECTION"
    assert f"{client.base_url}/compute/{vm_id}" in [c.get("href") for c in listed]
    assert client.delete(f"/compute/{vm_id}").status_code == 204


@pytest.mark.parametrize("body, words", [
    ("<COMPUTE><NAME>x</NAME>", "malformed XML"),
    ("", "needs a <COMPUTE> document"),
    ("<STORAGE/>", "must be a <COMPUTE>, not a <STORAGE>"),
    ('<!DOCTYPE COMPUTE [<!ENTITY x "y">]><COMPUTE><NAME>&x;</NAME></COMPUTE>', "DOCTYPE"),
    ('<!DOCTYPE COMPUTE SYSTEM "file:///etc/passwd"><COMPUTE/>', "DOCTYPE"),
    ("<COMPUTE><NAME>&x;</NAME></COMPUTE>", "undefined entity"),
    ("<COMPUTE><STORAGE><DISK image='1'/></STORAGE></COMPUTE>", "does not take <STORAGE>"),
    ("<COMPUTE><INSTANCE_TYPE>huge</INSTANCE_TYPE></COMPUTE>", "unknown INSTANCE_TYPE 'huge'"),
    ("<COMPUTE><DISK><STORAGE href='/image/1'/></DISK></COMPUTE>", "does not name a storage"),
    ("<COMPUTE><DISK><TARGET>hda</TARGET></DISK></COMPUTE>", "DISK 0 needs a <STORAGE"),
    ("<COMPUTE><CONTEXT><A><B>1</B></A></CONTEXT></COMPUTE>", "must be a plain value"),
    ("<COMPUTE><CONTEXT><my-key>1</my-key></CONTEXT></COMPUTE>", "invalid attribute name"),
])
def test_bad_documents(http: Http, alice: User, body: str, words: str) -> None:
    refused(http(alice).post("/compute", content=body), 400, words)


def test_unknown_ids_and_methods(http: Http, alice: User) -> None:
    client = http(alice)
    for path in ("/compute/99999", "/compute/abc", "/storage/99999999999999999999",
                 "/network/7777", "/instance_type/huge"):
        kind, ident = path.strip("/").split("/")
        refused(client.get(path), 404, f"{kind} {ident} does not exist")
    refused(client.put("/compute/99999", content="<COMPUTE><STATE>STOPPED</STATE></COMPUTE>"),
            404, "compute 99999 does not exist")
    refused(client.delete("/storage/99999"), 404, "storage 99999 does not exist")
    assert client.delete("/compute").status_code == 405
    assert client.put(f"/storage/{alice.image}", content="<STORAGE/>").status_code == 405
    ref = f'<COMPUTE><DISK><STORAGE href="/storage/{alice.image + 500}"/></DISK></COMPUTE>'
    refused(client.post("/compute", content=ref), 404, f"storage {alice.image + 500} does not exist")


def test_other_users_objects_are_missing(http: Http, nubo: LiveNubo, alice: User,
                                         bob: User) -> None:
    theirs, mine = http(alice), http(bob)
    vm_id = element(theirs.post("/compute", content=compute(alice, "private"))).findtext("ID")
    for method, path, body in (("GET", f"/compute/{vm_id}", ""),
                               ("PUT", f"/compute/{vm_id}", "<COMPUTE><STATE>DONE</STATE></COMPUTE>"),
                               ("DELETE", f"/compute/{vm_id}", ""),
                               ("POST", f"/compute/{vm_id}/action",
                                "<ACTION><PERFORM>DETACHDISK</PERFORM><PARAMS><DISK id='0'/>"
                                "</PARAMS></ACTION>"),
                               ("GET", f"/storage/{alice.image}", ""),
                               ("DELETE", f"/storage/{alice.image}", ""),
                               ("GET", f"/network/{alice.network}", "")):
        kind, ident = path.strip("/").split("/")[:2]
        refused(mine.request(method, path, content=body), 404, f"{kind} {ident} does not exist")
    uses_hers = compute(alice, "thief").replace(f"/network/{alice.network}",
                                                f"/network/{bob.network}")
    refused(mine.post("/compute", content=uses_hers), 404, f"storage {alice.image} does not exist")
    assert vm_id not in [c.get("href", "").rsplit("/", 1)[1] for c in element(mine.get("/compute"))]
    admin = httpx.get(f"http://127.0.0.1:{nubo.occi_xml_port}/compute/{vm_id}",
                      auth=("oneadmin", nubo.password))
    seen = element(admin)
    assert seen.findtext("NAME") == "private" and seen.findtext("STATE") != "DONE"  # bob's DELETE
    assert theirs.delete(f"/compute/{vm_id}").status_code == 204


def test_volumes_from_a_form_and_from_a_body(http: Http, alice: User) -> None:
    client = http(alice)
    doc = ("<STORAGE><NAME>{}</NAME><TYPE>DATABLOCK</TYPE><SIZE>32</SIZE><FSTYPE>ext4</FSTYPE>"
           "<PERSISTENT>YES</PERSISTENT><DESCRIPTION>scratch</DESCRIPTION></STORAGE>")
    form = client.post("/storage", files={"occixml": (None, doc.format("from-form"))})
    body = client.post("/storage", content=doc.format("from-body"))
    query = client.post("/storage", params={"occixml": doc.format("from-query")})
    for answer, name in ((form, "from-form"), (body, "from-body"), (query, "from-query")):
        assert answer.status_code == 201, answer.text
        made = element(answer)
        assert (made.findtext("NAME"), made.findtext("TYPE"), made.findtext("SIZE"),
                made.findtext("FSTYPE"), made.findtext("PERSISTENT"), made.findtext("STATE"),
                made.findtext("DESCRIPTION")) == (name, "DATABLOCK", "32", "ext4", "YES", "READY",
                                                  "scratch")
        assert client.delete(f"/storage/{made.findtext('ID')}").status_code == 204
    refused(client.post("/storage", content=doc.format("debian")), 409, "already have an image")
    refused(client.post("/storage", content=doc.format("x").replace("32", "1.5")), 400,
            "SIZE must be a number of MB")
    refused(client.post("/storage", content="<STORAGE><NAME>p</NAME><PUBLIC>YES</PUBLIC>"
                                            "<TYPE>DATABLOCK</TYPE><SIZE>1</SIZE></STORAGE>"),
            400, "PUBLIC STORAGE objects are not supported")
    refused(client.post("/storage", files={"occixml": (None, doc.format("f")),
                                           "file": ("disk.img", b"\0" * 16)}),
            400, "uploading an image file is not supported")
    refused(client.post("/storage", files={"other": (None, "x")}), 400, "an 'occixml' field")
    refused(client.post("/storage", content=b"<STORAGE>" + b"x" * (2 << 20) + b"</STORAGE>"),
            413, "larger than")


def test_an_image_in_use_is_not_deleted(http: Http, alice: User) -> None:
    client = http(alice)
    vm_id = element(client.post("/compute", content=compute(alice, "holder"))).findtext("ID")
    refused(client.delete(f"/storage/{alice.image}"), 409, "is used by")
    assert client.delete(f"/compute/{vm_id}").status_code == 204


def test_networks(http: Http, alice: User) -> None:
    client = http(alice)
    made = client.post("/network", content="<NETWORK><NAME>dmz</NAME><ADDRESS>192.168.7.0"
                                            "</ADDRESS><SIZE>64</SIZE></NETWORK>")
    assert made.status_code == 201, made.text
    doc = element(made)
    assert (doc.findtext("NAME"), doc.findtext("ADDRESS"), doc.findtext("SIZE"),
            doc.findtext("USED_LEASES"), doc.findtext("PUBLIC")) == ("dmz", "192.168.7.0", "64",
                                                                     "0", "NO")
    net_id = doc.findtext("ID")
    assert f"/network/{net_id}" in element(client.get("/network"))[-1].get("href", "")
    refused(client.post("/network", content="<NETWORK><NAME>dmz</NAME><ADDRESS>10.9.0.0</ADDRESS>"
                                            "</NETWORK>"), 409, "already have a network")
    refused(client.post("/network", content="<NETWORK><NAME>n</NAME></NETWORK>"), 400,
            "NETWORK_ADDRESS")
    assert client.delete(f"/network/{net_id}").status_code == 204
    refused(client.get(f"/network/{net_id}"), 404, "does not exist")


def test_state_and_action_errors(http: Http, nubo: LiveNubo, alice: User) -> None:
    client = http(alice)
    vm_id = element(client.post("/compute", content=compute(alice, "errs"))).findtext("ID")
    nubo.wait_vm(int(vm_id), "RUNNING")
    put = f"/compute/{vm_id}"
    refused(client.put(put, content="<COMPUTE><STATE>FLYING</STATE></COMPUTE>"), 400,
            "STATE FLYING cannot be asked for")
    refused(client.put(put, content="<COMPUTE><ID>1234</ID><STATE>STOPPED</STATE></COMPUTE>"),
            400, "ID 1234 is not compute")
    refused(client.put(put, content="<COMPUTE><NAME>x</NAME></COMPUTE>"), 400, "with a STATE")
    save = "<COMPUTE><DISK id='0'><SAVE_AS name='snap'/></DISK></COMPUTE>"
    refused(client.put(put, content=save), 400, "STOPPED")
    action = f"/compute/{vm_id}/action"
    refused(client.post(action, content="<ACTION><PERFORM>MIGRATE</PERFORM></ACTION>"), 400,
            "PERFORM MIGRATE is unknown")
    refused(client.post(action, content="<ACTION><PERFORM>DETACHDISK</PERFORM><PARAMS>"
                                         "<DISK id='9'/></PARAMS></ACTION>"), 404, "disk 9")
    refused(client.post(action, content="<ACTION><PERFORM>DETACHDISK</PERFORM></ACTION>"), 400,
            "needs <DISK id=")
    refused(client.post(action, content="<ACTION><PERFORM>ATTACHDISK</PERFORM><PARAMS><TARGET>"
                                         "hda</TARGET></PARAMS></ACTION>"), 400, "needs a <STORAGE")
    stopped = client.put(put, content="<COMPUTE><STATE>STOPPED</STATE></COMPUTE>")
    assert stopped.status_code == 202 and element(stopped).findtext("ID") == vm_id
    nubo.wait_vm(int(vm_id), "STOPPED")
    saved = client.put(put, content=save)  # DISK@id alone is the DISK_ID
    assert saved.status_code == 202, saved.text
    target = element(saved).find("DISK/SAVE_AS")
    if target is not None:  # shown while the copy runs
        assert "/storage/" in target.get("href", "")
    assert client.delete(put).status_code == 204


def test_instance_types(http: Http, alice: User) -> None:
    client = http(alice)
    listed = element(client.get("/instance_type"))
    assert listed.tag == "INSTANCE_TYPE_COLLECTION"
    entry = listed.find("INSTANCE_TYPE[@name='m1.small']")
    assert entry is not None and entry.get("href", "").endswith("/instance_type/m1.small")
    one = element(client.get("/instance_type/m1.small"))
    for doc in (entry, one):
        assert (doc.findtext("NAME"), doc.findtext("CPU"), doc.findtext("VCPU"),
                doc.findtext("MEMORY")) == ("m1.small", "1", "1", "1740")
