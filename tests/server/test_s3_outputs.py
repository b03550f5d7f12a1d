"""Generated audio in an S3 bucket (ACESTEP_OUTPUT_URL=s3://...), against a real S3 HTTP
endpoint on loopback (moto's server mode): the worker uploads a job's files before it
succeeds and keeps no local copy, /v1/audio streams the object or redirects to a presigned
URL, fal's answer reads the object's size, retention deletes the objects, uploads travel
through the bucket, and a bucket that fails gives sentences, never a 500."""

from __future__ import annotations

import io
import json
import os
import urllib.parse
from pathlib import Path

import boto3
import httpx
import pytest
import soundfile
from moto.server import ThreadedMotoServer

from acestep_api.jobs.retention import purge_expired
from acestep_api.storage import OutputStoreError, build_output_store
from acestep_api.storage.s3 import S3Outputs, parse_output_url
from tests.answer_hygiene import problems
from tests.server.conftest import serve, wait_finished

pytestmark = pytest.mark.anyio

BUCKET = "songs"
PREFIX = "run-1"
SONG = {"caption": "calm piano", "lyrics": "[inst]", "duration": 10, "batch_size": 1,
        "audio_format": "wav", "inference_steps": 2, "use_random_seed": False, "seed": 7}


@pytest.fixture(scope="module")
def s3_endpoint():
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def bucket(s3_endpoint, monkeypatch):
    for name, value in (("AWS_ACCESS_KEY_ID", "test-key"), ("AWS_SECRET_ACCESS_KEY", "test-secret"),
                        ("AWS_DEFAULT_REGION", "us-east-1")):
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.create_bucket(Bucket=BUCKET)
    yield client
    listed = client.list_objects_v2(Bucket=BUCKET).get("Contents", [])
    for item in listed:
        client.delete_object(Bucket=BUCKET, Key=item["Key"])
    client.delete_bucket(Bucket=BUCKET)


@pytest.fixture
def s3_settings(settings, s3_endpoint, bucket):
    return settings.model_copy(update={"output_url": f"s3://{BUCKET}/{PREFIX}", "s3_endpoint_url": s3_endpoint,
                                       "s3_addressing_style": "path"})


def object_keys(client) -> list[str]:
    return sorted(item["Key"] for item in client.list_objects_v2(Bucket=BUCKET).get("Contents", []))


async def make_song(app, client) -> str:
    response = await client.post("/release_task", json=SONG)
    assert response.status_code == 200, response.text
    task_id = response.json()["data"]["task_id"]
    job = await wait_finished(app, task_id)
    assert job.status.value == "succeeded", job.error
    [path] = job.result.audio_paths
    # The result names the file by its path in the audio folder, the official shape.
    answer = await client.post("/query_result", json={"task_id_list": [task_id]})
    [item] = json.loads(answer.json()["data"][0]["result"])
    assert item["file"] == "/v1/audio?path=" + urllib.parse.quote(path, safe="")
    return path


def test_output_url_parsing():
    assert parse_output_url("s3://songs/a/b/") == ("songs", "a/b")
    assert parse_output_url("s3://songs") == ("songs", "")
    with pytest.raises(ValueError, match="s3://bucket/prefix"):
        parse_output_url("https://songs/a")


def test_settings_refuse_a_url_that_is_no_bucket(tmp_path):
    from pydantic import ValidationError

    from acestep_api.settings import Settings

    with pytest.raises(ValidationError, match="s3://bucket/prefix"):
        Settings(_env_file=None, output_dir=tmp_path, output_url="ftp://x/y")
    assert Settings(_env_file=None, output_dir=tmp_path, output_url=" ").output_url is None


async def test_files_go_to_the_bucket_and_stream_back(s3_settings, engine, bucket):
    async with serve(s3_settings, engine) as (app, client):
        path = await make_song(app, client)
        name = os.path.basename(path)
        assert object_keys(bucket) == [f"{PREFIX}/audio/{name}"]
        assert not os.path.exists(path), "the worker keeps no local copy once the bucket has the file"
        stored = bucket.get_object(Bucket=BUCKET, Key=f"{PREFIX}/audio/{name}")
        assert stored["ContentType"] == "audio/wav"
        expected = stored["Body"].read()

        response = await client.get("/v1/audio", params={"path": path})
        assert response.status_code == 200
        assert response.headers["content-type"] == "audio/wav"
        assert response.content == expected
        data, rate = soundfile.read(io.BytesIO(response.content), always_2d=True)
        assert rate == 48000 and data.shape[1] == 2 and abs(len(data) / rate - 10.0) < 0.05

        missing = await client.get("/v1/audio", params={"path": str(Path(path).with_name("nothing.wav"))})
        assert missing.status_code == 404
        outside = await client.get("/v1/audio", params={"path": "/etc/passwd"})
        assert outside.status_code == 403
        traversal = await client.get("/v1/audio", params={"path": str(s3_settings.audio_dir / ".." / "jobs.sqlite3")})
        assert traversal.status_code == 403


async def test_redirect_to_a_presigned_url(s3_settings, engine, bucket):
    settings = s3_settings.model_copy(update={"output_redirect": True, "output_presign_seconds": 60})
    async with serve(settings, engine) as (app, client):
        path = await make_song(app, client)
        response = await client.get("/v1/audio", params={"path": path})
        assert response.status_code == 307
        location = response.headers["location"]
        assert location.startswith(settings.s3_endpoint_url) and "Signature" in location
        direct = httpx.get(location)  # the client downloads from the bucket itself
        assert direct.status_code == 200
        assert direct.content == bucket.get_object(Bucket=BUCKET, Key=f"{PREFIX}/audio/{os.path.basename(path)}")[
            "Body"].read()
        assert direct.headers["content-type"] == "audio/wav"
        missing = await client.get("/v1/audio", params={"path": str(Path(path).with_name("nothing.wav"))})
        assert missing.status_code == 404


async def test_retention_deletes_the_objects(s3_settings, engine, bucket):
    async with serve(s3_settings, engine) as (app, client):
        path = await make_song(app, client)
        assert object_keys(bucket)
        expired = purge_expired(app.state.queue.store, retention_seconds=0, now=10**12, outputs=app.state.outputs)
        assert len(expired) == 1
        assert object_keys(bucket) == []
        assert (await client.get("/v1/audio", params={"path": path})).status_code == 404


async def test_fal_reads_the_size_and_cuts_through_the_bucket(s3_settings, engine, bucket):
    async with serve(s3_settings, engine) as (app, client):
        response = await client.post("/fal-ai/ace-step/prompt-to-audio",
                                     json={"prompt": "soft synth pad", "duration": 5, "instrumental": True,
                                           "number_of_steps": 3, "seed": 5})
        assert response.status_code == 200, response.text
        audio = response.json()["audio"]
        [key] = object_keys(bucket)
        stored = bucket.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        assert audio["file_size"] == len(stored)
        data, rate = soundfile.read(io.BytesIO(stored), always_2d=True)
        assert abs(len(data) / rate - 5.0) < 0.01, "the cut clip is what the bucket holds"
        download = await client.get(audio["url"].removeprefix("http://testserver"))
        assert download.content == stored


def test_an_upload_travels_between_machines_through_the_bucket(s3_settings, bucket, tmp_path):
    """The replica that received an upload and the worker that runs its job share only the
    bucket: each has its own upload folder at the same path, as on two machines."""
    replica = build_output_store(s3_settings)
    upload = s3_settings.upload_dir / "upload_abc.wav"
    upload.parent.mkdir(parents=True, exist_ok=True)
    upload.write_bytes(b"RIFF-bytes-of-an-upload")
    replica.publish_upload(str(upload))
    assert object_keys(bucket) == [f"{PREFIX}/uploads/upload_abc.wav"]
    upload.unlink()  # the worker's machine: no such file until it is fetched
    worker = build_output_store(s3_settings)
    worker.fetch_upload(str(upload))
    assert upload.read_bytes() == b"RIFF-bytes-of-an-upload"
    worker.remove_uploads([str(upload)])
    assert object_keys(bucket) == []
    # A file a request named in an input folder is not the store's to copy.
    outside = tmp_path / "input.wav"
    outside.write_bytes(b"x")
    replica.publish_upload(str(outside))
    assert object_keys(bucket) == []


async def test_a_missing_bucket_fails_the_job_with_a_sentence(settings, engine, s3_endpoint, bucket):
    broken = settings.model_copy(update={"output_url": "s3://no-such-bucket/x", "s3_endpoint_url": s3_endpoint,
                                         "s3_addressing_style": "path"})
    async with serve(broken, engine) as (app, client):
        response = await client.post("/release_task", json=SONG)
        job = await wait_finished(app, response.json()["data"]["task_id"])
        assert job.status.value == "failed"
        assert job.error == "the output bucket could not store a file (NoSuchBucket)"
        answer = await client.post("/query_result", json={"task_id_list": [job.id]})
        assert problems(answer.status_code, answer.text) == []
        # A bucket that is not there is the server's problem, not a missing file.
        download = await client.get("/v1/audio", params={"path": str(broken.audio_dir / "a.wav")})
        assert download.status_code == 503
        assert download.json()["detail"] == "Audio storage unavailable: the output bucket could not read a file (NoSuchBucket)"


async def test_an_unreachable_bucket_is_a_503(settings, engine, bucket):
    # A closed port on loopback: the store cannot connect at all.
    unreachable = settings.model_copy(update={"output_url": "s3://songs/x", "s3_endpoint_url": "http://127.0.0.1:9",
                                              "s3_addressing_style": "path"})
    async with serve(unreachable, engine, start_worker=False) as (app, client):
        response = await client.get("/v1/audio", params={"path": str(unreachable.audio_dir / "a.wav")})
        assert response.status_code == 503
        assert response.json()["detail"].startswith("Audio storage unavailable: the output bucket could not read")
        assert response.headers["retry-after"]
        assert problems(response.status_code, response.text) == []


def test_store_errors_name_no_secrets(s3_settings):
    store = build_output_store(s3_settings)
    assert isinstance(store, S3Outputs)
    store.bucket = "no-such-bucket"
    song = s3_settings.audio_dir / "a.wav"
    song.parent.mkdir(parents=True, exist_ok=True)
    song.write_bytes(b"x")
    with pytest.raises(OutputStoreError) as caught:
        store.publish([str(song)])
    assert str(caught.value) == "the output bucket could not store a file (NoSuchBucket)"
    assert "test-secret" not in str(caught.value) and "test-key" not in str(caught.value)
