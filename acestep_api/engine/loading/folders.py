"""Finding checkpoint folders: what a DiT folder looks like, and a configured name -> its folder.

Light on purpose (no torch): the CLI asks whether the primary DiT exists before it decides
to serve the demo. The 5 Hz LM's finder (``engine/lm/folders.py``) shares :func:`find_folder`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from acestep_api.engine.loading.errors import CheckpointError
from acestep_api.engine.layout import (
    CONFIG_FILE,
    DIFFUSERS_SUBFOLDERS,
    OFFICIAL_WEIGHTS,
    OFFICIAL_WEIGHTS_INDEX,
    SILENCE_LATENT_FILE,
)


def is_diffusers_layout(folder: Path) -> bool:
    return (Path(folder) / DIFFUSERS_SUBFOLDERS["transformer"] / CONFIG_FILE).is_file()


def is_official_layout(folder: Path) -> bool:
    return (Path(folder) / CONFIG_FILE).is_file() and (
        (Path(folder) / OFFICIAL_WEIGHTS).is_file() or (Path(folder) / OFFICIAL_WEIGHTS_INDEX).is_file()
    )


def is_dit_folder(folder: Path) -> bool:
    folder = Path(folder)
    return folder.is_dir() and (is_official_layout(folder) or is_diffusers_layout(folder))


def list_folders(checkpoint_dir: str | Path, is_kind: Callable[[Path], bool]) -> list[str]:
    """Names of the folders directly under ``checkpoint_dir`` that ``is_kind`` accepts."""
    root = Path(checkpoint_dir)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and is_kind(p))


def find_folder(
    checkpoint_dir: str | Path,
    name_or_path: str | Path,
    is_kind: Callable[[Path], bool],
    error: type[CheckpointError],
    not_this_kind: Callable[[Path], str],
    not_found: Callable[[], str],
) -> Path:
    """A configured folder: a name under ``checkpoint_dir``, else a path of its own.

    ``error`` is raised with ``not_this_kind(folder)`` when a candidate exists but ``is_kind``
    refuses it, and with ``not_found()`` when no candidate exists.
    """
    candidates = [Path(checkpoint_dir) / name_or_path, Path(name_or_path)]
    for candidate in candidates:
        if is_kind(candidate):
            return candidate
    for candidate in candidates:
        if candidate.is_dir():
            raise error(not_this_kind(candidate))
    raise error(not_found())


def list_dit_folders(checkpoint_dir: str | Path) -> list[str]:
    """Names of the DiT checkpoints directly under ``checkpoint_dir``."""
    # The silence latent tells a DiT from the other transformer folders (text encoder, LM).
    return list_folders(
        checkpoint_dir,
        lambda p: is_dit_folder(p) and ((p / SILENCE_LATENT_FILE).is_file() or is_diffusers_layout(p)),
    )


def resolve_dit_folder(checkpoint_dir: str | Path, name_or_path: str | Path) -> Path:
    """A configured DiT: a folder name under ``checkpoint_dir``, or a path of its own."""
    if not str(name_or_path).strip():
        raise CheckpointError("no DiT checkpoint named (empty config path)")

    def not_found() -> str:
        available = list_dit_folders(checkpoint_dir)
        listing = ", ".join(available) if available else "none"
        return (
            f"DiT checkpoint {str(name_or_path)!r} not found under {checkpoint_dir} nor as a path; "
            f"available under {checkpoint_dir}: {listing}"
        )

    return find_folder(
        checkpoint_dir,
        name_or_path,
        is_dit_folder,
        CheckpointError,
        lambda folder: (
            f"{folder} exists but is not a DiT checkpoint (needs {CONFIG_FILE} + {OFFICIAL_WEIGHTS}, "
            f"or {DIFFUSERS_SUBFOLDERS['transformer']}/{CONFIG_FILE})"
        ),
        not_found,
    )
