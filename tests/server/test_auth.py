"""The optional API key (docs/wire-contract.md#authentication, and its "auth" conformance example)."""

from __future__ import annotations

import pytest

from tests.server.conftest import serve

pytestmark = pytest.mark.anyio


@pytest.fixture
async def secured(settings, engine):
    async with serve(settings.model_copy(update={"api_key": "secret"}), engine, start_worker=False) as running:
        yield running


async def test_e13_body_routes(secured):
    _, client = secured
    response = await client.post("/release_task", json={"prompt": "x"})
    assert (response.status_code, response.json()) == (401, {"detail": "Missing ai_token or Authorization header"})
    response = await client.post("/release_task", json={"prompt": "x", "ai_token": "bad"})
    assert (response.status_code, response.json()) == (401, {"detail": "Invalid ai_token"})
    response = await client.post("/release_task", json={"prompt": "x"}, headers={"Authorization": "Bearer secret"})
    assert response.status_code == 200
    response = await client.post("/release_task", json={"prompt": "x"}, headers={"Authorization": "secret"})
    assert response.status_code == 200  # a raw key works too
    response = await client.post("/release_task", json={"prompt": "x", "ai_token": "secret"})
    assert response.status_code == 200
    response = await client.post("/release_task", json={"prompt": "x"}, headers={"Authorization": "Bearer wrong"})
    assert (response.status_code, response.json()) == (401, {"detail": "Invalid API key"})
    response = await client.post("/release_task", json={"prompt": "x"}, headers={"Authorization": "bearer secret"})
    assert response.status_code == 401  # only the exact "Bearer " prefix is stripped


async def test_e13_ai_token_wins_over_the_header(secured):
    _, client = secured
    response = await client.post("/release_task", json={"ai_token": "bad"}, headers={"Authorization": "Bearer secret"})
    assert response.json() == {"detail": "Invalid ai_token"}
    response = await client.post("/release_task", json={"ai_token": ""}, headers={"Authorization": "Bearer secret"})
    assert response.status_code == 200  # an empty token is not a token


async def test_e13_body_errors_come_before_auth(secured):
    _, client = secured
    response = await client.post("/release_task", content=b"[1]", headers={"Content-Type": "application/json"})
    assert response.status_code == 400


async def test_ai_token_in_a_form(secured):
    _, client = secured
    response = await client.post("/release_task", data={"prompt": "x", "ai_token": "secret"})
    assert response.status_code == 200


@pytest.mark.parametrize("path", ["/query_result", "/create_random_sample", "/format_input"])
async def test_other_body_routes(secured, path):
    _, client = secured
    response = await client.post(path, json={})
    assert response.json() == {"detail": "Missing ai_token or Authorization header"}
    response = await client.post(path, json={"ai_token": "nope"})
    assert response.json() == {"detail": "Invalid ai_token"}
    response = await client.post(path, json={"ai_token": "secret"})
    assert response.status_code in (200, 503)


@pytest.mark.parametrize("path", ["/v1/stats", "/v1/model_inventory", "/v1/audio?path=/etc/passwd"])
async def test_header_only_routes(secured, path):
    _, client = secured
    response = await client.get(path)
    assert (response.status_code, response.json()) == (401, {"detail": "Missing Authorization header"})
    response = await client.get(path, headers={"Authorization": "Bearer nope"})
    assert (response.status_code, response.json()) == (401, {"detail": "Invalid API key"})
    response = await client.get(path, headers={"Authorization": "Bearer secret"})
    assert response.status_code in (200, 403)


async def test_header_only_routes_ignore_body_tokens(secured):
    _, client = secured
    response = await client.get("/v1/stats?ai_token=secret")
    assert response.status_code == 401


@pytest.mark.parametrize("path", ["/health", "/v1/models"])
async def test_open_routes(secured, path):
    _, client = secured
    assert (await client.get(path)).status_code == 200


async def test_empty_key_is_still_a_key(settings, engine):
    async with serve(settings.model_copy(update={"api_key": ""}), engine, start_worker=False) as (_, client):
        assert (await client.get("/v1/stats")).json() == {"detail": "Missing Authorization header"}
        response = await client.post("/release_task", json={"prompt": "x"})
        assert response.json() == {"detail": "Missing ai_token or Authorization header"}


async def test_no_key_means_no_auth(idle):
    _, client = idle
    assert (await client.get("/v1/stats")).status_code == 200
    assert (await client.post("/release_task", json={"prompt": "x", "ai_token": "anything"})).status_code == 200
