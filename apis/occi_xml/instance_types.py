"""`/instance_type`: the instance-type table of nubo.conf (INSTANCE_TYPE = [...])."""

from __future__ import annotations

from apis.occi_xml import render
from apis.occi_xml.calls import Call, Reply
from core.errors import NotFound


def index(call: Call) -> Reply:
    sizes = call.cloud.config.instance_types
    return Reply(200, render.dump(render.instance_types(call.base, sizes)))


def show(call: Call) -> Reply:
    for size in call.cloud.config.instance_types:
        if size.name == call.ident:
            return Reply(200, render.dump(render.instance_type(call.base, size)))
    raise NotFound("instance_type", call.ident)
