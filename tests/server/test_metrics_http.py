"""GET /metrics over HTTP: the request counters by route template, the job counters by dialect,
kind, model and outcome, the stage times of a real generation job, the queue's gauges read at
scrape time, the GPU's memory when CUDA is in use, the key (ACESTEP_PROTECT_METRICS), and
docs/operations.md and the Grafana dashboard naming only metrics that exist."""

from __future__ import annotations

import json
import re
import time
import types
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from acestep_api.engine.request import GenerationError, GenerationRequest
from acestep_api.jobs.models import Job, JobStatus
from acestep_api.jobs.store import JobStore
from acestep_api.metrics import GPU_METRICS, STAGES
from acestep_api.settings import Settings
from tests.server.conftest import serve, wait_finished

pytestmark = pytest.mark.anyio

KEY = "sesame"
DOCS = Path(__file__).resolve().parents[2] / "docs"
SUFFIXES = ("_total", "_bucket", "_count", "_sum", "_created")


class Scrape:
    """One /metrics answer, parsed back with prometheus_client's own parser."""

    def __init__(self, text: str):
        self.families = {family.name: family for family in text_string_to_metric_families(text)}

    def value(self, sample_name: str, **labels) -> float:
        """The sum of the samples named `sample_name` whose labels include `labels` (0 if none)."""
        return sum(sample.value for family in self.families.values() for sample in family.samples
                   if sample.name == sample_name and labels.items() <= sample.labels.items())

    def has(self, sample_name: str, **labels) -> bool:
        return any(sample.name == sample_name and labels.items() <= sample.labels.items()
                   for family in self.families.values() for sample in family.samples)


async def scrape(client, **headers) -> Scrape:
    answer = await client.get("/metrics", headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    return Scrape(answer.text)


def keyed_settings(tmp_path: Path, **changes) -> Settings:
    return Settings(_env_file=None, output_dir=tmp_path / "outputs", checkpoint_dir=tmp_path / "none",
                    api_key=KEY, **changes)


class FailingEngine:
    """The tiny engine, except that the prompt "refuse" ends in a GenerationError and "boom"
    in an exception of no known kind, whichever of its entry points the worker calls."""

    def __init__(self, inner):
        self._inner = inner

    def __getattr__(self, name):
        return getattr(self._inner, name)

    @staticmethod
    def _check(request):
        if request.prompt == "refuse":
            raise GenerationError("this model cannot do that")
        if request.prompt == "boom":
            raise RuntimeError("a bug")

    def generate(self, request, progress):
        self._check(request)
        return self._inner.generate(request, progress)

    def render(self, request, progress):  # the worker's way in when the engine has it
        self._check(request)
        return self._inner.render(request, progress)


async def submit(client, prompt: str = "calm piano") -> str:
    answer = await client.post("/release_task", json={"prompt": prompt, "audio_duration": 10})
    assert answer.status_code == 200, answer.text
    return answer.json()["data"]["task_id"]


# --- a real job --------------------------------------------------------------------------


async def test_a_generation_job_shows_in_the_request_job_and_stage_metrics(live):
    app, client = live
    task_id = await submit(client)
    job = await wait_finished(app, task_id)
    assert job.status is JobStatus.SUCCEEDED, job.error
    await client.post("/query_result", json={"task_id_list": [task_id]})
    metrics = await scrape(client)
    model = app.state.served.default_model

    assert metrics.value("acestep_http_requests_total", method="POST", route="/release_task", status="200") == 1
    assert metrics.value("acestep_http_requests_total", method="POST", route="/query_result", status="200") == 1
    assert metrics.value("acestep_http_request_duration_seconds_count", method="POST", route="/release_task") == 1
    assert metrics.value("acestep_http_request_duration_seconds_sum", route="/release_task") > 0
    labels = {"api": "release_task", "kind": "generation", "model": model}
    assert metrics.value("acestep_jobs_submitted_total", **labels) == 1
    assert metrics.value("acestep_jobs_succeeded_total", **labels) == 1
    assert not metrics.has("acestep_jobs_failed_total")
    assert metrics.value("acestep_job_wait_seconds_count", **labels) == 1
    assert metrics.value("acestep_job_duration_seconds_count", **labels, outcome="succeeded") == 1

    timed = {stage for stage in STAGES if getattr(job.result.timings, stage) is not None}
    assert {"text_encoding", "diffusion", "decoding", "encoding"} <= timed
    for stage in STAGES:
        count = metrics.value("acestep_job_stage_seconds_count", stage=stage, model=model)
        assert count == (1 if stage in timed else 0), stage
    # Every sample of a stage's histogram: the +Inf bucket holds the one job.
    assert metrics.value("acestep_job_stage_seconds_bucket", stage="diffusion", le="+Inf") == 1

    assert metrics.value("acestep_queue_length") == 0
    assert metrics.value("acestep_queue_oldest_age_seconds") == 0
    assert metrics.value("acestep_queue_capacity") == app.state.settings.queue_maxsize
    assert metrics.has("acestep_jobs_running")
    # Not on CUDA here: no GPU family at all.
    assert not any(name.startswith("acestep_gpu_") for name in metrics.families)
    # The scrape before this one counted too.
    assert metrics.value("acestep_http_requests_total", route="/metrics") == 0
    assert (await scrape(client)).value("acestep_http_requests_total", route="/metrics", status="200") == 1


async def test_routes_are_labelled_by_their_template_and_unknown_paths_by_one_word(idle):
    _, client = idle
    assert (await client.get("/v1/jobs/no-such-job")).status_code == 404
    assert (await client.get("/v1/jobs/another-one")).status_code == 404
    assert (await client.get("/no/such/path")).status_code == 404
    assert (await client.get("/release_task")).status_code == 405
    metrics = await scrape(client)
    assert metrics.value("acestep_http_requests_total", method="GET", route="/v1/jobs/{job_id}", status="404") == 2
    assert metrics.value("acestep_http_requests_total", method="GET", route="unmatched", status="404") == 1
    assert metrics.value("acestep_http_requests_total", method="GET", route="/release_task", status="405") == 1
    routes = {sample.labels["route"] for sample in metrics.families["acestep_http_requests"].samples}
    assert not any("no-such-job" in route or "/no/such" in route for route in routes)


# --- outcomes ---------------------------------------------------------------------------


async def test_waiting_jobs_show_in_the_queue_gauges_and_a_cancelled_one_counts_as_cancelled(idle):
    app, client = idle
    first = await submit(client, "first")
    await submit(client, "second")
    await submit(client, "third")
    time.sleep(0.01)
    metrics = await scrape(client)
    assert metrics.value("acestep_queue_length") == 3
    assert metrics.value("acestep_jobs_running") == 0
    assert 0 < metrics.value("acestep_queue_oldest_age_seconds") < 60
    assert metrics.value("acestep_jobs_submitted_total", api="release_task", kind="generation") == 3

    answer = await client.post("/cancel_task", json={"task_id": first})
    assert answer.status_code == 200, answer.text
    metrics = await scrape(client)
    assert metrics.value("acestep_queue_length") == 2
    assert metrics.value("acestep_jobs_failed_total", api="release_task", kind="generation", reason="cancelled") == 1
    assert not metrics.has("acestep_jobs_succeeded_total")
    # It never ran: no run time, no stage times.
    assert metrics.value("acestep_job_duration_seconds_count") == 0
    assert metrics.value("acestep_job_stage_seconds_count") == 0


async def test_jobs_that_share_a_dit_call_show_in_the_batch_histograms(idle):
    app, client = idle
    body = {"audio_duration": 10, "batch_size": 1}
    ids = [(await client.post("/release_task", json={**body, "prompt": p, "audio_duration": d})).json()["data"]["task_id"]
           for p, d in (("one", 10), ("two", 10), ("longer", 20), ("three", 10))]
    app.state.worker.start()  # all four wait: one, two and three share one call, longer runs alone
    for task_id in ids:
        job = await wait_finished(app, task_id)
        assert job.status is JobStatus.SUCCEEDED, job.error
    metrics = await scrape(client)
    turbo = {"model": "acestep-v15-turbo"}
    assert metrics.value("acestep_batch_jobs_count", **turbo) == 2
    assert metrics.value("acestep_batch_jobs_sum", **turbo) == 4
    assert metrics.value("acestep_batch_jobs_bucket", **turbo, le="2.0") == 1  # longer, alone
    assert metrics.value("acestep_batch_jobs_bucket", **turbo, le="3.0") == 2
    assert metrics.value("acestep_batch_items_sum", **turbo) == 4


async def test_failures_count_by_class_and_dialect(settings, engine):
    async with serve(settings, FailingEngine(engine)) as (app, client):
        refused, broken = await submit(client, "refuse"), await submit(client, "boom")
        for task_id in (refused, broken):
            await wait_finished(app, task_id)
        legacy = await client.post("/v1/music/generate", json={"caption": "refuse"})
        await wait_finished(app, legacy.json()["job_id"])
        metrics = await scrape(client)
    assert metrics.value("acestep_jobs_failed_total", api="release_task", reason="generation_error") == 1
    assert metrics.value("acestep_jobs_failed_total", api="release_task", reason="internal") == 1
    assert metrics.value("acestep_jobs_failed_total", api="legacy", kind="generation", reason="generation_error") == 1
    assert metrics.value("acestep_jobs_submitted_total", api="legacy") == 1
    assert metrics.value("acestep_job_duration_seconds_count", outcome="internal") == 1
    assert not metrics.has("acestep_jobs_succeeded_total")


async def test_a_job_the_previous_process_died_under_counts_as_crashed(settings, engine):
    settings.output_dir.mkdir(parents=True)
    store = JobStore(settings.database_path, settings.upload_dir)
    # Started twice already: the next start fails it rather than running it a third time.
    store.add(Job(id="died-under", request=GenerationRequest(prompt="x"), status=JobStatus.RUNNING,
                  created_at=time.time() - 60, started_at=time.time() - 30, attempts=2))
    store.close()
    async with serve(settings, engine, start_worker=False) as (app, client):
        metrics = await scrape(client)
        assert app.state.queue.get("died-under").status is JobStatus.FAILED
    assert metrics.value("acestep_jobs_failed_total", api="release_task", kind="generation",
                         model=app.state.served.default_model, reason="crashed") == 1


# --- the GPU ----------------------------------------------------------------------------


async def test_gpu_memory_is_read_only_from_an_imported_torch_using_cuda(idle, monkeypatch):
    _, client = idle
    readings = {"memory_allocated": 1000, "max_memory_allocated": 4000, "memory_reserved": 8000}
    cuda = types.SimpleNamespace(is_available=lambda: True, is_initialized=lambda: True, device_count=lambda: 2,
                                 **{name: (lambda index, value=value: value + index) for name, value in readings.items()})
    monkeypatch.setitem(__import__("sys").modules, "torch", types.SimpleNamespace(cuda=cuda))
    metrics = await scrape(client)
    assert metrics.value("acestep_gpu_memory_allocated_bytes", device="0") == 1000
    assert metrics.value("acestep_gpu_memory_peak_bytes", device="1") == 4001
    assert metrics.value("acestep_gpu_memory_reserved_bytes", device="0") == 8000
    cuda.is_initialized = lambda: False  # torch is there, CUDA never used: nothing
    assert not any(name.startswith("acestep_gpu_") for name in (await scrape(client)).families)


# --- the key ----------------------------------------------------------------------------


async def test_with_a_key_metrics_need_it_unless_protect_metrics_is_false(tmp_path, engine):
    async with serve(keyed_settings(tmp_path), engine, start_worker=False) as (_, client):
        assert (await client.get("/metrics")).status_code == 401
        assert (await client.get("/metrics", headers={"authorization": "Bearer wrong"})).status_code == 401
        # Refused by the request guard before any route runs: still labelled by the route.
        for path in ("/release_task", "/v1/jobs/some-job/cancel"):
            answer = await client.post(path, json={}, headers={"authorization": "Bearer wrong"})
            assert answer.status_code == 401
        metrics = await scrape(client, authorization=f"Bearer {KEY}")
        assert metrics.value("acestep_http_requests_total", route="/metrics", status="401") == 2
        assert metrics.value("acestep_http_requests_total", method="POST", route="/release_task", status="401") == 1
        assert metrics.value("acestep_http_requests_total", route="/v1/jobs/{job_id}/cancel", status="401") == 1
        spec = (await client.get("/openapi.json", headers={"authorization": f"Bearer {KEY}"})).json()
        assert spec["paths"]["/metrics"]["get"]["security"]
    async with serve(keyed_settings(tmp_path / "open", protect_metrics=False), engine,
                     start_worker=False) as (_, client):
        await scrape(client)
        spec = (await client.get("/openapi.json", headers={"authorization": f"Bearer {KEY}"})).json()
        operation = spec["paths"]["/metrics"]["get"]
        assert "security" not in operation and "x-acestep-guarded-by" not in operation
        assert spec["paths"]["/v1/stats"]["get"]["security"]


async def test_protect_metrics_reads_the_environment(monkeypatch):
    monkeypatch.setenv("ACESTEP_PROTECT_METRICS", "false")
    assert Settings(_env_file=None).protect_metrics is False
    monkeypatch.delenv("ACESTEP_PROTECT_METRICS")
    assert Settings(_env_file=None).protect_metrics is True


# --- the docs ---------------------------------------------------------------------------


def family_name(sample_name: str) -> str:
    for suffix in SUFFIXES:
        if sample_name.endswith(suffix):
            return sample_name[: -len(suffix)]
    return sample_name


def documented_names() -> set[str]:
    """The metric names docs/operations.md lists (the first column of its table)."""
    text = (DOCS / "operations.md").read_text(encoding="utf-8")
    return {family_name(name) for name in re.findall(r"^\| `(acestep_\w+)`", text, re.MULTILINE)}


def dashboard_names() -> set[str]:
    dashboard = json.loads((DOCS / "grafana-dashboard.json").read_text(encoding="utf-8"))
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    assert expressions
    return {family_name(name) for expr in expressions for name in re.findall(r"\bacestep_\w+", expr)}


async def test_the_docs_and_the_dashboard_name_exactly_the_metrics_exposed(live):
    app, client = live
    await wait_finished(app, await submit(client))
    await client.post("/v1/music/generate", json={"caption": "x"})
    exposed = set((await scrape(client)).families) | set(GPU_METRICS)  # no CUDA here
    documented = documented_names()
    assert documented == exposed, (f"documented, not exposed: {sorted(documented - exposed)}; "
                                   f"exposed, not documented: {sorted(exposed - documented)}")
    missing = dashboard_names() - exposed
    assert not missing, f"the dashboard queries metrics that do not exist: {sorted(missing)}"
