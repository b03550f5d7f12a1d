"""The absolute base URL: `public_url`, a trusted proxy's forwarding headers, else the request
itself; through an app served in-process and through a real uvicorn with its proxy handling."""

from __future__ import annotations

from contextlib import contextmanager

import httpx
import pytest
from fastapi import FastAPI, Request

from acestep_api.server.public_url import (
    absolute_url,
    forwarded_fields,
    forwarded_origin,
    peer_is_trusted,
    public_base_url,
)
from acestep_api.settings import Settings
from tests.uvicorn_thread import uvicorn_serving as serving

pytestmark = pytest.mark.anyio

PROXY_HEADERS = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "abc123-8000.proxy.runpod.net"}


def url_app(settings: Settings) -> FastAPI:
    app = FastAPI()

    @app.get("/where")
    async def where(request: Request) -> dict:
        return {
            "base": public_base_url(request, settings),
            "audio": absolute_url(request, settings, "/v1/audio?path=%2Fa"),
        }

    return app


def settings_with(**values) -> Settings:
    return Settings(_env_file=None, **values)


async def base_for(settings: Settings, peer: str, headers: dict | None = None, *, port: int = 51000,
                   base_url: str = "http://testserver", root_path: str = "") -> str:
    transport = httpx.ASGITransport(app=url_app(settings), client=(peer, port), root_path=root_path)
    async with httpx.AsyncClient(transport=transport, base_url=base_url) as client:
        response = await client.get("/where", headers=headers or {})
    assert response.status_code == 200
    return response.json()["base"]


# --- In-process ----------------------------------------------------------------------------


async def test_without_headers_the_request_itself():
    assert await base_for(settings_with(), "127.0.0.1") == "http://testserver"
    direct = await base_for(settings_with(), "192.0.2.1", base_url="https://example.org:8443")
    assert direct == "https://example.org:8443"


async def test_a_trusted_peer_sets_scheme_and_host():
    settings = settings_with(forwarded_allow_ips="127.0.0.1")
    assert await base_for(settings, "127.0.0.1", PROXY_HEADERS) == "https://abc123-8000.proxy.runpod.net"


async def test_an_untrusted_peer_cannot():
    settings = settings_with(forwarded_allow_ips="127.0.0.1")
    assert await base_for(settings, "192.0.2.1", PROXY_HEADERS) == "http://testserver"


@pytest.mark.parametrize("allowed,peer,trusted", [
    ("*", "198.51.100.4", True),
    ("10.0.0.1, 127.0.0.1", "127.0.0.1", True),
    ("10.0.0.0/8", "10.200.3.4", True),
    ("10.0.0.0/8", "11.0.0.1", False),
    ("::1", "::1", True),
    ("", "127.0.0.1", False),
    ("127.0.0.1", "not-an-ip", False),
])
async def test_forwarded_allow_ips(allowed, peer, trusted):
    base = await base_for(settings_with(forwarded_allow_ips=allowed), peer, PROXY_HEADERS)
    assert base == ("https://abc123-8000.proxy.runpod.net" if trusted else "http://testserver")


def test_peer_rules():
    assert peer_is_trusted(None, "*")
    assert not peer_is_trusted(None, "127.0.0.1")
    # Port 0: uvicorn already put a trusted proxy's X-Forwarded-For client in the peer's place.
    assert peer_is_trusted(("203.0.113.7", 0), "127.0.0.1")
    assert not peer_is_trusted(("203.0.113.7", 1234), "127.0.0.1")


async def test_first_value_of_a_comma_list():
    settings = settings_with(forwarded_allow_ips="*")
    headers = {"X-Forwarded-Proto": "https, http", "X-Forwarded-Host": "public.example, proxy.internal:8080"}
    assert await base_for(settings, "10.0.0.1", headers) == "https://public.example"


async def test_the_standard_forwarded_header():
    settings = settings_with(forwarded_allow_ips="*")
    headers = {"Forwarded": 'for=192.0.2.60;proto=https;host="music.example:8443", for=10.0.0.2;host=inner'}
    assert await base_for(settings, "10.0.0.1", headers) == "https://music.example:8443"
    # X-Forwarded-* first, field by field.
    headers["X-Forwarded-Host"] = "x.example"
    assert await base_for(settings, "10.0.0.1", headers) == "https://x.example"


async def test_only_one_header_given():
    settings = settings_with(forwarded_allow_ips="*")
    assert await base_for(settings, "10.0.0.1", {"X-Forwarded-Proto": "https"}) == "https://testserver"
    assert await base_for(settings, "10.0.0.1", {"X-Forwarded-Host": "h.example"}) == "http://h.example"


@pytest.mark.parametrize("headers,expected", [
    ({"X-Forwarded-Proto": "javascript", "X-Forwarded-Host": "ok.example"}, "http://ok.example"),
    ({"X-Forwarded-Host": "evil.example/path"}, "http://testserver"),
    ({"X-Forwarded-Host": "user@evil.example"}, "http://testserver"),
    ({"X-Forwarded-Host": "a b"}, "http://testserver"),
])
async def test_unusable_values_are_ignored(headers, expected):
    assert await base_for(settings_with(forwarded_allow_ips="*"), "10.0.0.1", headers) == expected


def test_forwarded_fields_parsing():
    assert forwarded_fields('For="[2001:db8::1]:4711";Proto=HTTPS;Host="a.example"') == {
        "for": "[2001:db8::1]:4711", "proto": "HTTPS", "host": "a.example"}
    assert forwarded_fields(None) == {}
    assert forwarded_origin({"forwarded": "proto=HTTPS;host=[2001:db8::1]:8000"}) == ("https", "[2001:db8::1]:8000")


async def test_public_url_wins_over_everything():
    settings = settings_with(public_url="https://pod.example/", forwarded_allow_ips="*")
    assert await base_for(settings, "10.0.0.1", PROXY_HEADERS) == "https://pod.example"


async def test_mount_path_is_kept():
    assert await base_for(settings_with(), "127.0.0.1", root_path="/music") == "http://testserver/music"


async def test_absolute_urls_pass_through():
    transport = httpx.ASGITransport(app=url_app(settings_with()))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        assert (await client.get("/where")).json()["audio"] == "http://testserver/v1/audio?path=%2Fa"


# --- Behind a real uvicorn, whose own proxy handling runs first ----------------------------


@contextmanager
def uvicorn_serving(allowed: str):
    """`url_app` under uvicorn with proxy headers on, as `acestep-api serve` runs it."""
    app = url_app(settings_with(forwarded_allow_ips=allowed))
    with serving(app, proxy_headers=True, forwarded_allow_ips=allowed) as url:
        yield url


def test_under_uvicorn_a_local_proxy_is_trusted():
    headers = {**PROXY_HEADERS, "X-Forwarded-For": "203.0.113.7"}
    with uvicorn_serving("127.0.0.1") as url:
        # uvicorn replaced the peer with 203.0.113.7; the headers still came from the proxy.
        assert httpx.get(f"{url}/where", headers=headers).json()["base"] == "https://abc123-8000.proxy.runpod.net"
        assert httpx.get(f"{url}/where", headers=PROXY_HEADERS).json()["base"] == "https://abc123-8000.proxy.runpod.net"


def test_under_uvicorn_an_untrusted_peer_is_ignored():
    headers = {**PROXY_HEADERS, "X-Forwarded-For": "203.0.113.7"}
    with uvicorn_serving("10.9.9.9") as url:
        assert httpx.get(f"{url}/where", headers=headers).json()["base"] == url
