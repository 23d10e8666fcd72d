"""Domain errors raised by the core; every front door maps them in one table.

    CloudError
    ├── NotFound            the object does not exist (or the caller may not see it)
    ├── InvalidState        the action is not legal in the object's current state
    ├── InvalidRequest      malformed or contradictory input
    ├── Conflict            the name or resource is already taken
    │   └── IdempotencyMismatch  a request token reused for a different request
    ├── CapacityExceeded    no room to honour the request
    ├── Unauthorized        the caller could not be authenticated
    ├── Forbidden           the caller is known but may not do this
    └── DriverFailed        a driver action exited non-zero
"""

from __future__ import annotations


class CloudError(Exception):
    """Base of every error the core raises on purpose."""


class NotFound(CloudError):
    def __init__(self, kind: str, ident: object) -> None:
        super().__init__(f"{kind} {ident} does not exist")
        self.kind = kind
        self.ident = ident


class InvalidState(CloudError):
    def __init__(self, state: str, event: str) -> None:
        event = str(event)
        super().__init__(f"action '{event}' is not allowed in state {state}")
        self.state = state
        self.event = event


class InvalidRequest(CloudError):
    pass


class Conflict(CloudError):
    pass


class IdempotencyMismatch(Conflict):
    """A request token reused for a different request."""


class LeaseTaken(Conflict):
    """The network address asked for is already used or held."""


class NoFreeLease(Conflict):
    """The network has no free lease left."""


class OutsideNetwork(InvalidRequest):
    """The address asked for is not in the network's range."""


class NotConfigured(InvalidRequest):
    """A feature whose setting is missing (EC2_PUBLIC_NETWORK: no Elastic IPs)."""


class CapacityExceeded(CloudError):
    pass


class Unauthorized(CloudError):
    pass


class Forbidden(CloudError):
    pass


class DriverFailed(CloudError):
    def __init__(self, action: str, rc: int, stderr: str) -> None:
        super().__init__(f"{action} failed (exit {rc}): {stderr}")
        self.action = action
        self.rc = rc
        self.stderr = stderr
