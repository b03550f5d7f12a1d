"""The Prometheus metrics of one server process (docs/operations.md lists them), every name
prefixed ``acestep_``.

`ServerMetrics` owns a registry of its own (an app in tests is one of many in the process, so
the global registry would collide) and is the queue's observer (jobs/events.py): it counts jobs
submitted and ended, times their wait, their run and their stages. The HTTP layer counts
requests through it (server/request_metrics.py). The queue's length and oldest job's age are read
at scrape time, as is the GPU's memory: only when torch is already imported and CUDA is in use
(this module never imports torch).
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from acestep_api.engine.request import GenerationResult, Timings
from acestep_api.engine.served import ServedModels
from acestep_api.jobs.events import Outcome
from acestep_api.jobs.models import Job, JobKind

if TYPE_CHECKING:
    from acestep_api.jobs.backend import JobBackend

log = logging.getLogger(__name__)

# No `<name>_created` series beside each counter and histogram: Prometheus stores them as one
# more gauge per label set, and no panel reads them. (A switch of prometheus_client's, for the process.)
disable_created_metrics()

# Request latency: milliseconds for the reads, up to the synchronous routes' ten minutes.
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
# Job and stage times: a tenth of a second (a short LM phase) to half an hour (a long song).
JOB_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0)
# Jobs and items in one batched DiT call: 1 to a few times ACESTEP_BATCH_MAX_ITEMS' default of 8.
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64)
# The phases of Timings a job is timed by; `total` is acestep_job_duration_seconds.
STAGES = tuple(field.name for field in dataclasses.fields(Timings) if field.name != "total")
# The route label of a request no route answers (bounded: never the raw path).
UNMATCHED_ROUTE = "unmatched"
# The model label before the engine is known (jobs recovered at start-up are replayed once it is).
UNKNOWN_MODEL = "unknown"


class ServerMetrics:
    """Implements jobs.events.JobEvents; `attach` hands it the queue and what the engine serves
    once the app has started them."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.queue: JobBackend | None = None
        self.served: ServedModels | None = None
        self._early: list[tuple[Job, Outcome]] = []  # jobs ended before attach (recovery)
        self._lock = threading.Lock()
        registry = self.registry
        self.http_requests = Counter(
            "acestep_http_requests", "HTTP requests answered, by method, route template and status.",
            ["method", "route", "status"], registry=registry)
        self.http_duration = Histogram(
            "acestep_http_request_duration_seconds", "Time to answer an HTTP request, by method and route template.",
            ["method", "route"], buckets=HTTP_BUCKETS, registry=registry)
        job_labels = ["api", "kind", "model"]
        self.jobs_submitted = Counter("acestep_jobs_submitted", "Jobs accepted into the queue.", job_labels,
                                      registry=registry)
        self.jobs_succeeded = Counter("acestep_jobs_succeeded", "Jobs that succeeded.", job_labels, registry=registry)
        self.jobs_failed = Counter(
            "acestep_jobs_failed",
            "Jobs that failed, by reason: cancelled, crashed, generation_error or internal.",
            [*job_labels, "reason"], registry=registry)
        self.job_wait = Histogram("acestep_job_wait_seconds", "Time a job waited in the queue before it started.",
                                  job_labels, buckets=JOB_BUCKETS, registry=registry)
        self.job_duration = Histogram(
            "acestep_job_duration_seconds", "Time a job ran, from its start to its end, by outcome.",
            [*job_labels, "outcome"], buckets=JOB_BUCKETS, registry=registry)
        self.stage_seconds = Histogram(
            "acestep_job_stage_seconds", "Time a succeeded generation job spent in each stage.",
            ["stage", "model"], buckets=JOB_BUCKETS, registry=registry)
        # Per API key name (bounded by the keys file); jobs of a server without auth are not in them.
        self.key_jobs_submitted = Counter("acestep_key_jobs_submitted", "Jobs accepted into the queue, by API key name.",
                                          ["key"], registry=registry)
        self.key_audio_seconds = Counter(
            "acestep_key_audio_seconds", "Audio seconds charged to an API key's daily quota by its accepted jobs.",
            ["key"], registry=registry)
        self.key_refusals = Counter(
            "acestep_key_refusals", "Requests refused for an API key's limit: requests_per_minute, jobs_per_day, "
            "audio_seconds_per_day, max_waiting (429), models or routes (403).", ["key", "limit"], registry=registry)
        self.batch_jobs = Histogram(
            "acestep_batch_jobs", "Jobs claimed to share one DiT call, per claim of a job that can be batched.",
            ["model"], buckets=BATCH_BUCKETS, registry=registry)
        self.batch_items = Histogram(
            "acestep_batch_items", "Batch items (the sum of batch_size) of those jobs together.",
            ["model"], buckets=BATCH_BUCKETS, registry=registry)
        registry.register(QueueCollector(self))
        registry.register(GpuMemoryCollector())

    def attach(self, queue: "JobBackend", served: ServedModels) -> None:
        with self._lock:
            self.queue, self.served = queue, served
            early, self._early = self._early, []
        for job, outcome in early:
            self.job_ended(job, outcome)

    # --- HTTP ---------------------------------------------------------------------------

    def request_answered(self, method: str, route: str, status: int, seconds: float) -> None:
        self.http_requests.labels(method, route, str(status)).inc()
        self.http_duration.labels(method, route).observe(seconds)

    # --- jobs (jobs.events.JobEvents) -----------------------------------------------------

    def model_of(self, job: Job) -> str:
        """The model that runs the job: one of the served or on-disk names (bounded, whatever a
        request names), the LM's for the LM-only kinds."""
        served = self.served
        if served is None:
            return UNKNOWN_MODEL
        if job.kind in (JobKind.FORMAT, JobKind.SAMPLE):
            return served.lm_model
        return served.select(job.request.model).name

    def _labels(self, job: Job) -> tuple[str, str, str]:
        return job.api.value, job.kind.value, self.model_of(job)

    def key_refused(self, key: str, limit: str) -> None:
        self.key_refusals.labels(key, limit).inc()

    def job_submitted(self, job: Job) -> None:
        self.jobs_submitted.labels(*self._labels(job)).inc()
        if job.key_name is not None:
            self.key_jobs_submitted.labels(job.key_name).inc()
            self.key_audio_seconds.labels(job.key_name).inc(job.audio_seconds)

    def job_started(self, job: Job) -> None:
        if job.started_at is not None and job.created_at:
            self.job_wait.labels(*self._labels(job)).observe(max(0.0, job.started_at - job.created_at))

    def batch_claimed(self, jobs: list[Job], items: int) -> None:
        model = self.model_of(jobs[0])
        self.batch_jobs.labels(model).observe(len(jobs))
        self.batch_items.labels(model).observe(items)

    def job_ended(self, job: Job, outcome: Outcome) -> None:
        with self._lock:
            if self.served is None:
                self._early.append((job, outcome))
                return
        labels = self._labels(job)
        if outcome.failed:
            self.jobs_failed.labels(*labels, outcome.value).inc()
        else:
            self.jobs_succeeded.labels(*labels).inc()
        if job.started_at is not None and job.finished_at is not None:
            self.job_duration.labels(*labels, outcome.value).observe(max(0.0, job.finished_at - job.started_at))
        if outcome is Outcome.SUCCEEDED and isinstance(job.result, GenerationResult):
            timings = job.result.timings
            for stage in STAGES:
                seconds = getattr(timings, stage)
                if seconds is not None:
                    self.stage_seconds.labels(stage, labels[2]).observe(max(0.0, seconds))


class QueueCollector(Collector):
    """The queue's state when Prometheus scrapes: nothing to keep up to date between scrapes."""

    def __init__(self, metrics: ServerMetrics):
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        queue = self.metrics.queue
        if queue is None:
            return
        oldest = queue.oldest_waiting_since()
        yield GaugeMetricFamily("acestep_queue_length", "Jobs waiting in the queue (not the running one).",
                                value=queue.size)
        yield GaugeMetricFamily("acestep_queue_capacity", "Waiting jobs accepted before submissions get 429.",
                                value=queue.maxsize)
        yield GaugeMetricFamily("acestep_queue_oldest_age_seconds",
                                "Seconds the job first in line has waited; 0 when none waits.",
                                value=0.0 if oldest is None else max(0.0, time.time() - oldest))
        yield GaugeMetricFamily("acestep_jobs_running", "Jobs started and not ended yet.", value=queue.running_count)


GPU_METRICS = {
    "acestep_gpu_memory_allocated_bytes": ("GPU memory held by tensors now.", "memory_allocated"),
    "acestep_gpu_memory_peak_bytes": ("Most GPU memory held by tensors since the process started.",
                                      "max_memory_allocated"),
    "acestep_gpu_memory_reserved_bytes": ("GPU memory the caching allocator holds (in use or cached).",
                                          "memory_reserved"),
}


class GpuMemoryCollector(Collector):
    """Per CUDA device, when this process uses CUDA: torch already imported (by the engine) and
    its CUDA state initialised. Nothing otherwise, and never an import of torch."""

    def collect(self) -> Iterator[Metric]:
        torch = sys.modules.get("torch")
        cuda = getattr(torch, "cuda", None)
        try:
            if cuda is None or not cuda.is_available() or not cuda.is_initialized():
                return
            families = {name: GaugeMetricFamily(name, text, labels=["device"])
                        for name, (text, _) in GPU_METRICS.items()}
            for index in range(cuda.device_count()):
                for name, (_, reader) in GPU_METRICS.items():
                    families[name].add_metric([str(index)], float(getattr(cuda, reader)(index)))
        except Exception:  # noqa: BLE001 - a broken driver must not take /metrics down
            log.debug("Reading the GPU's memory failed", exc_info=True)
            return
        yield from families.values()
