"""MaxResults / NextToken for the Describe actions: opaque tokens naming the last id
returned, so a page boundary stays put while other objects come and go."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from typing import Any

from apis.ec2.errors import invalid_value


def max_results(p: dict[str, Any], low: int = 5, high: int = 1000) -> int | None:
    limit = p.get("MaxResults")
    if limit is not None and not low <= limit <= high:
        raise invalid_value("MaxResults", limit, f"it must be between {low} and {high}")
    return limit


def after(token: str | None, key: str) -> int:
    """The last id of the previous page (-1 without a token)."""
    if not token:
        return -1
    try:
        return int(json.loads(base64.urlsafe_b64decode(token.encode()))[key])
    except (ValueError, KeyError, TypeError):
        raise invalid_value("NextToken", token, "it is not a token this service issued") from None


def page(items: Sequence[tuple[int, dict[str, Any]]], limit: int | None,
         key: str) -> tuple[list[dict[str, Any]], str | None]:
    """The first `limit` views (items sorted by id, already past the token) and the token
    for the next page, if there is one."""
    if limit is None or len(items) <= limit:
        return [view for _, view in items], None
    last = items[limit - 1][0]
    token = base64.urlsafe_b64encode(json.dumps({key: last}).encode()).decode()
    return [view for _, view in items[:limit]], token


def answer(member: str, items: Sequence[tuple[int, dict[str, Any]]], limit: int | None,
           key: str) -> dict[str, Any]:
    """A Describe answer: the page under `member`, and NextToken when more follow."""
    out, token = page(items, limit, key)
    result: dict[str, Any] = {member: out}
    if token:
        result["NextToken"] = token
    return result
