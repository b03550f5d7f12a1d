"""Turning loosely typed request values into typed ones, or a clear error.

The official server coerces like this (docs/wire-contract.md#value-coercion) but silently falls back to the
default when a value cannot be used; here such a value is an `InvalidField` whose message
names the field and what is allowed, so the client learns why its setting was not applied.
"""

from __future__ import annotations

import json
import math
from typing import Any, Sequence

from acestep_api.engine.limits import SEEDS_MAX_ITEMS, text_problem
from acestep_api.engine.request import SEED_MAX

TRUE_WORDS = frozenset({"1", "true", "yes", "y", "on"})


class InvalidField(ValueError):
    """A request value that cannot be used; the message is shown to the client as is."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def show(value: Any) -> str:
    """A short rendering of what the client sent, for error messages."""
    if isinstance(value, str):
        text = value if len(value) <= 40 else value[:37] + "..."
        return repr(text)
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**15:
        return f"a {len(str(abs(value)))}-digit integer"  # 400 digits would bury the message
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return str(value)


def _number(value: float) -> str:
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))  # 1000000, not 1e+06
    return f"{value:g}"


def range_words(minimum: float | None = None, maximum: float | None = None, *,
                exclusive_minimum: bool = False) -> str:
    """'between 1 and 200', 'at least 1', 'greater than 0 and at most 10', or ''."""
    if minimum is not None and maximum is not None:
        if exclusive_minimum:
            return f"greater than {_number(minimum)} and at most {_number(maximum)}"
        return f"between {_number(minimum)} and {_number(maximum)}"
    if minimum is not None:
        return f"{'greater than' if exclusive_minimum else 'at least'} {_number(minimum)}"
    if maximum is not None:
        return f"at most {_number(maximum)}"
    return ""


def _is_blank(value: Any) -> bool:
    return isinstance(value, str) and not value.strip()


def to_bool(value: Any, default: bool) -> bool:
    """Official rule: real booleans as is, else a yes-word is true and anything else false."""
    if value is None or _is_blank(value):
        return default
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in TRUE_WORDS


def to_text(field: str, value: Any, default: str, *, max_chars: int | None = None) -> str:
    """A string (numbers and booleans as written); `max_chars` (engine/limits.py) bounds it."""
    if value is None:
        return default
    if isinstance(value, str):
        text = value
    elif isinstance(value, (bool, int, float)):
        text = str(value)
    else:
        raise InvalidField(field, f"{field} must be a string (got {show(value)})")
    problem = text_problem(text, max_chars) if max_chars is not None else None
    if problem:
        raise InvalidField(field, f"{field} {problem}")
    return text


def _check_range(field: str, value: float, raw: Any, kind: str, unit: str,
                 minimum: float | None, maximum: float | None, exclusive_minimum: bool) -> None:
    too_low = minimum is not None and (value <= minimum if exclusive_minimum else value < minimum)
    too_high = maximum is not None and value > maximum
    if too_low or too_high:
        words = range_words(minimum, maximum, exclusive_minimum=exclusive_minimum)
        raise InvalidField(field, f"{field} must be {kind}{words}{unit} (got {show(raw)})")


def to_int(field: str, value: Any, default: int | None, *, minimum: float | None = None,
           maximum: float | None = None, unit: str = "") -> int | None:
    """Whole numbers in any spelling ("120", 120.0) are accepted; anything else is an error."""
    if value is None or _is_blank(value):
        return default
    words = range_words(minimum, maximum)
    if words.startswith("at "):
        words = "of " + words  # "an integer of at least 1"
    failure = InvalidField(field, f"{field} must be an integer{' ' + words if words else ''}{unit} (got {show(value)})")
    if isinstance(value, bool):
        raise failure
    if isinstance(value, int):
        number = value
    elif isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            raise failure
        number = int(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            number = int(text)
        except ValueError:
            try:
                as_float = float(text)
            except ValueError:
                raise failure from None
            if not math.isfinite(as_float) or not as_float.is_integer():
                raise failure from None
            number = int(as_float)
    else:
        raise failure
    _check_range(field, number, value, "an integer of " if words.startswith("of ") else "an integer ",
                 unit, minimum, maximum, False)
    return number


def to_float(field: str, value: Any, default: float | None, *, minimum: float | None = None,
             maximum: float | None = None, exclusive_minimum: bool = False, unit: str = "") -> float | None:
    if value is None or _is_blank(value):
        return default
    words = range_words(minimum, maximum, exclusive_minimum=exclusive_minimum)
    failure = InvalidField(field, f"{field} must be a number{' ' + words if words else ''}{unit} (got {show(value)})")
    if isinstance(value, bool):
        raise failure
    if isinstance(value, int):
        # A JSON integer of hundreds of digits is no float (OverflowError): compare it exactly.
        _check_range(field, value, value, "", unit, minimum, maximum, exclusive_minimum)
        try:
            number = float(value)
        except OverflowError:
            raise failure from None
    elif isinstance(value, float):
        number = value
    elif isinstance(value, str):
        try:
            number = float(value.strip())  # "1e999" and 400 digits read as inf, refused below
        except ValueError:
            raise failure from None
    else:
        raise failure
    if not math.isfinite(number):
        raise failure
    _check_range(field, number, value, "", unit, minimum, maximum, exclusive_minimum)
    return number


def to_choice(field: str, value: Any, default: str | None, choices: Sequence[str]) -> str | None:
    """A case-insensitive pick from `choices`; blank means the default."""
    if value is None or _is_blank(value):
        return default
    text = value.strip().lower() if isinstance(value, str) else None
    if text not in choices:
        raise InvalidField(field, f"{field} must be one of {', '.join(choices)} (got {show(value)})")
    return text


def to_float_list(field: str, value: Any, allowed: str, *, max_items: int | None = None) -> list[float] | None:
    """A list of numbers, or a comma-separated string of them; blank means none."""
    if value is None or _is_blank(value):
        return None
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        items = [value]
    if max_items is not None and len(items) > max_items:
        raise InvalidField(field, f"{field} must hold at most {max_items} numbers (got {len(items)})")
    numbers = []
    for item in items:
        if _is_blank(item):
            continue
        try:
            if isinstance(item, bool):
                raise ValueError
            number = float(item.strip() if isinstance(item, str) else item)
        except (TypeError, ValueError, OverflowError):
            raise InvalidField(field, f"{field} must be {allowed} (got {show(value)})") from None
        if not math.isfinite(number):
            raise InvalidField(field, f"{field} must be {allowed} (got {show(value)})")
        numbers.append(number)
    return numbers or None


def to_text_list(field: str, value: Any, *, max_items: int | None = None,
                 max_chars: int | None = None) -> list[str] | None:
    """A list of strings; a single string is a one-item list."""
    if value is None or _is_blank(value):
        return None
    if isinstance(value, str):
        return [to_text(field, value, "", max_chars=max_chars).strip()]
    if isinstance(value, (list, tuple)):
        if max_items is not None and len(value) > max_items:
            raise InvalidField(field, f"{field} must hold at most {max_items} items (got {len(value)})")
        items = [to_text(field, item, "", max_chars=max_chars).strip() for item in value if item is not None]
        return [item for item in items if item] or None
    raise InvalidField(field, f"{field} must be a string or a list of strings (got {show(value)})")


def as_object(value: Any) -> dict:
    """A dict, or a JSON string of one (how clients send ``param_obj``); anything else is empty."""
    if isinstance(value, dict):
        return value
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except (ValueError, RecursionError):
            return {}
        return parsed if isinstance(parsed, dict) else {}
    return {}


def to_seeds(value: Any) -> list[int]:
    """`seed` as an int, a list or "1,2,-1" -> per-item seeds (-1 = random); -1 alone means none."""
    allowed = f"seed must be an integer between 0 and {SEED_MAX}, -1 for random, or a comma-separated list of them"
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else value if isinstance(value, list) else [value]
    if len(items) > SEEDS_MAX_ITEMS:
        raise InvalidField("seed", f"seed must hold at most {SEEDS_MAX_ITEMS} seeds (got {len(items)})")
    seeds = []
    for item in items:
        try:
            seed = to_int("seed", item, None)
        except InvalidField:
            raise InvalidField("seed", f"{allowed} (got {show(value)})") from None
        if seed is None:
            continue
        if seed != -1 and not 0 <= seed <= SEED_MAX:
            raise InvalidField("seed", f"{allowed} (got {show(value)})")
        seeds.append(seed)
    return [] if seeds == [-1] else seeds
