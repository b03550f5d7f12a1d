import pytest
from fastapi import HTTPException

from acestep_api.engine.request import GenerationRequest
from acestep_api.jobs.models import JobApi
from acestep_api.jobs.queue import JobQueue
from acestep_api.jobs.store import JobStore
from acestep_api.server.services.sync_jobs import submit


def test_a_refused_submission_removes_its_temp_files_and_is_a_429(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite3")
    try:
        queue = JobQueue(store, maxsize=1)
        kept = tmp_path / "kept.wav"
        refused = tmp_path / "refused.wav"
        kept.write_bytes(b"RIFF")
        refused.write_bytes(b"RIFF")
        job, position = submit(queue, GenerationRequest(prompt="first"), JobApi.CHAT, [str(kept)])
        assert position == 1 and job.temp_files == [str(kept)]
        with pytest.raises(HTTPException) as refusal:
            submit(queue, GenerationRequest(prompt="second"), JobApi.CHAT, [str(refused)])
        assert (refusal.value.status_code, refusal.value.detail) == (429, "Server busy: queue is full")
        assert kept.exists() and not refused.exists()
    finally:
        store.close()
