"""One serverless job, start to answer: read the input in its dialect (`dialects/runpod.py`),
load the models once per worker (on the first job that needs them), generate in this thread,
answer in the dialect.

Every outcome is a dict: a success in the dialect's shape, or `{"error": ...}` (which the
runpod SDK reports as a failed job). Nothing raised here takes the worker down.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import uuid
from typing import Any, Callable

from acestep_api.dialects import runpod
from acestep_api.dialects.coercion import InvalidField
from acestep_api.dialects.runpod import ReleaseTaskInput, V1Input
from acestep_api.engine.request import GenerationRequest
from acestep_api.engine.startup import build_engine
from acestep_api.jobs.worker import describe_failure
from acestep_api.admission.audio_check import check_audio_files
from acestep_api.admission.audio_paths import resolve_request_audio
from acestep_api.admission.lm_check import fit_lm_guidance
from acestep_api.admission.task_check import check_task
from acestep_api.serverless.cleanup import prune_audio
from acestep_api.serverless.outputs import v1_wav
from acestep_api.serverless.progress import GenerationTimeout, ProgressReporter
from acestep_api.settings import ServerlessSettings
from acestep_api.settings import Settings

log = logging.getLogger(__name__)

NOT_AN_OBJECT = "Input must be a JSON object"
LOADING = "loading models"


class ServerlessWorker:
    def __init__(
        self,
        settings: Settings | None = None,
        options: ServerlessSettings | None = None,
        # build_engine loads torch and the models with the first job that needs them, not at start.
        load: Callable[[Settings], Any] = build_engine,
    ):
        self.settings = settings or Settings()
        self.options = options or ServerlessSettings()
        self._load = load
        self._engine = None
        self._load_lock = threading.Lock()
        # One job at a time on the accelerator, even if the platform runs jobs concurrently.
        self._generate_lock = threading.Lock()

    def engine(self, notify: Callable[[str], None]):
        with self._load_lock:
            if self._engine is None:
                notify(LOADING)
                self._engine = self._load(self.settings)
                log.info("Serving models %s", ", ".join(self._engine.model_names))
            return self._engine

    def run(self, fields: Any, notify: Callable[[str], None]) -> dict:
        """The answer to one job's `input`; `notify` sends a progress message to the platform."""
        if not isinstance(fields, dict):
            return runpod.render_failure(NOT_AN_OBJECT)
        try:
            job = runpod.parse(fields, self.settings, self.options)
        except InvalidField as error:
            return runpod.render_failure(str(error))

        try:
            engine = self.engine(notify)
        except Exception as error:  # noqa: BLE001 - reported as this job's error; the next job retries
            log.exception("Loading the models failed")
            return runpod.render_failure(f"Loading the models failed: {describe_failure(error)}")

        if isinstance(job, ReleaseTaskInput):
            try:
                job = dataclasses.replace(job, request=self._checked(job.request, engine))
            except InvalidField as error:
                return runpod.render_failure(str(error))
            return self._run_release_task(job, engine, notify)
        return self._run_v1(job, engine, notify)

    def _checked(self, request: GenerationRequest, engine) -> GenerationRequest:
        """What /release_task checks before it queues a job: the task suits the model, and the
        audio files named lie in a readable folder (docs/security.md) and can be decoded."""
        served = engine.served()
        check_task(request, served)
        request = fit_lm_guidance(request, served)
        request = resolve_request_audio(request, self.settings.upload_dir, self.settings.input_dirs,
                                        allow_temp=self.settings.allow_temp_paths,
                                        private=self.settings.private_files)
        check_audio_files(request, self.settings.max_decoded_audio_mb)
        return request

    def _generate(self, engine, request: GenerationRequest, timeout: float, notify: Callable[[str], None]):
        with self._generate_lock:
            prune_audio(self.settings.audio_dir, self.settings.retention_days)
            reporter = ProgressReporter(notify, self.options.progress_interval, timeout)
            return engine.generate(request, reporter)

    def _run_release_task(self, job: ReleaseTaskInput, engine, notify: Callable[[str], None]) -> dict:
        task_id = str(uuid.uuid4())
        started_at = time.time()
        try:
            result = self._generate(engine, job.request, job.timeout_seconds, notify)
        except GenerationTimeout as error:
            return runpod.render_failure(str(error))
        except Exception as error:  # noqa: BLE001 - any failure ends this job, not the worker
            log.warning("Job %s failed", task_id, exc_info=True)
            return runpod.render_failure(f"Generation failed: {describe_failure(error)}")
        return runpod.render_release_task(task_id, job, result, started_at)

    def _run_v1(self, job: V1Input, engine, notify: Callable[[str], None]) -> dict:
        started = time.perf_counter()
        try:
            result = self._generate(engine, job.request, job.timeout_seconds, notify)
            generation_time = time.perf_counter() - started
            return runpod.render_v1(job, v1_wav(result.audio_paths[0], job.duration), result, generation_time)
        except GenerationTimeout as error:
            message = str(error)
        except Exception as error:  # noqa: BLE001 - any failure ends this job, not the worker
            log.warning("v1 job failed", exc_info=True)
            message = f"Generation failed: {describe_failure(error)}"
        return runpod.render_v1_failure(message, time.perf_counter() - started)
