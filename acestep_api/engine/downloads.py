"""Where the official checkpoints come from on the Hugging Face Hub, and fetching one that is
missing: used by `acestep-api download` and by model loading at run time (on-demand loads and
POST /v1/init fetch an official folder that is not on disk yet).

Light on purpose: huggingface_hub is imported only when something is fetched.
"""

from __future__ import annotations

import logging
from pathlib import Path

from acestep_api.engine.layout import (
    BASE_FOLDER,
    LM_0_6B_FOLDER,
    LM_1_7B_FOLDER,
    LM_4B_FOLDER,
    SFT_FOLDER,
    TEXT_ENCODER_FOLDER,
    TURBO_FOLDER,
    VAE_FOLDER,
)

log = logging.getLogger(__name__)

# The main repository holds the shared models, the turbo DiT and the 1.7B LM, one folder each.
MAIN_REPO = "ACE-Step/Ace-Step1.5"
MAIN_REPO_FOLDERS = (TURBO_FOLDER, LM_1_7B_FOLDER, VAE_FOLDER, TEXT_ENCODER_FOLDER)
# Each extra model's repository is named like its folder and holds that folder's files.
EXTRA_REPOS = {name: f"ACE-Step/{name}" for name in (BASE_FOLDER, SFT_FOLDER, LM_0_6B_FOLDER, LM_4B_FOLDER)}
DOWNLOADABLE = MAIN_REPO_FOLDERS + tuple(EXTRA_REPOS)


class DownloadError(RuntimeError):
    """A checkpoint could not be fetched (no network, the Hub refused, a disk error)."""


def is_downloadable(name: str) -> bool:
    """Whether ``name`` is an official folder this server knows where to fetch."""
    return name in DOWNLOADABLE


def download_main(checkpoint_dir: str | Path) -> Path:
    """The whole main repository into ``checkpoint_dir`` (what `acestep-api download` starts with)."""
    from huggingface_hub import snapshot_download

    snapshot_download(MAIN_REPO, local_dir=checkpoint_dir)
    return Path(checkpoint_dir)


def download_model(name: str, checkpoint_dir: str | Path) -> Path:
    """Fetch the official folder ``name`` into ``checkpoint_dir`` and return its path.

    Raises DownloadError with a sentence naming the model (never a path or an exception class).
    """
    if not is_downloadable(name):
        raise DownloadError(f"{name!r} is not an official checkpoint; known: {', '.join(DOWNLOADABLE)}")
    from huggingface_hub import snapshot_download

    root = Path(checkpoint_dir)
    log.info("Downloading %s into %s", name, root)
    try:
        if name in EXTRA_REPOS:
            snapshot_download(EXTRA_REPOS[name], local_dir=root / name)
        else:
            snapshot_download(MAIN_REPO, local_dir=root, allow_patterns=[f"{name}/*"])
    except Exception as error:  # noqa: BLE001 - offline, refused, disk full: all end the same way
        log.warning("Downloading %s failed: %s", name, error)
        raise DownloadError(f"the checkpoint {name!r} is not on this server and could not be downloaded "
                            "(no network access to the Hugging Face Hub, or the download failed)") from None
    return root / name
