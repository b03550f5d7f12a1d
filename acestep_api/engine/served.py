"""What an engine serves, as plain data: its DiT models and their tasks, the 5 Hz LM or why
there is none, and the checkpoints on disk that could be loaded. The HTTP layer decides with
this alone (which model a request gets, whether it can run the task, whether a model it names
can be loaded, whether the LM routes may queue work), so it never holds a torch object, and a
worker elsewhere can send it as JSON. The engine hands out a new one whenever what is loaded
changes (engine/model_slots.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ON_DEMAND_HINT = "load it with POST /v1/init, or start the server with ACESTEP_ON_DEMAND_MODEL_LOAD=true"


@dataclass(frozen=True)
class ServedModel:
    name: str
    is_turbo: bool
    supported_task_types: tuple[str, ...]


def folder_name(name_or_path: str) -> str:
    """The folder a request's model name or path stands for ("x/acestep-v15-base" ->
    "acestep-v15-base"): always a plain name directly under the checkpoints, "" for "." or ".."."""
    name = Path(name_or_path.strip().rstrip("/\\")).name
    return "" if name in (".", "..") else name


@dataclass(frozen=True)
class ServedModels:
    models: tuple[ServedModel, ...]  # the loaded DiTs, the primary (slot 1) first
    lm_model: str  # the LM's folder name, also when it is not loaded
    lm_available: bool = False
    lm_error: str | None = None  # why the LM is not there, when it was asked for and failed
    lm_backend: str = "transformers"  # the loaded LM's backend
    # Whether the LM samples with classifier-free guidance (lm_cfg_scale); vllm does not.
    lm_guidance: bool = True
    is_demo: bool = False
    device: str = "cpu"
    lora_dir: Path | None = None  # the adapters folder: names a request may give as lora_name
    # The checkpoint folders on disk, loaded or not (the DiTs with the tasks their config allows).
    dit_on_disk: tuple[ServedModel, ...] = ()
    lm_on_disk: tuple[str, ...] = ()
    # A request may name a model that is not loaded: the job loads it (ACESTEP_ON_DEMAND_MODEL_LOAD).
    on_demand: bool = False
    # Official DiT and LM folders a load may fetch when they are missing (empty: no downloads).
    downloadable_dits: tuple[str, ...] = ()
    downloadable_lms: tuple[str, ...] = ()
    slots: tuple[str | None, ...] = ()  # the DiT in each slot, slot 1 first
    initialized: bool = True  # False until the models are loaded (ACESTEP_NO_INIT)
    checkpoint_dir: str | None = None  # where the folders on disk are (engine/disk_models.py rescans it)

    @property
    def default_model(self) -> str:
        return self.models[0].name if self.models else (self.slots[0] if self.slots and self.slots[0] else "")

    @property
    def model_names(self) -> list[str]:
        return [model.name for model in self.models]

    @property
    def loaded_lm(self) -> str | None:
        return self.lm_model if self.lm_available else None

    def _on_disk(self, name: str) -> ServedModel | None:
        return next((model for model in self.dit_on_disk if model.name == name), None)

    def select(self, requested: str | None) -> ServedModel:
        """The model a request names (by folder name or path): loaded, else on disk; unknown or
        none -> the primary."""
        if requested:
            for candidate in (requested, folder_name(requested)):
                for model in self.models:
                    if model.name == candidate:
                        return model
            on_disk = self._on_disk(folder_name(requested))
            if on_disk is not None and self.on_demand:
                return on_disk
        if self.models:
            return self.models[0]
        return self._on_disk(self.default_model) or ServedModel(self.default_model, False, ())

    def model_problem(self, requested: str | None) -> str | None:
        """Why a request's `model` cannot be served, or None: loaded, or loadable by its job."""
        if not requested or requested in self.model_names or folder_name(requested) in self.model_names:
            return None
        name = folder_name(requested)
        if self._on_disk(name) is not None:
            return None if self.on_demand else f"model {name!r} is on disk but not loaded; {ON_DEMAND_HINT}"
        if self.on_demand and name in self.downloadable_dits:
            return None  # the job fetches it, or fails saying why
        on_disk = ", ".join(model.name for model in self.dit_on_disk) or "none"
        return f"model {name!r} is not on this server; DiT models on disk: {on_disk}"

    def lm_problem(self, requested: str | None) -> str | None:
        """Why a request's `lm_model_path` cannot be served, or None: loaded, or loadable by its job."""
        if not requested:
            return None
        name = folder_name(requested)
        if self.lm_available and name == self.lm_model:
            return None
        if name in self.lm_on_disk:
            return None if self.on_demand else f"5Hz LM {name!r} is on disk but not loaded; {ON_DEMAND_HINT}"
        if self.on_demand and name in self.downloadable_lms:
            return None
        on_disk = ", ".join(self.lm_on_disk) or "none"
        return f"5Hz LM {name!r} is not on this server; LM models on disk: {on_disk}"

    def able_to_run(self, task_type: str) -> list[str]:
        """The names of the models that can run `task_type`."""
        return [model.name for model in self.models if task_type in model.supported_task_types]

    def task_problem(self, task_type: str, requested_model: str | None, *, name_its_tasks: bool = False) -> str | None:
        """Why the model a request names cannot run its task (naming the models that can, and
        with `name_its_tasks` the tasks it runs), or None: the one capability check, for the
        admission checks and the engine alike."""
        model = self.select(requested_model)
        if task_type in model.supported_task_types or not model.supported_task_types:
            return None
        able = self.able_to_run(task_type)
        where = f"models that support it: {', '.join(able)}" if able else "no model on this server supports it"
        its_tasks = f"it supports: {', '.join(model.supported_task_types)}; " if name_its_tasks else ""
        return f"task_type {task_type!r} is not supported by model {model.name!r}; {its_tasks}{where}"
