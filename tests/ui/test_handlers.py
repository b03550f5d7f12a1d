"""The page's event functions against a real demo API process (and a closed port)."""

from __future__ import annotations

import dataclasses

import pytest
import soundfile as sf

from acestep_api.ui import handlers, picture
from acestep_api.ui.form import MAX_BATCH, FormValues
from tests.e2e.server_process import free_port


def form_values(**overrides) -> list:
    values = FormValues(**{"caption": "lofi hip hop", "duration": 10, "batch_size": 1, **overrides})
    return [getattr(values, name) for name in handlers.FORM_FIELDS]


def statuses(frames: list[list]) -> list[str]:
    return [frame[0] for frame in frames]


def slot(frame: list, index: int) -> list:
    """Result slot `index` (0-based) of a Generate frame: column, player, picture, download, details."""
    start = handlers.HEAD_OUTPUTS + index * handlers.SLOT_OUTPUTS
    return frame[start:start + handlers.SLOT_OUTPUTS]


@pytest.fixture
def context(demo_api, tmp_path):
    return handlers.UiContext(api_url=demo_api.url, download_root=tmp_path / "downloads")


def test_every_frame_fills_every_output(context):
    frames = list(handlers.generate(context, [], *form_values(seed="not a number")))
    assert all(len(frame) == handlers.HEAD_OUTPUTS + MAX_BATCH * handlers.SLOT_OUTPUTS for frame in frames)
    assert statuses(frames)[-1].startswith("❌ seed must be 'random'")


def test_a_server_that_is_down_is_named_in_the_status(tmp_path):
    down = handlers.UiContext(api_url=f"http://127.0.0.1:{free_port()}", download_root=tmp_path)
    frames = list(handlers.generate(down, [], *form_values()))
    assert "Cannot reach the API at http://127.0.0.1:" in statuses(frames)[-1]
    # The page still loads: the models wait for the server.
    model, task, inventory, note = handlers.load_models(down, "", "text2music")
    assert inventory == [] and "Models not loaded yet" in note


def test_the_servers_refusal_is_shown_and_the_models_fill_on_first_use(context):
    frames = list(handlers.generate(context, [], *form_values(duration=5000)))
    final = frames[-1]
    assert final[0] == "❌ The API answered 400: audio_duration must be between 10 and 600 seconds (got 5000)"
    # The page had no models (the server was not up when it loaded): Generate fetched them.
    model_update, inventory, notes = final[1:4]
    assert [entry["name"] for entry in inventory] == ["acestep-v15-turbo", "acestep-v15-base"]
    assert ("acestep-v15-base", "acestep-v15-base") in model_update["choices"] and notes == ""
    # No result slot is shown for a refused request.
    assert all(slot(final, i)[0]["visible"] is False for i in range(MAX_BATCH))


def test_models_and_task_types_come_from_the_server(context):
    model, task, inventory, note = handlers.load_models(context, "", "lego")
    assert note == "" and model["value"] == ""
    assert [value for _, value in model["choices"]] == ["", "acestep-v15-turbo", "acestep-v15-base"]
    # The default (turbo) model serves no lego: the task falls back to the first it serves.
    assert task["choices"] == ["text2music", "cover", "repaint"] and task["value"] == "text2music"
    base_tasks = handlers.task_choices("acestep-v15-base", "lego", inventory)
    assert base_tasks["value"] == "lego" and len(base_tasks["choices"]) == 6


def test_a_finished_job_is_downloaded_drawn_and_described(context):
    frames = list(handlers.generate(context, [], *form_values(audio_format="opus", seed="1234")))
    final = frames[-1]
    assert final[0].startswith("✅ Done: 1 song in"), statuses(frames)
    assert any(status.startswith(("⏳ Queued", "🎛️ Running")) for status in statuses(frames))
    column, player, image, download, details = slot(final, 0)
    assert column["visible"] is True
    assert player == download and player.endswith(".opus")
    samples, rate = sf.read(player)
    assert rate == 48000 and abs(len(samples) / rate - 10.0) < 0.1  # the very file the server wrote
    assert image.size == (picture.WIDTH, picture.HEIGHT)
    assert "**Seed:** 1234" in details and "Generation info" in details
    # The other slots stay hidden.
    assert slot(final, 1)[0]["visible"] is False


def test_cancel_stops_this_pages_job(context):
    assert handlers.cancel(context) == "Nothing to cancel."
    flow = handlers.generate(context, [], *form_values(batch_size=2, duration=30))
    for frame in flow:
        if frame[0].startswith(("⏳ Queued", "🎛️ Running")):
            break
    else:
        pytest.fail("the job never reported itself queued or running")
    assert handlers.cancel(context).startswith("Cancel requested for task")
    rest = statuses(list(flow))
    assert rest[-1] == "❌ Cancelled by request", rest[-3:]
    assert handlers.cancel(context) == "Nothing to cancel."


def test_source_upload_and_repaint_range_follow_the_task():
    source, repaint = handlers.source_visibility("repaint")
    assert source["visible"] and repaint["visible"]
    source, repaint = handlers.source_visibility("text2music")
    assert not source["visible"] and not repaint["visible"]


def test_form_fields_are_the_form_values():
    assert handlers.FORM_FIELDS == [field.name for field in dataclasses.fields(FormValues)]
