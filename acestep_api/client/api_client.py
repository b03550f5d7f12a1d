"""A small synchronous client of the ACE-Step REST API (the official routes).

It speaks what every official client speaks: the wrapped envelope, `/release_task`,
`/query_result` with `task_id_list`, root-relative `/v1/audio?path=...` downloads. The
`acestep-api generate` command and the browser UI are built on it.

    client = AceStepClient("http://127.0.0.1:8001")
    task_id = client.submit(caption="lofi hip hop", lyrics="[inst]", duration=30, batch_size=2)
    state = client.wait(task_id, on_update=print)
    for index, url in enumerate(state.files):
        client.download(url, f"song_{index + 1}.mp3")
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

USER_AGENT = "ACE-Step-CLI/1.0"
REQUEST_TIMEOUT = 60.0  # seconds, as the community CLI
DOWNLOAD_TIMEOUT = 120.0

# /query_result's integer statuses (docs/wire-contract.md#integer-status-codes).
STATUS_PENDING, STATUS_SUCCEEDED, STATUS_FAILED = 0, 1, 2


class ApiError(Exception):
    """The server answered with an HTTP error, or with a wrapped `code` other than 200."""

    def __init__(self, status_code: int, body: str):
        super().__init__(f"API error {status_code}: {body}")
        self.status_code = status_code
        self.body = body


class TimeoutExpired(Exception):
    """`wait` gave up; the task may still finish on the server."""


@dataclass
class TaskState:
    """One task as /query_result reports it: `status` 0 (queued or running, or not yet known),
    1 (succeeded) or 2 (failed), and the parsed elements of its `result` list."""

    task_id: str
    status: int
    elements: list[dict] = field(default_factory=list)
    progress_text: str = ""
    known: bool = True  # False: the server has no such task (yet)

    @property
    def finished(self) -> bool:
        return self.status in (STATUS_SUCCEEDED, STATUS_FAILED)

    @property
    def succeeded(self) -> bool:
        return self.status == STATUS_SUCCEEDED

    @property
    def _first(self) -> dict:
        return self.elements[0] if self.elements else {}

    @property
    def queue_position(self) -> int | None:
        """1-based place in line while waiting; None once running or finished."""
        position = self._first.get("queue_position")
        return position if isinstance(position, int) and position > 0 else None

    @property
    def eta_seconds(self) -> float | None:
        return self._first.get("eta_seconds")

    @property
    def progress(self) -> float:
        value = self._first.get("progress")
        return float(value) if isinstance(value, (int, float)) else 0.0

    @property
    def stage(self) -> str:
        return str(self._first.get("stage") or self.progress_text or "")

    @property
    def error(self) -> str | None:
        return self._first.get("error")

    @property
    def files(self) -> list[str]:
        """Download URLs (root-relative) of the finished task's audio, in batch order."""
        return [element["file"] for element in self.elements if element.get("file")]


class AceStepClient:
    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: float = REQUEST_TIMEOUT,
        user_agent: str = USER_AGENT,
        transport: httpx.BaseTransport | None = None,
    ):
        self.base_url = base_url.rstrip("/")
        headers = {"User-Agent": user_agent}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout, transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "AceStepClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- requests -----------------------------------------------------------------------

    def _post(self, path: str, body: Mapping[str, Any] | None = None, files: Mapping | None = None) -> Any:
        if files:
            # Multipart: form fields as strings, lists and dicts as JSON.
            data = {k: v if isinstance(v, str) else json.dumps(v) for k, v in (body or {}).items() if v is not None}
            response = self._http.post(path, data=data, files=files)
        else:
            response = self._http.post(path, json=dict(body or {}))
        return self._data(response)

    def _get(self, path: str) -> Any:
        return self._data(self._http.get(path))

    @staticmethod
    def _data(response: httpx.Response) -> Any:
        if response.status_code >= 400:
            raise ApiError(response.status_code, response.text)
        payload = response.json()
        if isinstance(payload, dict) and "code" in payload and "data" in payload:
            if payload["code"] != 200:
                raise ApiError(payload["code"], payload.get("error") or response.text)
            return payload["data"]
        return payload

    # --- routes -------------------------------------------------------------------------

    def health(self) -> dict:
        return self._get("/health")

    def is_healthy(self) -> bool:
        """True when the server answers /health with `data.status == "ok"`."""
        try:
            data = self.health()
        except (httpx.HTTPError, ApiError, ValueError):
            return False
        return isinstance(data, dict) and data.get("status") == "ok"

    def models(self) -> list[dict]:
        """The DiT models on the server (`/v1/model_inventory`), the loaded ones first (`is_loaded`)."""
        return self._get("/v1/model_inventory").get("models", [])

    def release_task(self, fields: Mapping[str, Any], files: Mapping[str, Path | str] | None = None) -> dict:
        """POST /release_task with any of its fields; `files` maps upload fields
        (`src_audio`, `reference_audio`) to local files. Returns `data` (task_id, ...)."""
        if not files:
            return self._post("/release_task", fields)
        handles = {name: open(path, "rb") for name, path in files.items()}
        try:
            return self._post("/release_task", fields, {n: (Path(h.name).name, h) for n, h in handles.items()})
        finally:
            for handle in handles.values():
                handle.close()

    def submit(self, caption: str, lyrics: str = "", **fields: Any) -> str:
        """Submit a generation and return its task id."""
        data = self.release_task({"caption": caption, "lyrics": lyrics, **fields})
        return data["task_id"]

    def query(self, task_id: str) -> TaskState:
        data = self._post("/query_result", {"task_id_list": [task_id]})
        if not data:
            return TaskState(task_id, STATUS_PENDING, known=False)
        item = data[0]
        try:
            elements = json.loads(item.get("result") or "[]")
        except ValueError:
            elements = []
        return TaskState(
            task_id=task_id,
            status=int(item.get("status", STATUS_PENDING)),
            elements=elements if isinstance(elements, list) else [],
            progress_text=item.get("progress_text") or "",
            known="progress_text" in item or bool(elements),
        )

    def wait(
        self,
        task_id: str,
        *,
        poll_interval: float = 5.0,
        timeout: float = 600.0,
        on_update: Callable[[TaskState, float], None] | None = None,
    ) -> TaskState:
        """Poll until the task ends; `on_update(state, elapsed_seconds)` after each poll.
        Raises TimeoutExpired past `timeout` seconds."""
        start = time.monotonic()
        while True:
            elapsed = time.monotonic() - start
            if elapsed > timeout:
                raise TimeoutExpired(f"Timeout after {int(timeout)} seconds")
            state = self.query(task_id)
            if on_update is not None:
                on_update(state, elapsed)
            if state.finished:
                return state
            time.sleep(poll_interval)

    def cancel(self, task_id: str) -> dict:
        return self._post("/cancel_task", {"task_id": task_id})

    def format_input(self, prompt: str, lyrics: str = "", **params: Any) -> dict:
        body: dict[str, Any] = {"prompt": prompt, "lyrics": lyrics}
        if params:
            body["param_obj"] = json.dumps(params)
        return self._post("/format_input", body)

    def create_random_sample(self, sample_type: str = "simple_mode") -> dict:
        return self._post("/create_random_sample", {"sample_type": sample_type})

    def download(self, file_url: str, destination: Path | str, *, timeout: float = DOWNLOAD_TIMEOUT) -> Path:
        """Save one result file (`file` of a result element) to `destination`, creating its
        parent folders."""
        destination = Path(destination)
        destination.parent.mkdir(parents=True, exist_ok=True)
        request = self._http.build_request("GET", file_url, timeout=timeout)
        if not self._same_origin(request.url):
            # An absolute URL on another host (a CDN, a proxy's public name) gets no API key.
            request.headers.pop("Authorization", None)
        response = self._http.send(request, stream=True)
        try:
            if response.status_code >= 400:
                raise ApiError(response.status_code, response.read().decode("utf-8", "replace"))
            with open(destination, "wb") as out:
                for chunk in response.iter_bytes():
                    out.write(chunk)
        finally:
            response.close()
        return destination

    def _same_origin(self, url: httpx.URL) -> bool:
        base = self._http.base_url
        return (url.scheme, url.host, url.port) == (base.scheme, base.host, base.port)
