"""Webhooks over HTTP: a job submitted with a callback URL is announced once when it ends
(succeeded, failed, cancelled), signed per Standard Webhooks, to a real receiver on loopback
(allowed here by ACESTEP_WEBHOOK_ALLOW_PRIVATE); a failed attempt is retried, a pending delivery
survives a restart, and URLs that lead to the server's own network are refused with a 400."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest
from pydantic import SecretStr
from standardwebhooks.webhooks import Webhook

from acestep_api.webhooks.deliveries import DeliveryState
from acestep_api.webhooks.sqlite_deliveries import SQLiteDeliveryStore
from tests.server.conftest import serve, wait_finished
from tests.webhook_receiver import receiving

pytestmark = pytest.mark.anyio

SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()
FAST_SONG = {"caption": "short test", "lyrics": "[inst]", "duration": 10, "batch_size": 1}


@pytest.fixture
def hook_settings(settings):
    return settings.model_copy(update={"webhook_secret": SecretStr(SECRET), "webhook_allow_private": True,
                                       "webhook_retry_seconds": 0.2})


async def release(client, **body) -> str:
    response = await client.post("/release_task", json=body)
    assert response.status_code == 200, response.text
    return response.json()["data"]["task_id"]


async def item_of(client, task_id: str) -> dict:
    response = await client.post("/query_result", json={"task_id_list": [task_id]})
    assert response.status_code == 200
    [item] = response.json()["data"]
    return item


async def settled(client, task_id: str, timeout: float = 30.0) -> dict:
    """The job's /query_result item once its webhook is delivered or has failed."""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        item = await item_of(client, task_id)
        if item["webhook"]["status"] in ("delivered", "failed"):
            return item
        await asyncio.sleep(0.05)
    raise AssertionError(f"the webhook of {task_id} did not settle: {item['webhook']}")


def verified(received) -> dict:
    """The body, once the library has checked its signature (raises otherwise)."""
    return Webhook(SECRET).verify(received.body, received.headers)


async def test_one_signed_delivery_when_a_job_succeeds_and_when_one_fails(hook_settings, engine):
    with receiving() as receiver:
        async with serve(hook_settings, engine) as (app, client):
            ok = await release(client, **FAST_SONG, webhook_url=receiver.url + "?for=ok")
            # Accepted, then failed by the engine: this server has no LM.
            bad = await release(client, prompt="x", thinking=True, duration=10, webhook_url=receiver.url)
            assert (await wait_finished(app, ok)).status.value == "succeeded"
            assert (await wait_finished(app, bad)).status.value == "failed"
            ok_item, bad_item = await settled(client, ok), await settled(client, bad)
            await asyncio.sleep(0.5)  # time for a duplicate to show, were one sent
            assert len(receiver.received) == 2
            by_id = {received.headers["webhook-id"]: received for received in receiver.received}
            assert set(by_id) == {ok, bad}
            assert by_id[ok].path == "/hook?for=ok"
            assert by_id[ok].headers["content-type"] == "application/json"
            for task_id, item in ((ok, ok_item), (bad, bad_item)):
                webhook = item.pop("webhook")
                assert webhook["status"] == "delivered" and webhook["attempts"] == 1
                assert webhook["last_http_status"] == 200 and webhook["last_error"] is None
                assert webhook["url"].startswith(receiver.url)
                assert verified(by_id[task_id]) == item  # the job's /query_result item, as polled
            assert ok_item["status"] == 1 and json.loads(ok_item["result"])[0]["file"].startswith("/v1/audio")
            assert bad_item["status"] == 2 and "LM" in bad_item["error"]
            # A tampered body fails the check.
            with pytest.raises(Exception, match="signature"):
                Webhook(SECRET).verify(by_id[ok].body.replace(b"short", b"shorT"), by_id[ok].headers)


async def test_a_cancelled_job_is_announced_and_the_legacy_job_shows_its_webhook(hook_settings, engine):
    with receiving() as receiver:
        async with serve(hook_settings, engine, start_worker=False) as (app, client):
            response = await client.post("/v1/music/generate", json={**FAST_SONG, "webhook": receiver.url})
            assert response.status_code == 200, response.text
            job_id = response.json()["job_id"]
            waiting = (await client.get(f"/v1/jobs/{job_id}")).json()["webhook"]
            assert waiting["status"] == "waiting" and waiting["attempts"] == 0
            assert (await client.post(f"/v1/jobs/{job_id}/cancel")).status_code == 200
            [received] = await receiver.arrived(1)
            payload = verified(received)
            assert payload["task_id"] == job_id and payload["status"] == 2
            assert payload["error"] == "Cancelled by request"
            await settled(client, job_id)
            shown = (await client.get(f"/v1/jobs/{job_id}")).json()["webhook"]
            assert shown["status"] == "delivered" and shown["attempts"] == 1 and shown["delivered_at"]
            assert len(receiver.received) == 1


async def test_an_attempt_answered_500_is_retried(hook_settings, engine):
    with receiving() as receiver:
        receiver.answers = [500]
        async with serve(hook_settings, engine, start_worker=False) as (app, client):
            task_id = await release(client, **FAST_SONG, webhook_url=receiver.url)
            await client.post("/cancel_task", json={"task_id": task_id})
            first, second = await receiver.arrived(2)
            item = await settled(client, task_id)
            assert item["webhook"]["status"] == "delivered" and item["webhook"]["attempts"] == 2
            assert item["webhook"]["last_http_status"] == 200
            # The same message again (same id and body), signed anew.
            assert first.headers["webhook-id"] == second.headers["webhook-id"] == task_id
            assert verified(first) == verified(second)
            await asyncio.sleep(0.5)
            assert len(receiver.received) == 2


async def test_a_delivery_gives_up_after_its_attempts(hook_settings, engine):
    limited = hook_settings.model_copy(update={"webhook_max_attempts": 2})
    with receiving() as receiver:
        receiver.always = 503
        async with serve(limited, engine, start_worker=False) as (app, client):
            task_id = await release(client, **FAST_SONG, webhook_url=receiver.url)
            await client.post("/cancel_task", json={"task_id": task_id})
            webhook = (await settled(client, task_id))["webhook"]
            assert webhook["status"] == "failed" and webhook["attempts"] == 2
            assert webhook["last_http_status"] == 503
            assert webhook["last_error"] == "The receiver answered HTTP 503; gave up after 2 attempts"
            assert len(receiver.received) == 2


async def test_a_pending_delivery_is_sent_after_a_restart(hook_settings, engine):
    with receiving() as receiver:
        receiver.always = 500
        async with serve(hook_settings, engine, start_worker=False) as (app, client):
            task_id = await release(client, **FAST_SONG, webhook_url=receiver.url)
            await client.post("/cancel_task", json={"task_id": task_id})
            await receiver.arrived(1)
        store = SQLiteDeliveryStore(hook_settings.database_path)
        stored = store.get(task_id)
        store.close()
        assert stored.state is DeliveryState.PENDING and stored.attempts >= 1 and stored.payload
        failed_before = len(receiver.received)
        receiver.always = None  # the receiver is back
        async with serve(hook_settings, engine, start_worker=False) as (app, client):
            item = await settled(client, task_id)
            assert item["webhook"]["status"] == "delivered"
            assert item["webhook"]["attempts"] == stored.attempts + 1
            received = receiver.received[failed_before:]
            assert len(received) == 1
            assert verified(received[0]) == {key: value for key, value in item.items() if key != "webhook"}


@pytest.mark.parametrize("url, words", [
    ("http://127.0.0.1:9/hook", "points at a loopback address (127.0.0.1)"),
    ("http://10.1.2.3/hook", "points at a private address (10.1.2.3)"),
    ("http://[::1]:9/hook", "points at a loopback address (::1)"),
    ("http://localhost:9/hook", "points at a loopback address"),  # a host name that resolves to loopback
    ("http://169.254.169.254/latest/meta-data/", "points at a link-local address"),
    ("http://[::ffff:192.168.1.1]/", "points at a private address"),
    ("file:///etc/passwd", "must be an http:// or https:// URL"),
    ("gopher://example.com/", "must be an http:// or https:// URL"),
    ("http://user:pw@example.com/", "must not carry a user name or password"),
    ("https://example.com/" + "a" * 2100, "must be at most 2048 characters"),
    (42, "must be an http:// or https:// URL (a string)"),
])
async def test_callback_urls_into_private_networks_are_refused(settings, engine, url, words):
    strict = settings.model_copy(update={"webhook_secret": SecretStr(SECRET)})
    async with serve(strict, engine, start_worker=False) as (app, client):
        response = await client.post("/release_task", json={**FAST_SONG, "webhook_url": url})
        assert response.status_code == 400
        detail = response.json()["detail"]
        assert detail.startswith("webhook_url ") and words in detail, detail
        assert app.state.queue.size == 0


async def test_every_route_that_takes_a_webhook_refuses_alike(settings, engine):
    strict = settings.model_copy(update={"webhook_secret": SecretStr(SECRET)})
    async with serve(strict, engine, start_worker=False) as (app, client):
        legacy = await client.post("/v1/music/generate", json={**FAST_SONG, "webhook": "http://127.0.0.1/"})
        assert legacy.status_code == 400 and legacy.json()["detail"].startswith("webhook points at a loopback")
        form = await client.post("/release_task", data={"caption": "x", "webhookUrl": "http://192.168.0.9/"})
        assert form.status_code == 400 and form.json()["detail"].startswith("webhookUrl points at a private")
        fal = await client.post("/fal-ai/ace-step/prompt-to-audio", params={"fal_webhook": "http://[::1]/"},
                                json={"prompt": "a song", "duration": 10})
        assert fal.status_code == 400 and fal.json()["detail"].startswith("fal_webhook points at a loopback")
        assert app.state.queue.size == 0


async def test_the_server_itself_is_refused_even_where_private_addresses_are_allowed(hook_settings, engine):
    async with serve(hook_settings, engine, start_worker=False) as (app, client):
        own = f"http://127.0.0.1:{hook_settings.api_port}/release_task"
        response = await client.post("/release_task", json={**FAST_SONG, "webhook_url": own})
        assert response.status_code == 400
        assert response.json()["detail"] == "webhook_url points at this server itself"


async def test_without_a_secret_a_webhook_is_refused(settings, engine):
    async with serve(settings, engine, start_worker=False) as (app, client):
        response = await client.post("/release_task", json={**FAST_SONG, "webhook_url": "https://example.com/h"})
        assert response.status_code == 400
        assert response.json()["detail"] == (
            "webhook_url cannot be used: this server has no webhook secret (ACESTEP_WEBHOOK_SECRET), "
            "and it never sends unsigned webhooks")
        assert app.state.queue.size == 0
        # Without a webhook nothing changes, and the answer carries no webhook object.
        task_id = await release(client, **FAST_SONG)
        assert "webhook" not in await item_of(client, task_id)


