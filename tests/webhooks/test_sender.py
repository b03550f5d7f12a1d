"""The delivery loop against a real receiver on loopback, with host names resolved by a table
of our own: an attempt connects to the address it checked (a host name that has moved to a
loopback address since the job was submitted is refused at send time, DNS rebinding)."""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import time
import urllib.parse

import pytest
from standardwebhooks.webhooks import Webhook

from acestep_api.engine.request import GenerationRequest
from acestep_api.jobs.models import Job
from acestep_api.jobs.store import JobStore
from acestep_api.webhooks.deliveries import DeliveryState
from acestep_api.webhooks.sender import WebhookSender, retry_delay
from acestep_api.webhooks.sqlite_deliveries import SQLiteDeliveryStore
from tests.webhook_receiver import receiving

pytestmark = pytest.mark.anyio

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def stores(tmp_path):
    jobs = JobStore(tmp_path / "jobs.sqlite3")
    deliveries = SQLiteDeliveryStore(tmp_path / "jobs.sqlite3")
    yield jobs, deliveries
    deliveries.close()
    jobs.close()


def to_loopback(host: str, port: int):
    return [ipaddress.ip_address("127.0.0.1")]


async def until_settled(deliveries, job_id: str, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        delivery = deliveries.get(job_id)
        if delivery.state in (DeliveryState.DELIVERED, DeliveryState.FAILED):
            return delivery
        await asyncio.sleep(0.02)
    raise AssertionError("the delivery did not settle")


def pending(stores, url: str) -> str:
    jobs, deliveries = stores
    jobs.add(Job(id="job-1", request=GenerationRequest(), created_at=time.time()))
    deliveries.register("job-1", url, time.time())
    assert deliveries.job_ended("job-1", json.dumps({"task_id": "job-1", "status": 1}), time.time())
    return "job-1"


async def test_an_attempt_connects_to_the_checked_address_with_the_original_host(stores):
    with receiving() as receiver:
        port = urllib.parse.urlsplit(receiver.url).port
        job_id = pending(stores, f"http://hooks.example:{port}/hook")
        sender = WebhookSender(stores[1], SECRET, allow_private=True, resolve=to_loopback)
        sender.start()
        try:
            delivery = await until_settled(stores[1], job_id)
        finally:
            await sender.stop()
        assert delivery.state is DeliveryState.DELIVERED and delivery.attempts == 1
        [received] = receiver.received
        assert received.headers["host"] == f"hooks.example:{port}"
        assert Webhook(SECRET).verify(received.body, received.headers) == {"task_id": "job-1", "status": 1}


async def test_a_host_that_moved_to_a_private_address_is_refused_at_send_time(stores):
    with receiving() as receiver:
        port = urllib.parse.urlsplit(receiver.url).port
        # Accepted when submitted (it resolved elsewhere then); now it resolves to loopback.
        job_id = pending(stores, f"http://rebound.example:{port}/hook")
        sender = WebhookSender(stores[1], SECRET, allow_private=False, resolve=to_loopback)
        sender.start()
        try:
            delivery = await until_settled(stores[1], job_id)
        finally:
            await sender.stop()
        assert delivery.state is DeliveryState.FAILED and delivery.attempts == 1
        assert delivery.last_error.startswith("Not sent: the URL points at a loopback address (127.0.0.1)")
        assert receiver.received == []


def test_retry_delays_double():
    assert [retry_delay(n, 10.0) for n in (1, 2, 3, 7)] == [10.0, 20.0, 40.0, 640.0]
