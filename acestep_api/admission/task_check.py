"""Whether the chosen model can run a request's task, and whether the task has its source."""

from __future__ import annotations

from acestep_api.admission.adapter_check import check_adapter
from acestep_api.dialects.coercion import InvalidField
from acestep_api.engine.disk_models import rescanned
from acestep_api.engine.request import SOURCE_TASK_TYPES, GenerationRequest
from acestep_api.engine.served import ServedModels


def check_model_supports(generation: GenerationRequest, served: ServedModels) -> None:
    """Refuse at once a task the chosen model cannot run, naming the models that can."""
    problem = served.task_problem(generation.task_type, generation.model)
    if problem:
        raise InvalidField("task_type", problem)


def check_models_named(generation: GenerationRequest, served: ServedModels) -> None:
    """Refuse at once a `model` or `lm_model_path` the server neither has loaded nor may load for
    the job (on disk, with ACESTEP_ON_DEMAND_MODEL_LOAD), naming those on disk."""
    for field, problem_of in (("model", ServedModels.model_problem), ("lm_model_path", ServedModels.lm_problem)):
        value = getattr(generation, field)
        if problem_of(served, value) is None:
            continue
        problem = problem_of(rescanned(served), value)  # a folder added since the last load counts
        if problem:
            raise InvalidField(field, problem)


def check_task(generation: GenerationRequest, served: ServedModels) -> None:
    """Refuse at once what the chosen model cannot run, what lacks its source audio, or an
    adapter that is not there."""
    check_model_supports(generation, served)
    check_adapter(generation, served)
    task = generation.task_type
    # A cover without a source falls back to text2music (official); the others cannot run.
    if task in SOURCE_TASK_TYPES and not generation.src_audio_path:
        raise InvalidField("src_audio",
                           f"task_type {task!r} needs source audio: upload src_audio or set src_audio_path")
    for mode in ("extract_codes_only", "full_analysis_only"):
        if getattr(generation, mode) and not generation.src_audio_path:
            raise InvalidField("src_audio", f"{mode} needs source audio: upload src_audio or set src_audio_path")
