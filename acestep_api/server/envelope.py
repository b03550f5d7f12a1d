"""The official API's success envelope (api-contract 1.1)."""

from __future__ import annotations

import time
from typing import Any


def wrap(data: Any, code: int = 200, error: str | None = None, extra: Any = None) -> dict:
    """`{"data","code","error","timestamp","extra"}` in the official key order.

    `code` can differ from the HTTP status: the official server reports some soft failures
    as HTTP 200 with `code: 500` and an `error` text.
    """
    return {"data": data, "code": code, "error": error, "timestamp": int(time.time() * 1000), "extra": extra}
