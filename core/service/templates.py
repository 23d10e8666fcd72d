"""VM templates: named, owned templates that VMs are instantiated from (OpenNebula's
one.template.*), with the same ownership and pool filters as the other resources.
"""

from __future__ import annotations

from sqlmodel import col, select

from core import template
from core.errors import NotFound
from core.models import VMTemplate
from core.service.access import ALL, fetch, id_range, restrict
from core.service.context import Caller, Cloud


def create_template(cloud: Cloud, caller: Caller, *, text: str) -> int:
    tmpl = template.parse(text)
    name = template.required_name(tmpl, "VM")
    with cloud.session() as s:
        row = VMTemplate(name=name, uid=caller.uid, gid=caller.gid, template=tmpl.dumps())
        s.add(row)
        s.flush()
        assert row.id is not None
        return int(row.id)


def get_template(cloud: Cloud, caller: Caller, *, template_id: int) -> VMTemplate:
    with cloud.session() as s:
        return fetch(s, VMTemplate, template_id, caller, "template")


def list_templates(cloud: Cloud, caller: Caller, *, flag: int = ALL, start: int = -1,
                   end: int = -1) -> list[VMTemplate]:
    with cloud.session() as s:
        query = restrict(select(VMTemplate), VMTemplate, caller, flag)
        query = id_range(query, VMTemplate, start, end)
        return list(s.exec(query.order_by(col(VMTemplate.id))))


def find_template(cloud: Cloud, caller: Caller, *, ref: str) -> int:
    if ref.isdigit():
        return int(ref)
    with cloud.session() as s:
        query = restrict(select(VMTemplate).where(VMTemplate.name == ref), VMTemplate, caller)
        row = s.exec(query).first()
        if row is None or row.id is None:
            raise NotFound("template", ref)
        return int(row.id)


def update_template(cloud: Cloud, caller: Caller, *, template_id: int, text: str,
                    merge: bool = False) -> None:
    given = template.parse(text)
    with cloud.session() as s:
        row = fetch(s, VMTemplate, template_id, caller, "template")
        new = template.updated(row.template, given, merge=merge)
        row.name = new.get("NAME") or row.name
        row.template = new.dumps()
        s.add(row)


def delete_template(cloud: Cloud, caller: Caller, *, template_id: int) -> None:
    with cloud.session() as s:
        s.delete(fetch(s, VMTemplate, template_id, caller, "template"))
