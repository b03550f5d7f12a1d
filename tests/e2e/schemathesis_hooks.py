"""Loaded by `st run` (SCHEMATHESIS_HOOKS) in tests/e2e/test_schemathesis.py: the
error-hygiene rule of tests/answer_hygiene.py as a schemathesis check, so every fuzzed answer
is held to it as well as the suite's own."""

from __future__ import annotations

import schemathesis

from tests.answer_hygiene import problems

READ_TYPES = ("application/json", "text/")


def _content_type(response) -> str:
    for name, values in response.headers.items():
        if name.lower() == "content-type":
            return values[0] if isinstance(values, list) else str(values)
    return ""


@schemathesis.check
def answers_show_no_internals(ctx, response, case):
    """No traceback, exception class name or server path in an error answer (nor in the
    `error` texts of a success)."""
    if not _content_type(response).startswith(READ_TYPES):
        return None  # audio bytes, which are the point of /v1/audio
    found = problems(response.status_code, response.content.decode("utf-8", errors="replace"))
    if found:
        raise AssertionError("; ".join(found))
    return None
