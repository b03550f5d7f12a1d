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

from acestep_api.engine.disk_models import dits_on_disk, lms_on_disk, served_model
from acestep_api.engine.layout import BASE_FOLDER, DEFAULT_LM_FOLDER, TURBO_FOLDER, is_demo_folder
from acestep_api.engine.lazy_engine import LazyEngine
from acestep_api.engine.served import ServedModels, folder_name
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


def build_engine(settings: Settings) -> MusicEngine | LazyEngine:
    """The engine the settings describe.

    With demo on, settings that do not point at demo checkpoints yet are pointed at freshly
    written ones first (the CLI points them before it builds the app, so the app's settings
    name the folder it serves).
    """
    if settings.demo and not is_demo_folder(settings.checkpoint_dir):
        settings = use_demo_checkpoints(settings)
    if settings.no_init:
        return LazyEngine(lambda: load_engine(settings), configured_models(settings))
    return load_engine(settings)


def model_options(settings: Settings):
    """Loading at run time and memory placement, as the settings say (engine/model_slots.py)."""
    from acestep_api.engine.engine import resolve_device
    from acestep_api.engine.model_slots import ModelOptions
    from acestep_api.engine.placement import OffloadPolicy, small_gpu

    offload = settings.offload_to_cpu
    if offload is None:  # as official: on by itself for a GPU under 16 GiB
        offload = small_gpu(resolve_device(settings.device))
        if offload:
            log.info("Offloading models to the CPU between their stages: the GPU has less than 16 GiB "
                     "(ACESTEP_OFFLOAD_TO_CPU=false turns it off)")
    return ModelOptions(
        slot_count=settings.model_slots,
        on_demand=settings.on_demand_model_load,
        download=settings.download_models,
        policy=OffloadPolicy.from_flags(offload, settings.offload_dit_to_cpu, settings.lm_offload_to_cpu),
        compile_model=settings.compile_model,
        flash_attention=settings.use_flash_attention,
    )


def load_engine(settings: Settings) -> MusicEngine:
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
        lm_kv_cache=settings.lm_kv_cache,
        lm_compile=settings.lm_compile,
        lm_max_duration=settings.lm_max_duration,
        lora_dir=settings.adapters_dir,
        lora_cache_size=settings.lora_cache_size,
        options=model_options(settings),
    )


def configured_models(settings: Settings) -> ServedModels:
    """What a server started with ACESTEP_NO_INIT reports before its first job loads the models:
    the configured DiTs and LM as their folders describe them, none loaded."""
    root = settings.checkpoint_dir
    names = list(dict.fromkeys(settings.dit_config_paths))
    lm_name = folder_name(settings.lm_model_path)
    lm_on_disk = lms_on_disk(root)
    return ServedModels(
        models=tuple(served_model(Path(root) / name) for name in names), lm_model=lm_name,
        # The LM routes may queue work: the job loads the LM with the rest.
        lm_available=settings.llm_mode != "off" and lm_name in lm_on_disk,
        # As the backend will say once loaded: vllm has no classifier-free guidance.
        lm_backend="vllm" if settings.lm_backend == "vllm" else "transformers",
        lm_guidance=settings.lm_backend != "vllm",
        is_demo=is_demo_folder(root), device=settings.device,
        dit_on_disk=dits_on_disk(root), lm_on_disk=lm_on_disk, on_demand=settings.on_demand_model_load,
        slots=tuple([folder_name(name) for name in names] + [None] * (settings.model_slots - len(names))),
        initialized=False,
        checkpoint_dir=str(root),
    )
