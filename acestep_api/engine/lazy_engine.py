"""ACESTEP_NO_INIT: a server that starts without loading any model and loads them with its
first job (a generation, an LM job, POST /v1/init or /v1/reinitialize), on the worker's engine
thread like any load. Until then it reports the configured models from their folders, not
loaded (`ServedModels.initialized` False)."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Callable

from acestep_api.engine.served import ServedModels

if TYPE_CHECKING:
    from acestep_api.engine.engine import MusicEngine

LOADED_AT_FIRST_USE = "DiT/VAE/Text Encoder"


class LazyEngine:
    """Stands for the engine ``build`` makes, and makes it when a job first needs it."""

    def __init__(self, build: Callable[[], "MusicEngine"], before: ServedModels):
        self._build = build
        self._before = before
        self._engine: MusicEngine | None = None
        self._watchers: list[Callable[[ServedModels], None]] = []
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._engine is not None

    def engine(self) -> "MusicEngine":
        """The engine, loaded now if it is not yet (its watchers hear of it)."""
        with self._lock:
            if self._engine is None:
                engine = self._build()
                for watcher in self._watchers:
                    engine.watch_served(watcher)
                self._engine = engine
                for watcher in self._watchers:
                    watcher(engine.served())
            return self._engine

    def served(self) -> ServedModels:
        return self._engine.served() if self._engine is not None else self._before

    @property
    def model_names(self) -> list[str]:
        return self.served().model_names

    def watch_served(self, watcher: Callable[[ServedModels], None]) -> None:
        self._watchers.append(watcher)
        if self._engine is not None:
            self._engine.watch_served(watcher)

    def render(self, request, progress=None):
        return self.engine().render(request, progress)

    def generate(self, request, progress=None):
        return self.engine().generate(request, progress)

    def run_lm_task(self, task):
        return self.engine().run_lm_task(task)

    def run_model_task(self, task):
        first = not self.loaded
        engine = self.engine()
        result = engine.run_model_task(task)
        if first and task.action == "reinitialize":
            loaded = [LOADED_AT_FIRST_USE] + (["LLM"] if engine.lm_available else [])
            result = result.model_copy(update={"reloaded": loaded + [r for r in result.reloaded if r not in loaded]})
        return result
