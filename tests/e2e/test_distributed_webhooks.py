"""Webhooks of the distributed mode as deployed: two API replicas and a GPU worker
(`acestep-api worker`), all with the signing secret, on one PostgreSQL. A job accepted by
replica A and run by the worker reaches a receiver on loopback exactly once, signed, though
three processes run sender loops; replica B shows the delivery."""

from __future__ import annotations

import base64
import time

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from tests.e2e.distributed_processes import ReplicaProcess, WorkerProcess
from tests.webhook_receiver import receiving

SECRET = "whsec_" + base64.b64encode(bytes(range(32, 64))).decode()


@pytest.mark.e2e
def test_a_job_through_real_processes_is_delivered_once(tmp_path, postgres_url):
    out = tmp_path / "shared-outputs"
    env = {"ACESTEP_WEBHOOK_SECRET": SECRET, "ACESTEP_WEBHOOK_ALLOW_PRIVATE": "true",
           "ACESTEP_WORKER_STALL_SECONDS": "3"}
    replicas = [ReplicaProcess(out, postgres_url, env).start() for _ in range(2)]
    worker = WorkerProcess(out, postgres_url, "w1", env)
    try:
        with receiving() as receiver:
            a, b = (httpx.Client(base_url=replica.url, timeout=30) for replica in replicas)
            accepted = a.post("/release_task", json={"prompt": "song", "audio_duration": 10, "inference_steps": 2,
                                                     "webhook_url": receiver.url})
            assert accepted.status_code == 200, accepted.text
            task_id = accepted.json()["data"]["task_id"]
            worker.start().wait_registered()

            deadline = time.monotonic() + 300
            webhook = None
            while time.monotonic() < deadline:
                [item] = b.post("/query_result", json={"task_id_list": [task_id]}).json()["data"]
                webhook = item["webhook"]
                if webhook["status"] in ("delivered", "failed"):
                    break
                time.sleep(0.2)
            assert webhook["status"] == "delivered" and webhook["attempts"] == 1, webhook
            time.sleep(1.0)  # time for a duplicate to show, were one sent
            assert len(receiver.received) == 1
            body = Webhook(SECRET).verify(receiver.received[0].body, receiver.received[0].headers)
            assert body["task_id"] == task_id and body["status"] == 1
            assert a.get(f"/v1/jobs/{task_id}").json()["webhook"] == webhook
    finally:
        for process in [worker, *replicas]:
            process.stop()
