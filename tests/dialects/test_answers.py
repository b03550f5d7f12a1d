"""How a job looks to clients: the official /query_result items and the legacy job view."""

import asyncio
import json
import os

import pytest

from acestep_api.dialects.legacy import job_view as legacy_job_view
from acestep_api.dialects.official import audio_url, query_result_item
from acestep_api.jobs.queue import JobQueue
from acestep_api.jobs.store import JobStore
from tests.jobs import make_request, make_result

ELEMENT_BASE_KEYS = {"file", "wave", "status", "create_time", "env", "progress", "stage"}


@pytest.fixture
def queue(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite3")
    yield JobQueue(store, avg_job_seconds=4.0)
    store.close()


def elements(item: dict) -> list[dict]:
    assert isinstance(item["result"], str)  # clients json.loads it
    return json.loads(item["result"])


def test_audio_url_percent_encodes_the_absolute_path(tmp_path):
    path = tmp_path / "api audio" / "a+b.mp3"
    url = audio_url(str(path))
    assert url.startswith("/v1/audio?path=%2F") and "/" not in url[len("/v1/audio?path="):]
    assert "%20" in url and "%2B" in url
    from urllib.parse import parse_qs, urlsplit
    assert parse_qs(urlsplit(url).query)["path"] == [str(path)]
    # A relative path is made absolute first.
    assert audio_url("x.wav") == audio_url(os.path.join(os.getcwd(), "x.wav"))


def test_unknown_id():
    assert query_result_item("nope", None, queue=None) == {"task_id": "nope", "result": "[]", "status": 0}


def test_queued_shape(queue):
    queue.submit(make_request("first"))
    job, _ = queue.submit(make_request("second"))
    item = query_result_item(job.id, job, queue, progress_text="12:00:00 | INFO | loading")
    assert item["status"] == 0 and item["task_id"] == job.id
    assert item["progress_text"] == "12:00:00 | INFO | loading"
    assert ", " in item["result"] and '": ' in item["result"]  # Python's default separators
    [element] = elements(item)
    assert element == {
        "file": "", "wave": "", "status": 0, "create_time": int(job.created_at), "env": "development",
        "prompt": "", "lyrics": "", "metas": {}, "progress": 0.0, "stage": "queued", "error": None,
        "queue_position": 2, "eta_seconds": 8.0,
    }


def test_running_shape(queue):
    queue.submit(make_request())
    job = asyncio.run(queue.next_job())
    queue.report_progress(job, 0.42, "diffusion step 3/8")
    [element] = elements(query_result_item(job.id, job, queue))
    assert ELEMENT_BASE_KEYS <= element.keys()
    assert element["status"] == 0 and element["progress"] == 0.42
    assert element["stage"] == "diffusion step 3/8" and element["error"] is None


def test_succeeded_shape_has_one_element_per_file(queue, tmp_path):
    request = make_request("dreamy synthwave, ünïcode", lyrics="[Verse]\nneon lights")
    queue.submit(request)
    job = asyncio.run(queue.next_job())
    paths = [str(tmp_path / "api_audio" / "one.mp3"), str(tmp_path / "api_audio" / "two.mp3")]
    queue.finish(job, make_result(paths, seeds=[123, 456]))

    item = query_result_item(job.id, job, queue)
    assert item["status"] == 1
    assert "ünïcode" in item["result"]  # non-ASCII is not escaped
    first, second = elements(item)
    assert first["file"] == audio_url(paths[0]) and second["file"] == audio_url(paths[1])
    assert first["file"].startswith("/v1/audio?path=%2F") and first["file"].endswith(".mp3")
    for element in (first, second):
        assert element["status"] == 1 and element["wave"] == "" and element["env"] == "development"
        assert element["create_time"] == int(job.created_at)
        assert element["prompt"] == "refined caption" and element["lyrics"] == "[inst]"
        assert element["metas"] == {
            "bpm": 120, "duration": 12.0, "genres": "N/A", "keyscale": "C major", "timesignature": "4",
            "prompt": "dreamy synthwave, ünïcode", "lyrics": "[Verse]\nneon lights",
        }
        assert element["seed_value"] == "123,456"
        info = element["generation_info"]  # the official markdown, worded from the typed result
        assert "**Seeds:** 123,456" in info and "**Steps:** 8" in info and "- **BPM:** 120" in info
        assert element["lm_model"] == "acestep-5Hz-lm-0.6B" and element["dit_model"] == "acestep-v15-turbo"
        assert element["progress"] == 1.0 and element["stage"] == "succeeded"


def test_succeeded_without_audio_is_one_empty_element(queue):
    queue.submit(make_request())
    job = asyncio.run(queue.next_job())
    queue.finish(job, make_result([], seeds=[], metas={}))
    [element] = elements(query_result_item(job.id, job, queue))
    assert element["file"] == "" and element["status"] == 1
    assert element["metas"]["bpm"] == "N/A" and element["seed_value"] == ""


def test_failed_shape(queue):
    queue.submit(make_request())
    job = asyncio.run(queue.next_job())
    queue.report_progress(job, 0.6, "decoding")
    queue.fail(job, "RuntimeError: out of memory")
    item = query_result_item(job.id, job, queue)
    assert item["status"] == 2
    [element] = elements(item)
    assert element == {
        "file": "", "wave": "", "status": 2, "create_time": int(job.created_at), "env": "development",
        "progress": 0.0, "stage": "failed", "error": "RuntimeError: out of memory",
    }


def test_legacy_view_while_queued(queue):
    job, _ = queue.submit(make_request())
    view = legacy_job_view(job, queue)
    assert view == {
        "job_id": job.id, "status": "queued", "created_at": job.created_at, "started_at": None,
        "finished_at": None, "queue_position": 1, "eta_seconds": 4.0, "avg_job_seconds": 4.0,
        "result": None, "error": None,
    }


def test_legacy_view_after_success_and_failure(queue, tmp_path):
    queue.submit(make_request())
    queue.submit(make_request())
    ok = asyncio.run(queue.next_job())
    paths = [str(tmp_path / "a.mp3"), str(tmp_path / "b.mp3")]
    queue.finish(ok, make_result(paths, seeds=[1, 2]))
    view = legacy_job_view(ok, queue)
    assert view["status"] == "succeeded" and view["queue_position"] == 0 and view["eta_seconds"] is None
    assert view["started_at"] <= view["finished_at"]
    result = view["result"]
    assert result["first_audio_path"] == audio_url(paths[0])
    assert result["second_audio_path"] == audio_url(paths[1])
    assert result["audio_paths"] == [audio_url(p) for p in paths]
    assert result["status_message"] == "✅ Generation completed successfully!" and result["seed_value"] == "1,2"
    assert (result["bpm"], result["duration"], result["keyscale"], result["timesignature"]) == (120, 12.0, "C major", "4")
    assert result["genres"] is None and result["metas"]["genres"] == "N/A"
    assert result["lm_model"] == "acestep-5Hz-lm-0.6B" and result["dit_model"] == "acestep-v15-turbo"

    bad = asyncio.run(queue.next_job())
    queue.fail(bad, "GenerationError text")
    view = legacy_job_view(bad, queue)
    assert view["status"] == "failed" and view["result"] is None and view["error"] == "GenerationError text"
    assert view["avg_job_seconds"] == queue.avg_job_seconds != 4.0
