"""The UI offers the loaded DiTs only: /v1/model_inventory also lists folders on disk that are not
loaded, and a request naming one is refused unless the server loads models on demand."""

from __future__ import annotations

import httpx

from acestep_api.client.api_client import AceStepClient
from acestep_api.ui.api_calls import fetch_inventory


def test_the_ui_offers_the_loaded_models_only():
    inventory = {"models": [
        {"name": "acestep-v15-turbo", "is_loaded": True, "supported_task_types": ["text2music"]},
        {"name": "acestep-v15-sft", "is_loaded": False, "supported_task_types": ["text2music", "lego"]},
        {"name": "older-server-entry", "supported_task_types": ["text2music"]},  # no is_loaded: loaded
    ]}

    def answer(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/model_inventory"
        return httpx.Response(200, json={"data": inventory, "code": 200, "error": None})

    with AceStepClient("http://api", transport=httpx.MockTransport(answer)) as client:
        names = [entry["name"] for entry in fetch_inventory(client)]
    assert names == ["acestep-v15-turbo", "older-server-entry"]
