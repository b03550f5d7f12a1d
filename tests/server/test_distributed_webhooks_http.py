"""Webhooks in the distributed mode over HTTP, in one test process: a replica accepts a job
with a callback URL, a worker process (an app that is also a worker) runs it, and the signed
answer reaches a real receiver on loopback exactly once though two processes run sender loops
on the same database; a 500 is retried; every replica shows the delivery's state; a job
cancelled while waiting on a replica with no worker is announced by that replica."""

from __future__ import annotations

import asyncio
import json

import pytest
from pydantic import SecretStr

from acestep_api.webhooks import sender as sender_module
from tests.server.conftest import serve
from tests.server.test_distributed_http import poll
from tests.server.test_webhooks_http import SECRET, item_of, settled, verified
from tests.webhook_receiver import receiving

pytestmark = pytest.mark.anyio

SONG = {"prompt": "calm", "audio_duration": 10, "inference_steps": 2}


@pytest.fixture
def hook_settings(settings, postgres_url):
    return settings.model_copy(update={
        "database_url": postgres_url, "worker_stall_seconds": 2.0, "webhook_secret": SecretStr(SECRET),
        "webhook_allow_private": True, "webhook_retry_seconds": 0.2})


async def submit(client, url: str) -> str:
    response = await client.post("/release_task", json={**SONG, "webhook_url": url})
    assert response.status_code == 200, response.text
    return response.json()["data"]["task_id"]


async def test_a_job_run_by_a_worker_is_delivered_once_with_two_sender_loops(hook_settings, engine):
    with receiving() as receiver:
        # Both processes have the secret: both run a sender loop on the same table.
        async with serve(hook_settings, engine) as (_, worker_client), \
                serve(hook_settings, None, start_worker=False) as (replica, replica_client):
            task_id = await submit(replica_client, receiver.url)
            accepted = (await item_of(replica_client, task_id))["webhook"]
            assert accepted["status"] == "waiting" and accepted["attempts"] == 0
            item = await settled(replica_client, task_id)
            await asyncio.sleep(1.0)  # time for a duplicate to show, were one sent
            assert len(receiver.received) == 1
            [received] = receiver.received
            assert received.headers["webhook-id"] == task_id
            body = verified(received)  # the signature checks out
            assert body["task_id"] == task_id and body["status"] == 1
            assert json.loads(body["result"])[0]["file"]  # the final item, with the audio's URL
            webhook = item["webhook"]
            assert webhook["status"] == "delivered" and webhook["attempts"] == 1
            assert webhook["last_http_status"] == 200 and webhook["delivered_at"] is not None
            # The state comes from the database: the worker's process shows the same, and so
            # does GET /v1/jobs/{id}.
            assert (await item_of(worker_client, task_id))["webhook"] == webhook
            job = (await replica_client.get(f"/v1/jobs/{task_id}")).json()
            assert job["webhook"] == webhook
            assert replica.state.deliveries.get(task_id).payload == received.body.decode()


async def test_a_500_is_retried_and_every_replica_sees_the_state(hook_settings, engine):
    with receiving() as receiver:
        receiver.answers = [500]
        async with serve(hook_settings, engine) as (_, worker_client), \
                serve(hook_settings, None, start_worker=False) as (_, replica_client):
            task_id = await submit(worker_client, receiver.url)
            item = await settled(replica_client, task_id)
            await asyncio.sleep(0.5)
            assert [r.headers["webhook-id"] for r in receiver.received] == [task_id, task_id]
            first, second = receiver.received
            assert verified(first) == verified(second)  # the same body, signed each time
            webhook = item["webhook"]
            assert (webhook["status"], webhook["attempts"], webhook["last_http_status"]) == ("delivered", 2, 200)
            assert (await item_of(worker_client, task_id))["webhook"] == webhook


async def test_a_job_cancelled_while_waiting_is_announced_by_the_replica(hook_settings):
    with receiving() as receiver:
        # No worker at all: the replica that cancels the job ends it and sends its webhook.
        async with serve(hook_settings, None, start_worker=False) as (_, client):
            task_id = await submit(client, receiver.url)
            cancelled = await client.post("/cancel_task", json={"task_id": task_id})
            assert cancelled.status_code == 200, cancelled.text
            item = await settled(client, task_id)
            assert item["status"] == 2 and item["webhook"]["status"] == "delivered"
            [received] = await receiver.arrived(1)
            body = verified(received)
            assert body["task_id"] == task_id and body["status"] == 2 and "Cancelled" in body["error"]
            finished = await poll(client, task_id, lambda item: item["status"] == 2)
            assert finished["webhook"]["attempts"] == 1


async def test_two_replicas_polling_the_same_deliveries_send_each_once(hook_settings, engine, monkeypatch):
    # The worker has no secret: the deliveries it makes due are sent by the two replicas, whose
    # loops look at the table every 50 ms and so race for each one.
    monkeypatch.setattr(sender_module, "IDLE_SECONDS", 0.05)
    quiet_worker = hook_settings.model_copy(update={"webhook_secret": None})
    with receiving() as receiver:
        async with serve(quiet_worker, engine) as (worker, _), \
                serve(hook_settings, None, start_worker=False) as (_, first), \
                serve(hook_settings, None, start_worker=False) as (_, second):
            ids = [await submit(client, receiver.url) for client in (first, second, first, second)]
            for task_id in ids:
                await settled(first, task_id)
            await asyncio.sleep(0.5)
            assert sorted(r.headers["webhook-id"] for r in receiver.received) == sorted(ids)
            for task_id in ids:
                assert (await item_of(second, task_id))["webhook"]["attempts"] == 1
