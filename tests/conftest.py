"""Fixtures shared by the whole suite: tiny random checkpoints and an engine on them.

Both are session-scoped: the checkpoints are written once and the models loaded once.
"""

from __future__ import annotations

from pathlib import Path

import pytest

TINY_DIT_MODELS = ["acestep-v15-turbo", "acestep-v15-base"]


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint dir in the official layout (turbo, base, vae, text encoder, demo marker)."""
    from acestep_api.engine.tiny import write_tiny_checkpoints

    return write_tiny_checkpoints(tmp_path_factory.mktemp("checkpoints"))


@pytest.fixture(scope="session")
def tiny_engine(tiny_checkpoints: Path, tmp_path_factory: pytest.TempPathFactory):
    """A MusicEngine on CPU, fp32, with the tiny turbo DiT as primary and the tiny base DiT second."""
    from acestep_api.engine.engine import MusicEngine

    return MusicEngine.from_checkpoints(
        tiny_checkpoints,
        TINY_DIT_MODELS,
        output_dir=tmp_path_factory.mktemp("engine-outputs"),
        device="cpu",
    )
