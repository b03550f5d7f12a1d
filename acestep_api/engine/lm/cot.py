"""The LM's chain of thought: the metadata YAML it writes inside ``<think>…</think>``.

``format_cot`` writes the text the official pipeline feeds back to the model in phase 2;
``parse_cot`` reads what the model wrote, keeping only values the DiT can use
(docs/pipeline.md#chain-of-thought).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

# The allowed values, spelled as the official constants spell them.
KEYSCALE_NOTES = ("A", "B", "C", "D", "E", "F", "G")
KEYSCALE_ACCIDENTALS = ("", "#", "b", "♯", "♭")
KEYSCALE_MODES = ("major", "minor")
KEYSCALES = tuple(
    f"{note}{accidental} {mode}"
    for note in KEYSCALE_NOTES
    for accidental in KEYSCALE_ACCIDENTALS
    for mode in KEYSCALE_MODES
)
LANGUAGES = (
    "ar", "az", "bg", "bn", "ca", "cs", "da", "de", "el", "en",
    "es", "fa", "fi", "fr", "he", "hi", "hr", "ht", "hu", "id",
    "is", "it", "ja", "ko", "la", "lt", "ms", "ne", "nl", "no",
    "pa", "pl", "pt", "ro", "ru", "sa", "sk", "sr", "sv", "sw",
    "ta", "te", "th", "tl", "tr", "uk", "ur", "vi", "yue", "zh",
    "unknown",
)
TIME_SIGNATURES = (2, 3, 4, 6)
BPM_RANGE = (30, 300)
DURATION_RANGE = (10, 600)

# The fields in the order the model writes them (yaml's sorted order). ``genres`` may appear
# in what a model writes, but phase 1 never writes it and the official CoT text leaves it out.
COT_FIELDS = ("bpm", "caption", "duration", "keyscale", "language", "timesignature")
OPTIONAL_COT_FIELDS = ("genres",)

THINK_START = "<think>"
THINK_END = "</think>"

_THINK_BLOCK = re.compile(re.escape(THINK_START) + r"(.*?)" + re.escape(THINK_END), re.DOTALL)
_LYRIC_HEADER = re.compile(r"^#\s*lyrics?[ \t]*(\n|$)", re.IGNORECASE)
_TRAILING_EOS = re.compile(r"<\|im_end\|>\s*$")
_KEYSCALE_SET = frozenset(KEYSCALES)
_LANGUAGE_SET = frozenset(LANGUAGES)


@dataclass
class ParsedCot:
    """What a CoT text says. ``metas`` holds only valid values, in CoT field names."""

    metas: dict[str, Any] = field(default_factory=dict)
    lyrics: str = ""  # the text after ``</think>``, without a leading "# Lyric" header
    raw: str = ""


def cot_value(key: str, value: Any) -> Any:
    """A metadata value as the CoT writes it: "4/4" -> 4, digit strings -> ints."""
    if key == "timesignature" and isinstance(value, str) and value.endswith("/4"):
        value = value.split("/")[0]
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    return value


def _dump(items: dict[str, Any]) -> str:
    return yaml.dump(items, allow_unicode=True, sort_keys=True)


def format_cot(metas: dict[str, Any]) -> str:
    """``<think>\\n{yaml}\\n</think>`` of the CoT fields present (``None`` counts as absent).

    The YAML is ``yaml.dump(sort_keys=True, allow_unicode=True)``, so captions that need
    quoting are quoted and long ones wrap onto indented lines, exactly as in training.
    """
    items = {key: cot_value(key, metas[key]) for key in COT_FIELDS if metas.get(key) is not None}
    body = _dump(items).strip() if items else ""
    return f"{THINK_START}\n{body}\n{THINK_END}"


def format_cot_line(key: str, value: Any) -> str:
    """The line(s) ``format_cot`` writes for one field, trailing newline included."""
    return _dump({key: cot_value(key, value)})


def parse_cot(text: str) -> ParsedCot:
    """Read the metadata and the text after ``</think>`` from what the LM wrote.

    Tolerant like the official parser: a field starts on an unindented line with a colon,
    indented lines continue it (wrapped captions), other lines and unknown fields are
    ignored, and values outside the allowed sets are dropped.
    """
    match = _THINK_BLOCK.search(text)
    if match:
        body, after = match.group(1), text[match.end():]
    elif THINK_END in text:
        body, after = text.split(THINK_END, 1)
    else:
        body, after = text.split("<|audio_code_", 1)[0], ""
    metas: dict[str, Any] = {}
    for key, lines in _field_lines(body.replace(THINK_START, "")):
        value = _normalise(key, _scalar_text(lines))
        if value is not None:
            metas[key] = value
    return ParsedCot(metas=metas, lyrics=_lyrics(after), raw=text)


def _field_lines(body: str) -> list[tuple[str, list[str]]]:
    """(key, value lines) for every field; the first value line is what follows the colon."""
    fields: list[tuple[str, list[str]]] = []
    for line in body.split("\n"):
        if line.strip().startswith("<"):
            continue
        if line and not line[0].isspace() and ":" in line:
            key, first = line.split(":", 1)
            fields.append((key.strip().lower(), [first]))
        elif fields and (line[:1] in (" ", "\t") or not line.strip()):
            fields[-1][1].append(line)  # a continuation, or a blank line inside a quoted value
    return fields


def _scalar_text(lines: list[str]) -> str:
    """A field's value: continuation lines joined by single spaces; a YAML-quoted value is
    unquoted when it is a well-formed quoted scalar (``format_cot`` quotes e.g. "a: b")."""
    first = lines[0].strip()
    if first[:1] in ("'", '"'):
        try:
            loaded = yaml.safe_load("v: " + "\n".join([first, *lines[1:]]))
        except yaml.YAMLError:
            loaded = None
        if isinstance(loaded, dict) and isinstance(loaded.get("v"), str) and loaded["v"].strip():
            return loaded["v"]
    return " ".join(part for part in (line.strip() for line in lines) if part)


def _normalise(key: str, text: str) -> Any:
    """The field's value in its canonical type, or ``None`` when it is not allowed."""
    text = text.strip()
    if not text:
        return None
    if key == "bpm":
        bpm = _number(text)
        return int(bpm) if bpm is not None and bpm == int(bpm) and BPM_RANGE[0] <= bpm <= BPM_RANGE[1] else None
    if key == "duration":
        duration = _number(text)
        if duration is None or not DURATION_RANGE[0] <= duration <= DURATION_RANGE[1]:
            return None
        return duration
    if key == "keyscale":
        return _keyscale(text)
    if key == "language":
        language = text.lower()
        return language if language in _LANGUAGE_SET else None
    if key == "timesignature":
        numerator = text.split("/", 1)[0].strip()
        return numerator if numerator.isdigit() and int(numerator) in TIME_SIGNATURES else None
    if key in ("caption", "genres"):
        return text
    return None


def _number(text: str) -> int | float | None:
    """An int for integer text, a float for decimal text, else ``None``."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value == value and abs(value) != float("inf") else None


def _keyscale(text: str) -> str | None:
    """One of ``KEYSCALES``, forgiving case and spacing ("f# MINOR" -> "F# minor")."""
    parts = text.split()
    if len(parts) != 2 or not parts[0]:
        return None
    candidate = f"{parts[0][0].upper()}{parts[0][1:]} {parts[1].lower()}"
    return candidate if candidate in _KEYSCALE_SET else None


def _lyrics(after: str) -> str:
    text = _LYRIC_HEADER.sub("", after.strip(), count=1)
    return _TRAILING_EOS.sub("", text).strip()
