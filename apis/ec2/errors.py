"""EC2 errors: the codes clients act on, with their HTTP status, and the domain-error map.

The model has no error shapes; clients take `Error.Code` as sent. Waiters depend on the
`*.NotFound` codes; retries on `RequestLimitExceeded` with 503 (boto3 standard mode and
aws-cli's legacy mode both back off on it).
"""

from __future__ import annotations

from core.errors import (
    CapacityExceeded,
    CloudError,
    Conflict,
    Forbidden,
    InvalidRequest,
    InvalidState,
    NotFound,
    Unauthorized,
)


class Ec2Error(Exception):
    """An error answered in the EC2 envelope: `<Response><Errors><Error><Code>…`."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status


def auth_failure(message: str = "AWS was not able to validate the provided access "
                 "credentials") -> Ec2Error:
    return Ec2Error("AuthFailure", message, 401)


def unknown_parameter(name: str) -> Ec2Error:
    return Ec2Error("UnknownParameter", f"The parameter {name} is not recognized")


def missing_parameter(name: str) -> Ec2Error:
    return Ec2Error("MissingParameter",
                    f"The request must contain the parameter {name}")


def invalid_value(name: str, value: object, why: str = "") -> Ec2Error:
    detail = f": {why}" if why else ""
    return Ec2Error("InvalidParameterValue",
                    f"Value ({value}) for parameter {name} is invalid{detail}")


# Domain errors that reach a handler without a more specific translation
DOMAIN: dict[type[CloudError], tuple[str, int]] = {
    NotFound: ("InvalidParameterValue", 400),  # handlers map ids to the precise *.NotFound
    InvalidState: ("IncorrectInstanceState", 400),
    InvalidRequest: ("InvalidParameterValue", 400),
    Conflict: ("InvalidParameterValue", 400),
    Unauthorized: ("AuthFailure", 401),
    Forbidden: ("UnauthorizedOperation", 403),
    CapacityExceeded: ("InsufficientInstanceCapacity", 500),
}


def from_domain(exc: CloudError) -> Ec2Error:
    for kind in type(exc).__mro__:
        if issubclass(kind, CloudError) and kind in DOMAIN:
            code, status = DOMAIN[kind]
            return Ec2Error(code, str(exc), status)
    return Ec2Error("InternalError", "An internal error has occurred", 500)
