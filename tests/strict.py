"""NUBO_STRICT=1 (set by .ci/run): a test whose real component is missing fails instead
of skipping, so a green CI cannot hide a missing install step."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

STRICT = os.environ.get("NUBO_STRICT") == "1"


def missing(what: str) -> NoReturn:
    """Skip (or, strict, fail) because `what` is not available on this machine."""
    message = f"{what} is not available (scripts/system-deps installs it)"
    if STRICT:
        pytest.fail(f"{message}; NUBO_STRICT=1")
    pytest.skip(message)
