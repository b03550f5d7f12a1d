"""The browser UI in headless Chromium, against a real demo API process and a real UI process."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path
from urllib.parse import urljoin

import httpx
import pytest
import soundfile as sf

from tests.ui.ui_process import UiProcess

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    # This machine has no internet: nothing may wait on it.
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
RESULT_TIMEOUT_MS = 180_000


def chromium_path() -> str:
    wanted = os.environ.get("ACESTEP_CHROMIUM")
    candidates = [wanted] if wanted else [
        "/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")]
    for path in candidates:
        if path and Path(path).is_file():
            return path
    pytest.fail(f"No Chromium found (tried {', '.join(filter(None, candidates))}): run scripts/install-browser.sh "
                "or set ACESTEP_CHROMIUM to its path")


@pytest.fixture(scope="module")
def ui_server(demo_api_port, tmp_path_factory, request):
    # The UI starts while the API is still loading, as with `serve --ui`: it must cope.
    ui = UiProcess.ui(f"http://127.0.0.1:{demo_api_port}", tmp_path_factory.mktemp("ui")).launch()
    try:
        request.getfixturevalue("demo_api")
        yield ui.wait()
    finally:
        ui.stop()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, ui_server, tmp_path, request):
    """A fresh page on the UI; on failure its screenshot and the UI's log are kept in tmp_path."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    outside: list[str] = []
    page.on("request", lambda req: None if req.url.startswith((ui_server.url, "data:", "blob:"))
            else outside.append(req.url))
    page.goto(ui_server.url + "/")
    page.wait_for_selector("#generate")
    yield page
    failed = getattr(request.node, "rep_call", None) is None or request.node.rep_call.failed
    if failed:
        shot = tmp_path / "failure.png"
        page.screenshot(path=str(shot), full_page=True)
        print(f"screenshot: {shot}\nUI log:\n{ui_server.log()}")
    context.close()
    assert not outside, f"the page reached outside the UI server: {outside}"


def fill(page, elem_id: str, value: str) -> None:
    field = page.locator(f"#{elem_id} textarea, #{elem_id} input").first
    field.fill(value)
    field.press("Tab")  # Gradio takes a number when the field loses focus


def status_text(page) -> str:
    return page.locator("#status").inner_text()


def test_generate_shows_a_player_and_a_picture_per_song(page, ui_server):
    fill(page, "caption", "upbeat electronic dance music with heavy bass")
    fill(page, "lyrics", "[Verse]\nDancing through the night")
    fill(page, "duration", "10")
    fill(page, "batch-size", "2")
    page.click("#generate")

    # While the job waits or runs the status says where it stands, then it says it is done.
    page.wait_for_function("() => /Queued|Running|Submitting|Done/.test(document.querySelector('#status').innerText)",
                           timeout=30_000)
    page.wait_for_function("() => /Done|❌/.test(document.querySelector('#status').innerText)",
                           timeout=RESULT_TIMEOUT_MS)
    assert "Done: 2 songs" in status_text(page), status_text(page)

    for number in (1, 2):
        slot = page.locator(f"#result-{number}")
        assert slot.is_visible()
        audio = slot.locator("audio").first
        source = audio.get_attribute("src")
        assert source, f"song {number} has no audio source"
        # The browser loads and decodes it: a duration close to the 10 s asked for.
        duration = audio.evaluate(
            """(el) => new Promise((resolve, reject) => {
                if (el.readyState >= 1) return resolve(el.duration);
                el.addEventListener('loadedmetadata', () => resolve(el.duration), {once: true});
                el.addEventListener('error', () => reject(new Error('audio error ' + el.error?.code)), {once: true});
                el.load();
            })""")
        assert abs(duration - 10.0) < 0.5, duration
        # The same bytes, fetched as the browser would, are a 48 kHz stereo song.
        content = httpx.get(urljoin(ui_server.url + "/", source), timeout=30).content
        samples, rate = sf.read(io.BytesIO(content))
        assert rate == 48000 and samples.shape[1] == 2 and samples.std() > 0

        picture = slot.locator("img").first
        picture.wait_for(state="visible")
        width = picture.evaluate("(img) => img.complete ? img.naturalWidth : 0")
        assert width > 100, "the waveform picture did not load"
        assert "Seed:" in slot.locator(f"#result-{number}-details").inner_text()
        assert slot.locator(f"#result-{number}-file a").first.get_attribute("href")
    assert not page.locator("#result-3").is_visible()


def test_a_refused_request_shows_the_servers_message(page):
    fill(page, "caption", "a song")
    fill(page, "duration", "5000")
    page.click("#generate")
    page.wait_for_function("() => document.querySelector('#status').innerText.includes('❌')", timeout=30_000)
    text = status_text(page)
    assert "400" in text and "audio_duration must be between 10 and 600" in text, text
    assert "Traceback" not in page.content()
