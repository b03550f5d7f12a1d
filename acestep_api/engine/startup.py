"""Engine start-up from Settings: where `acestep-api serve`, the CLI and the RunPod worker turn
their settings into a loaded :class:`~acestep_api.engine.engine.MusicEngine`.

Light to import (no torch): the server and the worker import it when they start, and load
the models only when :func:`build_engine` runs.
"""

from __future__ import annotations

import atexit
import logging
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from acestep_api.engine.layout import BASE_FOLDER, DEFAULT_LM_FOLDER, TURBO_FOLDER, is_demo_folder
from acestep_api.settings import Settings

if TYPE_CHECKING:
    from acestep_api.engine.engine import MusicEngine

log = logging.getLogger(__name__)

DEMO_DIT_MODELS = (TURBO_FOLDER, BASE_FOLDER)


def use_demo_checkpoints(settings: Settings) -> Settings:
    """Write the demo checkpoints to a temporary folder (removed at exit) and point the settings at them."""
    # Imported here: only the demo needs the writers.
    from acestep_api.engine.tiny import write_tiny_checkpoints

    root = Path(tempfile.mkdtemp(prefix="acestep-demo-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    write_tiny_checkpoints(root)
    log.warning("Demo mode: serving random-weight checkpoints from %s; the audio is noise.", root)
    return settings.model_copy(update={
        "demo": True,
        "checkpoint_dir": root,
        "config_path": DEMO_DIT_MODELS[0],
        "config_path2": DEMO_DIT_MODELS[1],
        "config_path3": "",
        "lm_model_path": DEFAULT_LM_FOLDER,
    })


def build_engine(settings: Settings) -> MusicEngine:
    """The engine the settings describe.

    With demo on, settings that do not point at demo checkpoints yet are pointed at freshly
    written ones first (the CLI points them before it builds the app, so the app's settings
    name the folder it serves).
    """
    if settings.demo and not is_demo_folder(settings.checkpoint_dir):
        settings = use_demo_checkpoints(settings)
    # Imported here: torch and the model code load only when an engine is really built.
    from acestep_api.engine.engine import MusicEngine

    return MusicEngine.from_checkpoints(
        settings.checkpoint_dir,
        settings.dit_config_paths,
        settings.audio_dir,
        settings.device,
        settings.batch_max,
        settings.lm_model_path,
        init_llm=settings.llm_mode,
        lm_backend=settings.lm_backend,
        lm_device=settings.lm_device,
        lm_max_duration=settings.lm_max_duration,
        lora_dir=settings.adapters_dir,
        lora_cache_size=settings.lora_cache_size,
    )
