"""The page's event functions: what happens on load, on a model change, on Generate and on
Cancel. Each returns (or yields) plain values and `gr.update`s in the order app.py wires
them; the work itself is done by form, api_calls, picture and status_text."""

from __future__ import annotations

import atexit
import logging
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import gradio as gr

from acestep_api.client.api_client import AceStepClient
from acestep_api.ui import api_calls, form, picture, status_text

logger = logging.getLogger(__name__)

HEAD_OUTPUTS = 4  # Generate's outputs before the slots: status, model dropdown, inventory, notes
SLOT_OUTPUTS = 5  # per result slot: its column, player, picture, download, details
DOWNLOAD_MAX_AGE = 3600.0  # Gradio keeps its own copy of what a page was sent

FORM_FIELDS = [f.name for f in fields(form.FormValues)]


@dataclass
class UiContext:
    """What every event function needs: where the API is, and where downloads go."""

    api_url: str
    api_key: str | None = None
    download_root: Path | None = None

    def __post_init__(self) -> None:
        if self.download_root is None:
            self.download_root = Path(tempfile.mkdtemp(prefix="acestep-ui-"))
            atexit.register(shutil.rmtree, self.download_root, ignore_errors=True)
        self._running: dict[str, str] = {}  # browser session -> its task id in flight
        self._lock = threading.Lock()

    def client(self) -> AceStepClient:
        return AceStepClient(self.api_url, self.api_key)

    def remember(self, session: str, task_id: str | None) -> None:
        with self._lock:
            if task_id is None:
                self._running.pop(session, None)
            else:
                self._running[session] = task_id

    def running_task(self, session: str) -> str | None:
        with self._lock:
            return self._running.get(session)


def _session(request: gr.Request | None) -> str:
    return getattr(request, "session_hash", None) or "local"


def _hidden_slots() -> list[Any]:
    values: list[Any] = []
    for _ in range(form.MAX_BATCH):
        values += [gr.update(visible=False), None, None, None, ""]
    return values


def _unchanged_slots() -> list[Any]:
    return [gr.update() for _ in range(form.MAX_BATCH * SLOT_OUTPUTS)]


def _song_slots(songs: list[api_calls.Song]) -> list[Any]:
    values: list[Any] = []
    for index in range(form.MAX_BATCH):
        if index >= len(songs):
            values += [gr.update(visible=False), None, None, None, ""]
            continue
        song = songs[index]
        try:
            image = picture.picture_of_file(song.path)
        except Exception as exc:  # an undecodable file still gets its player and download
            logger.warning("no picture for %s: %s", song.path, exc)
            image = None
        values += [gr.update(visible=True), str(song.path), image, str(song.path),
                   status_text.song_details(song.element, index)]
    return values


# --- model choices ------------------------------------------------------------------------

def model_choices(inventory: list[dict]) -> list[tuple[str, str]]:
    choices = [("Server default", form.SERVER_DEFAULT_MODEL)]
    for entry in inventory:
        label = entry["name"] + (" (default)" if entry.get("is_default") else "")
        choices.append((label, entry["name"]))
    return choices


def load_models(context: UiContext, current_model: str, current_task: str) -> tuple[Any, Any, list[dict], str]:
    """Fill the model dropdown from the server; when it is not up yet the page still works
    (the server default is used) and Generate tries again."""
    try:
        with context.client() as client:
            inventory = api_calls.fetch_inventory(client)
    except api_calls.UiError as exc:
        return gr.update(), gr.update(), [], f"⚠️ Models not loaded yet: {exc}"
    return (*_choice_updates(inventory, current_model, current_task), inventory, "")


def _choice_updates(inventory: list[dict], model: str, task: str) -> tuple[Any, Any]:
    names = {entry["name"] for entry in inventory}
    model = model if model in names else form.SERVER_DEFAULT_MODEL
    tasks = form.task_types_for(model, inventory)
    return (gr.update(choices=model_choices(inventory), value=model),
            gr.update(choices=tasks, value=task if task in tasks else tasks[0]))


def task_choices(model: str, task: str, inventory: list[dict]) -> Any:
    tasks = form.task_types_for(model, inventory or [])
    return gr.update(choices=tasks, value=task if task in tasks else tasks[0])


def source_visibility(task: str) -> tuple[Any, Any]:
    """Show the source upload for tasks that read one, and the repaint range for repaint."""
    return gr.update(visible=task in form.SOURCE_TASK_TYPES), gr.update(visible=task == "repaint")


# --- generate and cancel --------------------------------------------------------------------

def generate(context: UiContext, inventory: list[dict], *values: Any, request: gr.Request | None = None
             ) -> Iterator[list[Any]]:
    """Submit the form, report queue place and progress while the job runs, then show each
    song. Every failure ends as a message in the status line.

    Yields [status, model dropdown, inventory, notes, *result slots]; the model dropdown is
    filled here when the page loaded before the server was up."""
    session = _session(request)
    started = time.monotonic()
    head = [gr.update(), inventory, gr.update()]

    def frame(status: str, slots: list[Any]) -> list[Any]:
        return [status, *head, *slots]

    try:
        release = form.build_release_request(form.FormValues(**dict(zip(FORM_FIELDS, values))))
    except form.FormError as exc:
        yield frame(status_text.failure_text(str(exc)), _hidden_slots())
        return
    except Exception as exc:  # a widget value of a shape the form does not expect
        logger.exception("could not read the form")
        yield frame(status_text.failure_text(f"Could not read the form: {exc}"), _hidden_slots())
        return

    client = context.client()
    task_id = None
    try:
        if not inventory:
            try:
                refreshed = api_calls.fetch_inventory(client)
            except api_calls.UiError:
                refreshed = []  # the submit below reports what is wrong
            if refreshed:
                chosen = values[FORM_FIELDS.index("model")]
                head = [gr.update(choices=model_choices(refreshed), value=chosen), refreshed, ""]
        yield frame(f"⏳ Submitting to {context.api_url}…", _hidden_slots())
        task_id = api_calls.submit(client, release)
        context.remember(session, task_id)
        state = None
        for state in api_calls.follow(client, task_id):
            if not state.finished:
                yield frame(status_text.waiting_text(state, time.monotonic() - started), _unchanged_slots())
        if state is None or not state.succeeded:
            message = status_text.finished_text(state, 0, 0) if state else status_text.failure_text("no answer")
            yield frame(message, _hidden_slots())
            return
        yield frame("⬇️ Downloading the songs…", _unchanged_slots())
        api_calls.prune_folders(context.download_root, DOWNLOAD_MAX_AGE)
        folder = context.download_root / uuid.uuid4().hex
        songs = api_calls.download_songs(client, state, folder, release.fields.get("audio_format", "mp3"))
        if not songs:
            yield frame(status_text.failure_text("The job succeeded but returned no audio files."), _hidden_slots())
            return
        yield frame(status_text.finished_text(state, len(songs), time.monotonic() - started), _song_slots(songs))
    except api_calls.UiError as exc:
        yield frame(status_text.failure_text(str(exc)), _hidden_slots())
    except Exception as exc:  # never a traceback on the page; the log keeps it
        logger.exception("generation failed")
        yield frame(status_text.failure_text(api_calls.readable_error(exc, context.api_url)), _hidden_slots())
    finally:
        if task_id is not None:
            context.remember(session, None)
        client.close()


def cancel(context: UiContext, request: gr.Request | None = None) -> str:
    """Ask the server to stop this page's job; the Generate flow then reports it as cancelled."""
    task_id = context.running_task(_session(request))
    if task_id is None:
        return "Nothing to cancel."
    try:
        with context.client() as client:
            return api_calls.cancel(client, task_id)
    except api_calls.UiError as exc:
        return status_text.failure_text(str(exc))
