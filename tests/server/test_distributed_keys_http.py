"""API keys' quotas in the distributed mode: two replicas on one PostgreSQL share a keys file;
what a key used through one counts on the other (the counts come from the job table, over
every replica), still counts after both restart, and two replicas racing for a key's last
place give it to one."""

from __future__ import annotations

import threading

import pytest

from acestep_api.jobs.distributed.backend import PostgresJobBackend
from acestep_api.jobs.distributed.setup import configured_models
from acestep_api.jobs.distributed.store import open_pool
from acestep_api.jobs.models import JobApi
from acestep_api.server.key_file import KeySpec
from acestep_api.server.key_limits import KeyRefused
from acestep_api.server.services.key_quotas import KeyQuota
from acestep_api.server.services.sync_jobs import submit
from tests.jobs import make_request
from tests.server.conftest import serve
from tests.server.test_api_keys_http import SONG, assert_refused, bearer, keyed, write_keys


KEYS = ('[[keys]]\nname = "alice"\nkey = "a-secret"\njobs_per_day = 2\n'
        '[[keys]]\nname = "bob"\nkey = "b-secret"\nmax_waiting = 1\n')


def two_replicas(settings):
    # No worker: every accepted job stays waiting.
    return serve(settings, None, start_worker=False), serve(settings, None, start_worker=False)


async def release(client, key: str):
    return await client.post("/release_task", json=SONG, headers=bearer(key))


@pytest.mark.anyio
async def test_quotas_reached_on_one_replica_hold_on_the_other_and_after_a_restart(settings, postgres_url, tmp_path):
    path = write_keys(tmp_path / "keys.toml", KEYS)
    shared = keyed(settings, path, database_url=postgres_url)
    first, second = two_replicas(shared)
    async with first as (_, a), second as (_, b):
        for _ in range(2):
            assert (await release(a, "a-secret")).status_code == 200
        assert_refused(await release(b, "a-secret"), 429,
                       r"jobs_per_day limit of 2 reached for key 'alice'; retry after \d+ seconds")
        assert_refused(await release(a, "a-secret"), 429, r"jobs_per_day limit of 2 reached for key 'alice'.*")

        waiting = await release(a, "b-secret")
        assert waiting.status_code == 200, waiting.text
        assert_refused(await release(b, "b-secret"), 429,
                       r"max_waiting limit of 1 reached for key 'bob'; retry after \d+ seconds")
        bob_job = waiting.json()["data"]["task_id"]

    # Both replicas stop and start again: the counts are in the database.
    first, second = two_replicas(shared)
    async with first as (_, a), second as (_, b):
        assert_refused(await release(b, "a-secret"), 429, r"jobs_per_day limit of 2 reached for key 'alice'.*")
        assert_refused(await release(a, "b-secret"), 429, r"max_waiting limit of 1 reached for key 'bob'.*")
        # Once bob's job no longer waits (cancelled through B), A takes another of his.
        cancelled = await b.post("/cancel_task", json={"task_id": bob_job}, headers=bearer("b-secret"))
        assert cancelled.status_code == 200, cancelled.text
        assert (await release(a, "b-secret")).status_code == 200
        assert_refused(await release(b, "b-secret"), 429, r"max_waiting limit of 1 reached for key 'bob'.*")
        stats = (await b.get("/v1/stats", headers=bearer("a-secret"))).json()["data"]
        assert stats["keys"]["alice"]["jobs_today"] == 2


def test_one_key_at_its_last_place_on_two_replicas_at_once_gets_one_job(settings, postgres_url, tmp_path):
    """Two replicas' submits of one key racing for its last place (threads, each with its own
    backend and pool as a process has): the quota check and the insert are one step over both,
    so exactly one wins every round."""
    backends = [PostgresJobBackend(open_pool(postgres_url), tmp_path / "uploads", primary_model="acestep-v15-turbo")
                for _ in range(2)]
    served = configured_models(settings)
    try:
        for round_ in range(15):
            key = KeySpec(name=f"racer{round_}", key="secret", jobs_per_day=1)
            start = threading.Barrier(2)
            outcomes: list[str] = []

            def race(backend) -> None:
                quota = KeyQuota(key, backend.store, served, settings, avg_job_seconds=5.0)
                start.wait()
                try:
                    submit(backend, make_request("race"), JobApi.RELEASE_TASK, quota=quota)
                    outcomes.append("accepted")
                except KeyRefused:
                    outcomes.append("refused")

            threads = [threading.Thread(target=race, args=(backend,)) for backend in backends]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
            assert sorted(outcomes) == ["accepted", "refused"], (round_, outcomes)
    finally:
        for backend in backends:
            backend.close()
