"""Text that cannot be stored or tokenised: a lone UTF-16 surrogate ("\\ud800" in JSON).

JSON may escape half of a surrogate pair on its own; Python decodes it into a str that
cannot be encoded as UTF-8, so it would fail much later (saving the job, the tokenizer) as a
server error. A body holding one is refused at once, naming the field.
"""

from __future__ import annotations

import re
from typing import Any

_SURROGATE = re.compile("[\ud800-\udfff]")
# Cheap test on the raw JSON bytes: a lone surrogate can only arrive as such an escape.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def may_hold_surrogates(raw: bytes) -> bool:
    return _SURROGATE_ESCAPE.search(raw) is not None


def _shown(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _problem(where: str, text: str) -> str | None:
    found = _SURROGATE.search(text)
    if found is None:
        return None
    return (f"{where}: text must be valid Unicode (a lone surrogate {_shown(found.group())} "
            f"at position {found.start()})")


def invalid_unicode(value: Any) -> str | None:
    """The first lone surrogate in a parsed JSON value, as a message naming its field
    (`prompt`, `messages[0].content`), or None. Walks with its own stack: JSON nested as
    deep as the parser allows must not exhaust Python's."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            problem = _problem(path or "body", item)
            if problem:
                return problem
        elif isinstance(item, dict):
            for key, child in reversed(list(item.items())):
                child_path = f"{path}.{_shown(key)}" if path else _shown(key)
                problem = _problem(f"{child_path} (the field name)", key)
                if problem:
                    return problem
                stack.append((child_path, child))
        elif isinstance(item, list):
            stack.extend((f"{path}[{index}]", child) for index, child in reversed(list(enumerate(item))))
    return None
