"""The models loaded at run time: up to three DiTs in slots (slot 1 the primary), one 5 Hz LM,
and what changes them: POST /v1/init (a model into a slot), POST /v1/reinitialize, and jobs
that name a model or an LM that is not loaded (ACESTEP_ON_DEMAND_MODEL_LOAD).

Every load runs on the worker's engine thread, as a model job or inside the job that needs
the model, so it never overlaps a generation. A load that fails leaves what was loaded in
place. An on-demand DiT goes into a free slot, else replaces the least recently used one
other than the primary (with one slot, the primary itself, as the official server does).
After every change the watchers get the new ServedModels, so the routes decide with what is
loaded now.
"""

from __future__ import annotations

import copy
import gc
import itertools
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from acestep_api.engine.disk_models import dits_on_disk, lms_on_disk
from acestep_api.engine.downloads import DownloadError, download_model
from acestep_api.engine.layout import BASE_FOLDER, DEFAULT_LM_FOLDER, LM_MODEL_NAMES, SFT_FOLDER, TURBO_FOLDER
from acestep_api.engine.lm.folders import is_lm_folder
from acestep_api.engine.lm.planner import LMPlanner, TextLimits, load_planner
from acestep_api.engine.loading.dit import DitCheckpoint, load_dit_checkpoint
from acestep_api.engine.loading.errors import CheckpointError
from acestep_api.engine.loading.folders import is_dit_folder
from acestep_api.engine.model_requests import SLOT_COUNT, ModelRequest, ModelResult
from acestep_api.engine.placement import DIT, LM, OffloadPolicy, Placement
from acestep_api.engine.request import GenerationError
from acestep_api.engine.served import ServedModel, folder_name

log = logging.getLogger(__name__)

DIT_NAMES = (TURBO_FOLDER, BASE_FOLDER, SFT_FOLDER)  # the official DiTs a load may download
LM_UNIT = "lm"
# diffusers' attention backend for ACESTEP_USE_FLASH_ATTENTION: the variable-length flash kernel,
# since ACE-Step's packed caption and lyrics carry padding masks, which plain "flash" refuses.
FLASH_BACKEND = "flash_varlen"


@dataclass
class ModelOptions:
    """How models are loaded at run time (from Settings; engine/startup.py fills it)."""

    checkpoint_dir: Path | None = None  # None: nothing can be loaded at run time
    slot_count: int = SLOT_COUNT
    on_demand: bool = False
    download: bool = False
    lm_name: str = DEFAULT_LM_FOLDER  # the configured LM (init_llm and reinitialize load it)
    lm_mode: str = "auto"
    lm_backend: str = "transformers"
    lm_device: torch.device | None = None  # None: the DiT's device
    lm_duration_max: float = 600.0
    lm_limits: TextLimits = field(default_factory=TextLimits)
    lm_kv_cache: str = "static"  # the transformers backend's decoding (ACESTEP_LM_KV_CACHE, _COMPILE)
    lm_compile: str = "auto"
    policy: OffloadPolicy = field(default_factory=OffloadPolicy)
    compile_model: bool = False
    flash_attention: bool = False


def dit_unit(name: str) -> str:
    return f"{DIT}:{name}"


def use_flash_attention(module: torch.nn.Module, name: str) -> bool:
    """Switch a diffusers model to the flash attention backend; where it is unavailable (no
    flash-attn package, no GPU for it) keep the default, saying so once in the log."""
    try:
        module.set_attention_backend(FLASH_BACKEND)
    except Exception as error:  # noqa: BLE001 - diffusers raises several types for a missing backend
        log.info("Flash attention unavailable for %s (%s); using PyTorch's scaled dot-product attention",
                 name, str(error).splitlines()[0] if str(error) else type(error).__name__)
        return False
    log.info("Flash attention on for %s", name)
    return True


class ModelSlots:
    """The loaded DiTs by slot and the LM, with the loading rules."""

    def __init__(self, dits: list[DitCheckpoint], planner: LMPlanner | None, lm_model: str, lm_error: str | None,
                 device: torch.device, dtype: torch.dtype, options: ModelOptions | None = None):
        self.options = options or ModelOptions()
        self.device, self.dtype = torch.device(device), dtype
        self.placement = Placement(self.device, self.options.policy)
        self.slots: list[str | None] = [None] * max(self.options.slot_count, len(dits))
        self.dits: dict[str, DitCheckpoint] = {}
        self._clock = itertools.count()
        self._used: dict[str, int] = {}
        self.watchers: list[Callable[[], None]] = []
        for index, dit in enumerate(dits):
            self.slots[index] = dit.name
            self._adopt(dit)
        self.planner: LMPlanner | None = None
        self.lm_model, self.lm_error = lm_model, lm_error
        if planner is not None:
            self._adopt_lm(planner)

    def __copy__(self) -> "ModelSlots":
        """The same loaded models in a table of its own (a copied engine loads and swaps on its
        own), with no watchers."""
        twin = object.__new__(ModelSlots)
        twin.__dict__.update(self.__dict__)
        twin.slots, twin.dits, twin._used, twin.watchers = list(self.slots), dict(self.dits), dict(self._used), []
        twin.placement = copy.copy(self.placement)
        return twin

    def replace_dits(self, dits: dict[str, DitCheckpoint]) -> None:
        """Serve these DiT objects under their names (a test's own copies of the modules); a
        name no longer given leaves its slot."""
        for name in set(self.dits) - set(dits):
            self.placement.forget(dit_unit(name))
        self.slots = [name if name in dits else None for name in self.slots]
        for name in dits:
            if name not in self.slots:
                free = self.slots.index(None) if None in self.slots else len(self.slots)
                self.slots[free:free + 1] = [name]
        self.dits = {}
        for dit in dits.values():
            self.placement.register(dit_unit(dit.name), DIT, list(dit.modules.values()))
            self.dits[dit.name] = dit

    # --- What is loaded ---------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        """The loaded DiTs in slot order, each once."""
        return list(dict.fromkeys(name for name in self.slots if name))

    @property
    def primary(self) -> str:
        return self.names[0]

    def served_fields(self) -> dict[str, Any]:
        """The ServedModels fields that describe loading (engine.served adds the rest)."""
        root = self.options.checkpoint_dir
        fetch = self.options.download and root is not None
        return {
            "dit_on_disk": dits_on_disk(root), "lm_on_disk": lms_on_disk(root),
            "on_demand": self.options.on_demand and root is not None, "downloadable_dits": DIT_NAMES if fetch else (),
            "downloadable_lms": LM_MODEL_NAMES if fetch else (),
            "slots": tuple(self.slots), "checkpoint_dir": str(root) if root is not None else None,
        }

    def served_model(self, name: str) -> ServedModel:
        dit = self.dits[name]
        return ServedModel(name, dit.is_turbo, tuple(dit.supported_task_types))

    # --- Choosing for a job ---------------------------------------------------------------

    def dit_for(self, requested: str | None) -> DitCheckpoint:
        """The DiT a request names (by folder name or path): loaded, else loaded now when
        on-demand loading is on and it is on disk (or can be fetched); none or unknown -> the
        primary. A failed load is a GenerationError with the reason."""
        if requested:
            for candidate in (requested, folder_name(requested)):
                if candidate in self.dits:
                    return self._touch(candidate)
            name = folder_name(requested)
            if self.options.on_demand and self._dit_loadable(name):
                self._load_into(self._slot_for_on_demand(), name)
                return self._touch(name)
        return self._touch(self.primary)

    def planner_for(self, requested: str | None) -> LMPlanner | None:
        """The LM a request names in lm_model_path: loaded, else loaded now (replacing the one
        loaded) when on-demand loading is on; none or unknown -> the loaded LM."""
        if requested:
            name = folder_name(requested)
            wanted = self.planner is None or name != self.lm_model
            if wanted and self.options.on_demand and self._lm_loadable(name):
                self._load_lm(name)
        return self.planner

    # --- Model jobs -------------------------------------------------------------------

    def init(self, request: ModelRequest) -> ModelResult:
        """POST /v1/init: `model` (or the slot's own) into `slot`, then with init_llm the LM."""
        if request.slot > len(self.slots):
            raise GenerationError(f"slot {request.slot} is not available: this server has {len(self.slots)} "
                                  "model slots (ACESTEP_MODEL_SLOTS)")
        target = request.model or self.slots[request.slot - 1]
        if not target:
            raise GenerationError(f"no DiT model named for the empty slot {request.slot}")
        name = folder_name(target)
        if self.slots[request.slot - 1] != name or name not in self.dits:
            if name not in self.dits and not self._dit_loadable(name):
                raise GenerationError(self._not_on_disk("model", name, [m.name for m in dits_on_disk(self.options.checkpoint_dir)]))
            self._load_into(request.slot, name)
        self._touch(name)
        loaded_lm = None
        if request.init_llm:
            # A request names a folder under the checkpoints; the configured LM may be a path.
            source = folder_name(request.lm_model_path) if request.lm_model_path else self.options.lm_name
            if self.planner is None or folder_name(source) != self.lm_model:
                if not self._lm_loadable(source):
                    raise GenerationError(self._not_on_disk("5Hz LM", folder_name(source),
                                                            list(lms_on_disk(self.options.checkpoint_dir))))
                self._load_lm(source)
            loaded_lm = self.lm_model
        return ModelResult(slot=request.slot, loaded_model=name, loaded_lm_model=loaded_lm)

    def reinitialize(self) -> ModelResult:
        """POST /v1/reinitialize: load again the LM that should be loaded but is not (its load
        failed, or it was never loaded); the DiTs in the slots are loaded already."""
        reloaded: list[str] = []
        if self.planner is None and self.options.lm_mode != "off" and self.options.checkpoint_dir is not None:
            source = self.options.lm_name
            if self._lm_loadable(source):
                try:
                    self._load_lm(source)
                    reloaded.append("LLM")
                except GenerationError as error:
                    log.warning("Reinitialize: %s", error)
        return ModelResult(reloaded=reloaded)

    # --- Loading ----------------------------------------------------------------------

    def _touch(self, name: str) -> DitCheckpoint:
        self._used[name] = next(self._clock)
        return self.dits[name]

    def _slot_for_on_demand(self) -> int:
        """A free slot, else the least recently used one but the primary (one slot: the primary)."""
        for index, name in enumerate(self.slots):
            if name is None:
                return index + 1
        if len(self.slots) == 1:
            return 1
        others = range(1, len(self.slots))
        return 1 + min(others, key=lambda index: self._used.get(self.slots[index], -1))

    def _dit_loadable(self, name: str) -> bool:
        root = self.options.checkpoint_dir
        if root is None or not name:
            return False
        return is_dit_folder(root / name) or (self.options.download and name in DIT_NAMES)

    def _lm_loadable(self, source: str) -> bool:
        """A folder name under the checkpoints (or one to fetch), or the configured LM's path."""
        root, name = self.options.checkpoint_dir, folder_name(source)
        if root is None or not name:
            return False
        return (is_lm_folder(root / name) or (source != name and is_lm_folder(Path(source)))
                or (self.options.download and name in LM_MODEL_NAMES))

    @staticmethod
    def _not_on_disk(what: str, name: str, on_disk: list[str]) -> str:
        return f"{what} {name!r} is not on this server; on disk: {', '.join(on_disk) or 'none'}"

    def _fetch(self, name: str, present: Callable[[Path], bool]) -> Path:
        folder = self.options.checkpoint_dir / name
        if not present(folder):
            try:
                download_model(name, self.options.checkpoint_dir)
            except DownloadError as error:
                raise GenerationError(str(error)) from None
        return folder

    def _load_into(self, slot: int, name: str) -> None:
        """Load DiT ``name`` into ``slot``; the model there goes once the new one is loaded."""
        folder = self._fetch(name, is_dit_folder)
        if name not in self.dits:
            log.info("Loading DiT %s into slot %d", name, slot)
            try:
                dit = load_dit(folder, self.device, self.dtype, self.options.policy)
            except CheckpointError as error:
                log.error("Loading DiT %s failed: %s", name, error)
                raise GenerationError(f"model {name!r} could not be loaded; the server log has the details") from None
            self._adopt(dit)
        previous, self.slots[slot - 1] = self.slots[slot - 1], name
        if previous and previous != name and previous not in self.slots:
            self._drop(previous)
        self._changed()

    def _adopt(self, dit: DitCheckpoint) -> None:
        """Make a loaded DiT ready to serve: attention backend, compilation, its placement."""
        if self.options.flash_attention:
            use_flash_attention(dit.transformer, dit.name)
        if self.options.compile_model:
            # Compiled in place (nn.Module.compile): still the same module with its config.
            dit.transformer.compile()
            log.info("DiT %s compiles at its first step (ACESTEP_COMPILE_MODEL)", dit.name)
        self.placement.register(dit_unit(dit.name), DIT, list(dit.modules.values()))
        self.dits[dit.name] = dit

    def _drop(self, name: str) -> None:
        log.info("Unloading DiT %s", name)
        self.placement.forget(dit_unit(name))
        self.dits.pop(name, None)
        self._used.pop(name, None)
        _free_memory(self.device)

    def _load_lm(self, source: str) -> None:
        """Load the LM ``source`` (a folder name, or the configured path); the loaded one goes
        only once the new one is loaded."""
        if folder_name(source) == source:
            self._fetch(source, is_lm_folder)
        options = self.options
        log.info("Loading the 5 Hz LM %s", folder_name(source))
        planner, error = load_planner(options.checkpoint_dir, source, mode="on", backend=options.lm_backend,
                                      device=options.lm_device or self.device, duration_max=options.lm_duration_max,
                                      limits=options.lm_limits, kv_cache=options.lm_kv_cache,
                                      compile=options.lm_compile)
        if planner is None:
            raise GenerationError(error or f"the 5 Hz LM {folder_name(source)!r} could not be loaded")
        self.placement.forget(LM_UNIT)
        self.planner = None
        _free_memory(self.device)
        self._adopt_lm(planner)
        self.lm_model, self.lm_error = planner.model_name, None
        self._changed()

    def _adopt_lm(self, planner: LMPlanner) -> None:
        self.planner = planner
        model = getattr(planner.backend, "model", None)
        if isinstance(model, torch.nn.Module):  # the transformers backend; vllm keeps its own memory
            self.placement.register(LM_UNIT, LM, [model])
        elif self.options.policy.lm:
            log.info("ACESTEP_LM_OFFLOAD_TO_CPU has no effect on the %s backend", type(planner.backend).__name__)

    def _changed(self) -> None:
        for watcher in list(self.watchers):
            try:
                watcher()
            except Exception:  # noqa: BLE001 - a watcher's failure must not fail the load
                log.exception("A model-change watcher failed")


class SlotBacked:
    """What an engine reads from its ModelSlots, under the names the engine always had
    (``dits``, ``model_names``, ``default_model``, ``planner``, ``lm_model``, ``lm_error``); a
    copy of the engine gets a slot table of its own, so it loads and swaps models without
    changing what the original serves."""

    slots: ModelSlots

    def __copy__(self):
        twin = object.__new__(type(self))
        twin.__dict__.update(self.__dict__)
        twin.slots = copy.copy(self.slots)
        twin.placement = twin.slots.placement
        return twin

    @property
    def dits(self) -> dict[str, DitCheckpoint]:
        return self.slots.dits

    @dits.setter
    def dits(self, dits: dict[str, DitCheckpoint]) -> None:
        self.slots.replace_dits(dits)

    model_names = property(lambda self: self.slots.names)
    default_model = property(lambda self: self.slots.primary)

    @property
    def planner(self) -> LMPlanner | None:
        return self.slots.planner

    @planner.setter
    def planner(self, planner: LMPlanner | None) -> None:
        self.slots.planner = planner

    @property
    def lm_model(self) -> str:
        return self.slots.lm_model

    @lm_model.setter
    def lm_model(self, name: str) -> None:
        self.slots.lm_model = name

    @property
    def lm_error(self) -> str | None:
        return self.slots.lm_error

    @lm_error.setter
    def lm_error(self, error: str | None) -> None:
        self.slots.lm_error = error


def _free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def load_dit(folder: Path, device: torch.device, dtype: torch.dtype, policy: OffloadPolicy) -> DitCheckpoint:
    """A DiT read straight onto the CPU when it waits there (a small GPU never holds two at
    once), its silence latent on the device (the engine reads it directly)."""
    target = torch.device("cpu") if policy.dit else torch.device(device)
    dit = load_dit_checkpoint(folder, target, dtype)
    if target != torch.device(device):
        dit.silence_latent = dit.silence_latent.to(device)
    return dit
