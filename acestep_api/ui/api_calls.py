"""What the UI asks of the REST API, through AceStepClient, with every failure turned into a
sentence a person can act on.

The UI is just another client: its jobs wait in the server's one queue with everyone else's.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import httpx

from acestep_api.client.api_client import AceStepClient, ApiError, TaskState
from acestep_api.ui.form import ReleaseRequest

logger = logging.getLogger(__name__)

POLL_INTERVAL = 0.5  # seconds: about twice a second, as the page updates
# A server that stops answering for this long (a restart, a dropped network) ends the wait.
UNREACHABLE_GRACE = 30.0
MAX_WAIT = 6 * 3600.0  # a job still unfinished after this is left to the server


class UiError(Exception):
    """A failure the page shows as it is: the message is meant for the user."""


def _detail(body: str) -> str:
    """The message inside an error body: FastAPI's `detail`, the envelope's `error`, or the text."""
    try:
        payload = json.loads(body)
    except ValueError:
        return body.strip() or "no message"
    if isinstance(payload, dict):
        for key in ("detail", "error", "message"):
            value = payload.get(key)
            if isinstance(value, str) and value:
                return value
            if isinstance(value, list) and value:  # pydantic-style error lists
                return "; ".join(str(item.get("msg", item)) if isinstance(item, dict) else str(item) for item in value)
    return body.strip()


def readable_error(exc: BaseException, api_url: str) -> str:
    if isinstance(exc, UiError):
        return str(exc)
    if isinstance(exc, ApiError):
        if exc.status_code == 401:
            return f"The API refused the key (401): {_detail(exc.body)}. Start the UI with --api-key."
        return f"The API answered {exc.status_code}: {_detail(exc.body)}"
    if isinstance(exc, httpx.TimeoutException):
        return f"The API at {api_url} did not answer in time."
    if isinstance(exc, httpx.HTTPError):
        return f"Cannot reach the API at {api_url} ({type(exc).__name__}). Is the server running?"
    if isinstance(exc, OSError):
        return f"Local file problem: {exc}"
    return f"Unexpected error: {type(exc).__name__}: {exc}"


def fetch_inventory(client: AceStepClient) -> list[dict]:
    """The server's loaded DiT models with their task types (/v1/model_inventory also lists the
    folders on disk that are not loaded; a request naming one is refused unless the server
    loads models on demand)."""
    try:
        models = client.models()
    except Exception as exc:
        raise UiError(readable_error(exc, client.base_url)) from exc
    return [entry for entry in models
            if isinstance(entry, dict) and entry.get("name") and entry.get("is_loaded", True)]


def submit(client: AceStepClient, request: ReleaseRequest) -> str:
    for name, path in request.files.items():
        if not path.is_file():
            raise UiError(f"{name}: the uploaded file {path.name} is gone; upload it again")
    try:
        data = client.release_task(request.fields, files=request.files or None)
    except Exception as exc:
        raise UiError(readable_error(exc, client.base_url)) from exc
    task_id = data.get("task_id") if isinstance(data, dict) else None
    if not task_id:
        raise UiError(f"The API accepted the request but sent no task_id: {data!r}")
    return task_id


def follow(
    client: AceStepClient,
    task_id: str,
    *,
    poll_interval: float = POLL_INTERVAL,
    max_wait: float = MAX_WAIT,
    unreachable_grace: float = UNREACHABLE_GRACE,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[TaskState]:
    """Poll the task and yield each state, the last one finished. Short outages of the
    server are waited out; a longer one, or a job past `max_wait`, raises UiError."""
    start = clock()
    last_answer = last_known = start
    while True:
        try:
            state = client.query(task_id)
        except (httpx.HTTPError, ApiError) as exc:
            if isinstance(exc, ApiError) and exc.status_code < 500:
                raise UiError(readable_error(exc, client.base_url)) from exc
            if clock() - last_answer > unreachable_grace:
                raise UiError(f"{readable_error(exc, client.base_url)} The job (task {task_id}) may "
                              "still finish on the server.") from exc
        else:
            last_answer = clock()
            if state.known:
                last_known = last_answer
            elif last_answer - last_known > unreachable_grace:
                raise UiError(f"The server no longer knows task {task_id}; it may have been removed.")
            yield state
            if state.finished:
                return
        if clock() - start > max_wait:
            raise UiError(f"Stopped waiting after {int(max_wait)} s; task {task_id} is still unfinished on the server.")
        sleep(poll_interval)


@dataclass
class Song:
    """One finished song: the downloaded file and its result element."""

    path: Path
    element: dict


def _file_name(url: str, index: int, fallback_format: str) -> str:
    """The server's own file name (from `/v1/audio?path=...`), else song_N.<format>."""
    paths = parse_qs(urlparse(url).query).get("path") or [urlparse(url).path]
    name = Path(paths[0]).name
    return name if Path(name).suffix else f"song_{index + 1}.{fallback_format}"


def download_songs(client: AceStepClient, state: TaskState, folder: Path, audio_format: str = "mp3") -> list[Song]:
    """Download every audio file of a finished task into `folder`, in batch order."""
    songs = []
    folder.mkdir(parents=True, exist_ok=True)
    audio_elements = [element for element in state.elements if element.get("file")]
    for index, element in enumerate(audio_elements):
        target = folder / f"{index + 1}_{_file_name(element['file'], index, audio_format)}"
        try:
            client.download(element["file"], target)
        except Exception as exc:
            raise UiError(f"Song {index + 1} could not be downloaded: {readable_error(exc, client.base_url)}") from exc
        songs.append(Song(path=target, element=element))
    return songs


def cancel(client: AceStepClient, task_id: str) -> str:
    try:
        client.cancel(task_id)
    except Exception as exc:
        raise UiError(readable_error(exc, client.base_url)) from exc
    return f"Cancel requested for task `{task_id}`."


def prune_folders(root: Path, max_age: float, now: float | None = None) -> None:
    """Remove the per-generation download folders older than `max_age` seconds (Gradio has
    copied their files into its own cache by then)."""
    now = time.time() if now is None else now
    if not root.is_dir():
        return
    for child in root.iterdir():
        try:
            if child.is_dir() and now - child.stat().st_mtime > max_age:
                shutil.rmtree(child, ignore_errors=True)
        except OSError:
            logger.debug("could not prune %s", child, exc_info=True)
