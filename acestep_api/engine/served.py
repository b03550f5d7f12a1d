"""What an engine serves, as plain data: its DiT models and their tasks, and the 5 Hz LM or why
there is none. The HTTP layer decides with this alone (which model a request gets, whether it
can run the task, whether the LM routes may queue work), so it never holds a torch object, and
a worker elsewhere can send it as JSON.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ServedModel:
    name: str
    is_turbo: bool
    supported_task_types: tuple[str, ...]


@dataclass(frozen=True)
class ServedModels:
    models: tuple[ServedModel, ...]  # the primary first
    lm_model: str  # the LM's folder name, also when it is not loaded
    lm_available: bool = False
    lm_error: str | None = None  # why the LM is not there, when it was asked for and failed
    is_demo: bool = False
    device: str = "cpu"
    lora_dir: Path | None = None  # the adapters folder: names a request may give as lora_name

    @property
    def default_model(self) -> str:
        return self.models[0].name

    @property
    def model_names(self) -> list[str]:
        return [model.name for model in self.models]

    def select(self, requested: str | None) -> ServedModel:
        """The model a request names (by folder name or path); unknown or none -> the primary."""
        if requested:
            for candidate in (requested, Path(requested).name):
                for model in self.models:
                    if model.name == candidate:
                        return model
        return self.models[0]

    def able_to_run(self, task_type: str) -> list[str]:
        """The names of the models that can run `task_type`."""
        return [model.name for model in self.models if task_type in model.supported_task_types]

    def task_problem(self, task_type: str, requested_model: str | None, *, name_its_tasks: bool = False) -> str | None:
        """Why the model a request names cannot run its task (naming the models that can, and
        with `name_its_tasks` the tasks it runs), or None: the one capability check, for the
        admission checks and the engine alike."""
        model = self.select(requested_model)
        if task_type in model.supported_task_types:
            return None
        able = self.able_to_run(task_type)
        where = f"models that support it: {', '.join(able)}" if able else "no model on this server supports it"
        its_tasks = f"it supports: {', '.join(model.supported_task_types)}; " if name_its_tasks else ""
        return f"task_type {task_type!r} is not supported by model {model.name!r}; {its_tasks}{where}"
