"""EC2 actions: one handler per action, named xform_name(Action), each translating the
parsed request into core.service calls and the result into the output shape's dict."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from apis.ec2.errors import Ec2Error
from core.service.context import Caller, Cloud


@dataclass
class Context:
    cloud: Cloud
    caller: Caller
    region: str
    request_id: str
    endpoint_host: str = ""
    dry_run: bool = False

    @property
    def owner(self) -> str:
        """The EC2 account id of the caller: its user id, zero-padded to 12 digits."""
        return f"{self.caller.uid:012d}"

    def commit_point(self) -> None:
        """Called by mutating handlers once validation and permission checks passed."""
        if self.dry_run:
            raise Ec2Error("DryRunOperation",
                           "Request would have succeeded, but DryRun flag is set.", 412)


def fingerprint(p: dict[str, Any]) -> str:
    """What a request with a ClientToken asked for: a retry must ask the same."""
    relevant = {k: v for k, v in p.items() if k not in ("ClientToken", "DryRun")}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()


Handler = Callable[[Context, dict[str, Any]], dict[str, Any]]
HANDLERS: dict[str, Handler] = {}


def action(name: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        HANDLERS[name] = fn
        return fn

    return register


def load() -> dict[str, Handler]:
    """Import every action module (they register themselves) and return the table."""
    from apis.ec2.actions import (  # noqa: F401
        addresses,
        images,
        instances,
        keys,
        misc,
        network,
        subnets,
        volumes,
    )

    return HANDLERS
