"""Named API keys with quotas and rate limits (ACESTEP_API_KEYS_FILE, docs/operations.md#keys-and-quotas),
through HTTP: each limit reached is a 429 with Retry-After and a message naming it, a model or
route a key may not use a 403 naming it, the file read again when it changes, the daily counts
kept by the job table across a restart, keys compared as digests, and the single
ACESTEP_API_KEY alone and beside the file."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import time
import tomllib
from pathlib import Path

import pytest

from acestep_api.server import key_ring
from acestep_api.server.app import create_app
from acestep_api.server.key_file import KeyFileError, parse_keys
from acestep_api.server.services.key_quotas import SECONDS_PER_DAY
from acestep_api.settings import Settings
from tests.server.conftest import serve, wait_finished

pytestmark = pytest.mark.anyio

SONG = {"prompt": "x", "audio_duration": 30, "batch_size": 2}  # 60 audio seconds


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def write_keys(path: Path, text: str) -> Path:
    """Write the keys file and give it a modification time of its own, whatever the clock's
    resolution, so the server sees each version as a change."""
    path.write_text(text, encoding="utf-8")
    stamp = time.time_ns() + write_keys.count * 1_000_000_000
    write_keys.count += 1
    os.utime(path, ns=(stamp, stamp))
    return path


write_keys.count = 0


def keyed(settings: Settings, path: Path, **changes) -> Settings:
    return settings.model_copy(update={"api_keys_file": path, **changes})


def assert_refused(response, status: int, pattern: str) -> int | None:
    """The answer is `status` with a detail matching `pattern`; for a 429, its Retry-After is a
    whole number of seconds that the message repeats. Returns Retry-After."""
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert re.fullmatch(pattern, detail), detail
    if status != 429:
        return None
    retry = int(response.headers["Retry-After"])
    assert retry >= 1 and detail.endswith(f"; retry after {retry} seconds")
    return retry


async def test_requests_per_minute(settings, engine, tmp_path):
    path = write_keys(tmp_path / "keys.toml", '[[keys]]\nname = "alice"\nkey = "a-secret"\nrequests_per_minute = 2\n')
    async with serve(keyed(settings, path), engine, start_worker=False) as (_, client):
        for _ in range(2):
            assert (await client.post("/query_result", json={"task_id_list": []}, headers=bearer("a-secret"))).status_code == 200
        # Refused by the guard before the body is read: this body is not even JSON.
        response = await client.post("/query_result", content=b"not json", headers=bearer("a-secret"))
        retry = assert_refused(response, 429, r"requests_per_minute limit of 2 reached for key 'alice'; retry after \d+ seconds")
        assert retry <= 60
        # The body's ai_token is held to the same minute; GET routes too.
        response = await client.post("/query_result", json={"ai_token": "a-secret"})
        assert_refused(response, 429, r"requests_per_minute limit of 2 reached for key 'alice'.*")
        assert_refused(await client.get("/v1/stats", headers=bearer("a-secret")), 429, r"requests_per_minute .*")


async def test_jobs_per_day(settings, engine, tmp_path):
    path = write_keys(tmp_path / "keys.toml", '[[keys]]\nname = "alice"\nkey = "a-secret"\njobs_per_day = 2\n')
    async with serve(keyed(settings, path), engine, start_worker=False) as (app, client):
        for _ in range(2):
            assert (await client.post("/release_task", json=SONG, headers=bearer("a-secret"))).status_code == 200
        response = await client.post("/release_task", json=SONG, headers=bearer("a-secret"))
        retry = assert_refused(response, 429, r"jobs_per_day limit of 2 reached for key 'alice'; retry after \d+ seconds")
        # Until 00:00 UTC, when the day's count starts again.
        assert abs(retry - (SECONDS_PER_DAY - time.time() % SECONDS_PER_DAY)) < 5
        assert app.state.store.counts()["total"] == 2


async def test_audio_seconds_per_day(settings, engine, tmp_path):
    path = write_keys(tmp_path / "keys.toml",
                      '[[keys]]\nname = "alice"\nkey = "a-secret"\naudio_seconds_per_day = 100\n')
    async with serve(keyed(settings, path), engine, start_worker=False) as (_, client):
        assert (await client.post("/release_task", json=SONG, headers=bearer("a-secret"))).status_code == 200
        response = await client.post("/release_task", json=SONG, headers=bearer("a-secret"))
        assert_refused(response, 429, r"audio_seconds_per_day limit of 100 would be passed by this job's 60 s "
                                      r"\(40 s left today\) for key 'alice'; retry after \d+ seconds")
        # A shorter song still fits: 20 s x 2 = the 40 s left.
        small = {**SONG, "audio_duration": 20}
        assert (await client.post("/release_task", json=small, headers=bearer("a-secret"))).status_code == 200
        stats = (await client.get("/v1/stats", headers=bearer("a-secret"))).json()["data"]
        assert stats["keys"]["alice"]["audio_seconds_today"] == 100


async def test_max_waiting(settings, engine, tmp_path):
    path = write_keys(tmp_path / "keys.toml", '[[keys]]\nname = "alice"\nkey = "a-secret"\nmax_waiting = 1\n'
                                              '[[keys]]\nname = "bob"\nkey = "b-secret"\n')
    async with serve(keyed(settings, path), engine, start_worker=False) as (app, client):
        first = await client.post("/release_task", json=SONG, headers=bearer("a-secret"))
        response = await client.post("/v1/music/generate", json=SONG, headers=bearer("a-secret"))
        retry = assert_refused(response, 429, r"max_waiting limit of 1 reached for key 'alice'; retry after \d+ seconds")
        assert retry == 5  # the average job's seconds (ACESTEP_AVG_JOB_SECONDS)
        # Another key's jobs are its own.
        assert (await client.post("/release_task", json=SONG, headers=bearer("b-secret"))).status_code == 200
        # Once alice's job no longer waits, she may queue another.
        await client.post("/cancel_task", json={"task_id": first.json()["data"]["task_id"]}, headers=bearer("a-secret"))
        assert (await client.post("/release_task", json=SONG, headers=bearer("a-secret"))).status_code == 200


async def test_models_a_key_may_use(settings, engine, tmp_path):
    path = write_keys(tmp_path / "keys.toml",
                      '[[keys]]\nname = "bob"\nkey = "b-secret"\nmodels = ["acestep-v15-base"]\n')
    async with serve(keyed(settings, path), engine, start_worker=False) as (app, client):
        response = await client.post("/release_task", json=SONG, headers=bearer("b-secret"))  # the primary: turbo
        assert_refused(response, 403, "key 'bob' may not use the model 'acestep-v15-turbo'; its models: acestep-v15-base")
        response = await client.post("/release_task", json={**SONG, "model": "acestep-v15-base"}, headers=bearer("b-secret"))
        assert response.status_code == 200
        assert app.state.store.counts()["total"] == 1


async def test_routes_a_key_may_use(settings, engine, tmp_path):
    path = write_keys(tmp_path / "keys.toml",
                      '[[keys]]\nname = "carol"\nkey = "c-secret"\nroutes = ["/release_task", "/v1"]\n')
    async with serve(keyed(settings, path), engine, start_worker=False) as (app, client):
        response = await client.post("/query_result", json={"task_id_list": []}, headers=bearer("c-secret"))
        assert_refused(response, 403, "key 'carol' may not use the route /query_result; its routes: /release_task, /v1")
        response = await client.post("/query_result", json={"ai_token": "c-secret"})
        assert_refused(response, 403, "key 'carol' may not use the route /query_result.*")
        assert (await client.post("/release_task", json=SONG, headers=bearer("c-secret"))).status_code == 200
        assert (await client.get("/v1/stats", headers=bearer("c-secret"))).status_code == 200  # a prefix
        # A multipart body whose ai_token is refused writes no file.
        response = await client.post("/query_result", data={"ai_token": "c-secret"},
                                     files={"src_audio": ("a.wav", b"RIFF" + b"\0" * 64, "audio/wav")})
        assert response.status_code == 403
        assert not list(app.state.settings.upload_dir.glob("*"))


@pytest.mark.parametrize("route, body", [
    ("/release_task", SONG),
    ("/v1/music/generate", SONG),
    ("/v1/chat/completions", {"model": "acestep/acestep-v15-turbo", "messages": [{"role": "user", "content": "<prompt>x</prompt>"}]}),
    ("/fal-ai/ace-step/prompt-to-audio", {"prompt": "x", "duration": 10}),
    ("/format_input", {"prompt": "x", "lyrics": "la"}),
    ("/v1/create_sample", {"query": "a song"}),
    ("/v1/music/random", {}),
])
async def test_every_submit_route_counts_against_the_key(settings, lm_engine, tmp_path, route, body):
    path = write_keys(tmp_path / "keys.toml", '[[keys]]\nname = "dora"\nkey = "d-secret"\njobs_per_day = 0\n')
    async with serve(keyed(settings, path), lm_engine, start_worker=False) as (app, client):
        response = await client.post(route, json=body, headers=bearer("d-secret"))
        assert_refused(response, 429, r"jobs_per_day limit of 0 reached for key 'dora'; retry after \d+ seconds")
        assert app.state.store.counts()["total"] == 0


async def test_replays_count_against_the_key(settings, engine, tmp_path):
    path = write_keys(tmp_path / "keys.toml", '[[keys]]\nname = "alice"\nkey = "a-secret"\njobs_per_day = 2\n')
    song = {"prompt": "x", "audio_duration": 10, "batch_size": 1, "inference_steps": 2, "audio_format": "wav"}
    async with serve(keyed(settings, path), engine) as (app, client):
        first = (await client.post("/release_task", json=song, headers=bearer("a-secret"))).json()["data"]["task_id"]
        await wait_finished(app, first)
        replay = await client.post(f"/v1/jobs/{first}/replay", json={}, headers=bearer("a-secret"))
        assert replay.status_code == 200
        assert app.state.store.get(replay.json()["job_id"]).key_name == "alice"
        assert app.state.store.get(replay.json()["job_id"]).audio_seconds == 10
        again = await client.post("/release_task", json={"replay_of": first}, headers=bearer("a-secret"))
        assert_refused(again, 429, r"jobs_per_day limit of 2 reached for key 'alice'.*")


async def test_reloaded_when_the_file_changes(settings, engine, tmp_path, caplog):
    path = write_keys(tmp_path / "keys.toml", '[[keys]]\nname = "alice"\nkey = "old-secret"\n')
    async with serve(keyed(settings, path), engine, start_worker=False) as (_, client):
        assert (await client.get("/v1/stats", headers=bearer("old-secret"))).status_code == 200
        write_keys(path, '[[keys]]\nname = "alice"\nkey = "new-secret"\nrequests_per_minute = 1\n')
        assert (await client.get("/v1/stats", headers=bearer("old-secret"))).status_code == 401
        assert (await client.get("/v1/stats", headers=bearer("new-secret"))).status_code == 200
        assert_refused(await client.get("/v1/stats", headers=bearer("new-secret")), 429, "requests_per_minute .*")
        # A broken file keeps the last good set, and the log says why.
        with caplog.at_level(logging.ERROR, logger=key_ring.__name__):
            write_keys(path, '[[keys]]\nname = "alice"\nkey = "newest"\nrequests_per_minute = "many"\n')
            assert (await client.get("/v1/stats", headers=bearer("newest"))).status_code == 401
            assert_refused(await client.get("/v1/stats", headers=bearer("new-secret")), 429, "requests_per_minute .*")
        assert [record.getMessage() for record in caplog.records] == [
            f"ACESTEP_API_KEYS_FILE {path}: keys[0] (alice): requests_per_minute: Input should be a valid integer, "
            "unable to parse string as an integer; keeping the 1 keys read before"]
        path.unlink()
        assert_refused(await client.get("/v1/stats", headers=bearer("new-secret")), 429, "requests_per_minute .*")
        write_keys(path, '[[keys]]\nname = "erin"\nkey = "e-secret"\n')
        assert (await client.get("/v1/stats", headers=bearer("e-secret"))).status_code == 200


async def test_daily_counts_survive_a_restart(settings, engine, tmp_path):
    path = write_keys(tmp_path / "keys.toml", '[[keys]]\nname = "alice"\nkey = "a-secret"\njobs_per_day = 2\n')
    async with serve(keyed(settings, path), engine, start_worker=False) as (_, client):
        for _ in range(2):
            assert (await client.post("/release_task", json=SONG, headers=bearer("a-secret"))).status_code == 200
    # A new app (a new process, as far as the keys know) on the same job database.
    async with serve(keyed(settings, path), engine, start_worker=False) as (_, client):
        response = await client.post("/release_task", json=SONG, headers=bearer("a-secret"))
        assert_refused(response, 429, r"jobs_per_day limit of 2 reached for key 'alice'.*")
        stats = (await client.get("/v1/stats", headers=bearer("a-secret"))).json()["data"]
        assert stats["keys"] == {"alice": {"jobs": {"queued": 2, "running": 0, "succeeded": 0, "failed": 0},
                                           "jobs_today": 2, "audio_seconds_today": 120}}


async def test_keys_are_compared_as_digests_in_constant_time(settings, engine, tmp_path, monkeypatch):
    digest = hashlib.sha256(b"h-secret").hexdigest()
    path = write_keys(tmp_path / "keys.toml", f'[[keys]]\nname = "hana"\nkey_sha256 = "{digest}"\n'
                                              '[[keys]]\nname = "ivan"\nkey = "i-secret"\n')
    compared = []

    def compare_digest(a, b):
        compared.append((a, b))
        return hmac.compare_digest(a, b)

    async with serve(keyed(settings, path, api_key="single"), engine, start_worker=False) as (_, client):
        monkeypatch.setattr(key_ring, "compare_digest", compare_digest)
        assert (await client.get("/v1/stats", headers=bearer("h-secret"))).status_code == 200
        assert (await client.get("/v1/stats", headers=bearer(digest))).status_code == 401  # the digest is no key
    # Each look-up compares the presented key's SHA-256 with every stored digest: no early exit.
    assert len(compared) == 6
    assert all(len(a) == len(b) == 32 for a, b in compared)
    assert {a for a, _ in compared[:3]} == {hashlib.sha256(b"h-secret").digest()}
    assert {b for _, b in compared[:3]} == {hashlib.sha256(name).digest() for name in (b"single", b"h-secret", b"i-secret")}


async def test_the_single_key_alone_and_beside_the_file(settings, engine, tmp_path):
    async with serve(settings.model_copy(update={"api_key": "single"}), engine, start_worker=False) as (app, client):
        assert (await client.post("/release_task", json=SONG, headers=bearer("single"))).status_code == 200
        stats = (await client.get("/v1/stats", headers=bearer("single"))).json()["data"]
        assert stats["keys"]["default"]["jobs_today"] == 1
    path = write_keys(tmp_path / "keys.toml", '[[keys]]\nname = "alice"\nkey = "a-secret"\njobs_per_day = 1\n')
    async with serve(keyed(settings, path, api_key="single"), engine, start_worker=False) as (app, client):
        assert (await client.post("/release_task", json={**SONG, "ai_token": "single"})).status_code == 200
        assert (await client.post("/release_task", json={**SONG, "ai_token": "a-secret"})).status_code == 200
        # A multipart body's ai_token, before its file parts, is a key of the file too (and spends its day).
        multipart = await client.post("/release_task", data={"prompt": "x", "ai_token": "a-secret"},
                                      files={"notes": ("notes.txt", b"not audio", "text/plain")})
        assert multipart.status_code == 429 and "jobs_per_day" in multipart.json()["detail"]
        assert (await client.post("/release_task", json=SONG, headers={"Authorization": "a-secret"})).status_code == 429
        assert (await client.post("/release_task", json=SONG, headers={"Authorization": "Key single"})).status_code == 200
        assert (await client.post("/release_task", json=SONG, headers=bearer("wrong"))).status_code == 401
        # The single key sees every key's figures; a key of the file its own.
        everyone = (await client.get("/v1/stats", headers=bearer("single"))).json()["data"]["keys"]
        assert {name: entry["jobs_today"] for name, entry in everyone.items()} == {"default": 3, "alice": 1}
        own = (await client.get("/v1/stats", headers=bearer("a-secret"))).json()["data"]["keys"]
        assert list(own) == ["alice"]
        metrics = (await client.get("/metrics", headers=bearer("single"))).text
        assert 'acestep_key_jobs_submitted_total{key="alice"} 1.0' in metrics
        assert 'acestep_key_audio_seconds_total{key="alice"} 60.0' in metrics
        assert 'acestep_key_refusals_total{key="alice",limit="jobs_per_day"} 2.0' in metrics


async def test_the_file_alone_turns_auth_on(settings, engine, tmp_path):
    path = write_keys(tmp_path / "keys.toml", '[[keys]]\nname = "alice"\nkey = "a-secret"\n')
    async with serve(keyed(settings, path), engine, start_worker=False) as (app, client):
        stats = (await client.get("/v1/stats", headers=bearer("a-secret"))).json()["data"]
        assert stats["keys"] == {"alice": {"jobs": {"queued": 0, "running": 0, "succeeded": 0, "failed": 0},
                                           "jobs_today": 0, "audio_seconds_today": 0}}
        assert (await client.post("/release_task", json=SONG)).json() == {"detail": "Missing ai_token or Authorization header"}
        assert (await client.get("/v1/stats")).status_code == 401
        assert (await client.post("/release_task", json=SONG, headers=bearer("a-secret"))).status_code == 200
        assert (await client.get("/openapi.json")).status_code == 401


@pytest.mark.parametrize("text, problem", [
    ('[[keys]]\nname = "a"\n', r"keys\[0\] \(a\): give exactly one of key and key_sha256"),
    ('[[keys]]\nname = "a"\nkey = "x"\nkey_sha256 = "' + "0" * 64 + '"\n', r"keys\[0\] \(a\): give exactly one.*"),
    ('[[keys]]\nname = "a"\nkey_sha256 = "abc"\n', r"keys\[0\] \(a\): key_sha256: String should match pattern .*"),
    ('[[keys]]\nname = "a b"\nkey = "x"\n', r"keys\[0\] \(a b\): name: String should match pattern .*"),
    ('[[keys]]\nname = "a"\nkey = "x"\n[[keys]]\nname = "a"\nkey = "y"\n', r"keys\[1\] \(a\): the name 'a' is used twice"),
    ('[[keys]]\nname = "a"\nkey = "x"\n[[keys]]\nname = "b"\nkey = "x"\n', r"keys\[1\] \(b\): the same key as 'a'"),
    ('[[keys]]\nname = "default"\nkey = "x"\n', r"keys\[0\] \(default\): the name 'default' is the one of ACESTEP_API_KEY.*"),
    ('[[keys]]\nname = "a"\nkey = "x"\nroutes = ["release_task"]\n', r"keys\[0\] \(a\): routes: route 'release_task' must start with '/'"),
    ('[[keys]]\nname = "a"\nkey = "x"\njobs_per_dya = 3\n', r"keys\[0\] \(a\): jobs_per_dya: Extra inputs are not permitted"),
    ('[keys]\nname = "a"\n', r"'keys' must be an array of tables: write each key as a \[\[keys\]\] table"),
    ('[[keys]\nname = "a"\n', r"not valid TOML \(.*\)"),
])
def test_a_broken_file_stops_the_start(settings, tmp_path, text, problem):
    path = write_keys(tmp_path / "keys.toml", text)
    with pytest.raises(KeyFileError) as raised:
        create_app(keyed(settings, path))
    assert re.fullmatch(f"ACESTEP_API_KEYS_FILE {re.escape(str(path))}: {problem}", str(raised.value)), raised.value


def test_a_missing_file_stops_the_start(settings, tmp_path):
    with pytest.raises(KeyFileError, match="keys.toml: no such file"):
        create_app(keyed(settings, tmp_path / "keys.toml"))


def test_the_documented_sample_file_reads():
    text = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text(encoding="utf-8")
    sample = text.split("## Keys and quotas", 1)[1].split("```toml\n", 1)[1].split("```", 1)[0]
    keys = parse_keys(tomllib.loads(sample))
    assert [key.name for key in keys] == ["alice", "batch-tool"]
    assert keys[1].digest == hashlib.sha256(b"the-secret").digest()
    assert keys[0].may_use_route("/v1/jobs/123/cancel") and not keys[0].may_use_route("/v1/stats")


async def test_the_document_names_the_key_limit_answers(settings, engine, tmp_path):
    path = write_keys(tmp_path / "keys.toml", '[[keys]]\nname = "alice"\nkey = "a-secret"\n')
    async with serve(keyed(settings, path), engine, start_worker=False) as (_, client):
        spec = (await client.get("/openapi.json", headers=bearer("a-secret"))).json()
    query_result = spec["paths"]["/query_result"]["post"]["responses"]
    assert query_result["429"]["headers"]["Retry-After"] and "requests_per_minute" in query_result["429"]["description"]
    assert "may not use this route" in query_result["403"]["description"]
    release_task = spec["paths"]["/release_task"]["post"]["responses"]
    assert release_task["403"]["description"].startswith("An audio path")  # its own 403, then the key's
    assert "DiT model" in release_task["403"]["description"]
    assert "403" not in spec["paths"]["/health"]["get"]["responses"]  # open: no key, no key limits
    async with serve(settings.model_copy(update={"api_key": "single"}), engine, start_worker=False) as (_, client):
        spec = (await client.get("/openapi.json", headers=bearer("single"))).json()
    assert "403" not in spec["paths"]["/query_result"]["post"]["responses"]  # the single key has no limits


def test_serve_with_a_broken_file_says_why_and_stops(tmp_path, monkeypatch, capsys):
    from acestep_api.cli import main

    path = write_keys(tmp_path / "keys.toml", '[[keys]]\nname = "alice"\nkey = "a"\nmodels = "turbo"\n')
    monkeypatch.setenv("ACESTEP_API_KEYS_FILE", str(path))
    assert main(["serve", "--output-dir", str(tmp_path / "outputs"), "--checkpoint-dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (f"error: ACESTEP_API_KEYS_FILE {path}: keys[0] (alice): models: "
                                       "Input should be a valid list\n")
