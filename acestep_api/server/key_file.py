"""The API keys file (ACESTEP_API_KEYS_FILE, docs/operations.md#keys-and-quotas): TOML, one
`[[keys]]` table per key, each with a name, the key or its SHA-256 digest, and optional limits.

Reading it either gives every key or a `KeyFileError` whose message names the file, the
entry and what is wrong; nothing half-read is ever used.
"""

from __future__ import annotations

import hashlib
import tomllib
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

# Names go into messages, /v1/stats and a metrics label: short and plain.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
# The name of the single ACESTEP_API_KEY, so its jobs are counted like any other key's.
SINGLE_KEY_NAME = "default"
MAX_KEYS = 10_000
MAX_LIST_ITEMS = 100
MAX_FILE_BYTES = 4 << 20
ListItem = Annotated[str, Field(min_length=1, max_length=256)]


class KeyFileError(ValueError):
    """The keys file cannot be used; the message says which file and why."""


def digest_of(key: str) -> bytes:
    """The SHA-256 of a key as presented (surrogatepass: no text, however broken, raises)."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


class KeySpec(BaseModel):
    """One key: who it is and what it may do. A limit left out is no limit."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME_PATTERN)
    key: str | None = Field(default=None, min_length=1, max_length=4096, repr=False)
    key_sha256: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$", repr=False)
    requests_per_minute: int | None = Field(default=None, ge=1, le=1_000_000)
    jobs_per_day: int | None = Field(default=None, ge=0, le=10_000_000)
    audio_seconds_per_day: float | None = Field(default=None, ge=0, le=1e9, allow_inf_nan=False)
    max_waiting: int | None = Field(default=None, ge=0, le=1_000_000)
    # DiT model names (as /v1/models lists them); None: every served model.
    models: list[ListItem] | None = Field(default=None, max_length=MAX_LIST_ITEMS)
    # Route paths, or prefixes ("/v1" allows every /v1/... path); None: every route.
    routes: list[ListItem] | None = Field(default=None, max_length=MAX_LIST_ITEMS)

    @model_validator(mode="after")
    def _one_secret(self) -> "KeySpec":
        if (self.key is None) == (self.key_sha256 is None):
            raise ValueError("give exactly one of key and key_sha256")
        return self

    @field_validator("routes")
    @classmethod
    def _paths(cls, routes):
        for route in routes or ():
            if not route.startswith("/"):
                raise ValueError(f"route {route!r} must start with '/'")
        return routes

    @property
    def digest(self) -> bytes:
        return digest_of(self.key) if self.key is not None else bytes.fromhex(self.key_sha256)

    def may_use_route(self, path: str) -> bool:
        if self.routes is None:
            return True
        return any(path == route or path.startswith(route.rstrip("/") + "/") for route in self.routes)

    def may_use_model(self, model: str) -> bool:
        return self.models is None or model in self.models


def _problem(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


def parse_keys(data: dict, *, reserved: frozenset[str] = frozenset()) -> list[KeySpec]:
    """The keys of a parsed TOML document; a ValueError names the first problem."""
    unknown = set(data) - {"keys"}
    if unknown:
        raise ValueError(f"unknown top-level entry {sorted(unknown)[0]!r}; only [[keys]] tables are read")
    entries = data.get("keys", [])
    if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
        raise ValueError("'keys' must be an array of tables: write each key as a [[keys]] table")
    if len(entries) > MAX_KEYS:
        raise ValueError(f"more than {MAX_KEYS} keys")
    specs: list[KeySpec] = []
    names: set[str] = set()
    digests: dict[bytes, str] = {}
    for index, entry in enumerate(entries):
        label = f"keys[{index}]" + (f" ({entry['name']})" if isinstance(entry.get("name"), str) else "")
        try:
            spec = KeySpec.model_validate(entry)
        except ValidationError as error:
            raise ValueError(f"{label}: {_problem(error)}") from None
        if spec.name in reserved:
            raise ValueError(f"{label}: the name {spec.name!r} is the one of ACESTEP_API_KEY; choose another")
        if spec.name in names:
            raise ValueError(f"{label}: the name {spec.name!r} is used twice")
        if spec.digest in digests:
            raise ValueError(f"{label}: the same key as {digests[spec.digest]!r}")
        names.add(spec.name)
        digests[spec.digest] = spec.name
        specs.append(spec)
    return specs


def load_key_file(path: Path, *, reserved: frozenset[str] = frozenset()) -> list[KeySpec]:
    """Every key of the file, or a KeyFileError naming the file and the problem."""
    try:
        raw = Path(path).read_bytes()
        if len(raw) > MAX_FILE_BYTES:
            raise ValueError(f"larger than {MAX_FILE_BYTES >> 20} MB")
        return parse_keys(tomllib.loads(raw.decode("utf-8")), reserved=reserved)
    except FileNotFoundError:
        raise KeyFileError(f"ACESTEP_API_KEYS_FILE {path}: no such file") from None
    except OSError as error:
        raise KeyFileError(f"ACESTEP_API_KEYS_FILE {path}: cannot be read ({error.strerror})") from None
    except UnicodeDecodeError:
        raise KeyFileError(f"ACESTEP_API_KEYS_FILE {path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as error:
        raise KeyFileError(f"ACESTEP_API_KEYS_FILE {path}: not valid TOML ({error})") from None
    except ValueError as error:
        raise KeyFileError(f"ACESTEP_API_KEYS_FILE {path}: {error}") from None

