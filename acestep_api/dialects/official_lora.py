"""The official /v1/lora/* bodies and answers: a body becomes an ``AdapterTask`` (or an
``InvalidField`` naming the field), an ``AdapterAnswer`` or ``AdapterStatus`` becomes the
official envelope's data.

Where the official server would answer 422 (a missing or mistyped field), this one answers 400
naming the field; ``lora_path`` must be an adapter folder directly inside the adapters folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from acestep_api.dialects.coercion import InvalidField, show, to_float, to_text
from acestep_api.engine.adapter_folders import AdapterError, available, name_for_path
from acestep_api.engine.adapter_tasks import LABEL_MAX_CHARS, SCALE_MAX, SCALE_MIN, AdapterStatus, AdapterTask

PATH_MAX_CHARS = 1024


def _label(fields: dict[str, Any]) -> str | None:
    label = to_text("adapter_name", fields.get("adapter_name"), "", max_chars=LABEL_MAX_CHARS).strip()
    return label or None


def parse_load(fields: dict[str, Any], lora_dir: Path) -> AdapterTask:
    """``{lora_path, adapter_name?}``: the adapter folder it names, and the label to load it under."""
    lora_path = to_text("lora_path", fields.get("lora_path"), "", max_chars=PATH_MAX_CHARS)
    if not lora_path.strip():
        raise InvalidField("lora_path", "lora_path is required: an adapter folder in the adapters folder")
    try:
        folder = name_for_path(lora_dir, lora_path)
    except AdapterError as error:
        raise InvalidField("lora_path", str(error)) from None
    return AdapterTask(op="load", folder=folder, adapter_name=_label(fields))


def parse_toggle(fields: dict[str, Any]) -> AdapterTask:
    value = fields.get("use_lora")
    if not isinstance(value, bool):
        raise InvalidField("use_lora", f"use_lora is required: true or false (got {show(value)})")
    return AdapterTask(op="toggle", use_lora=value)


def parse_scale(fields: dict[str, Any]) -> AdapterTask:
    scale = to_float("scale", fields.get("scale"), None, minimum=SCALE_MIN, maximum=SCALE_MAX)
    if scale is None:
        raise InvalidField("scale", f"scale is required: a number from {SCALE_MIN:g} to {SCALE_MAX:g}")
    return AdapterTask(op="scale", scale=scale, adapter_name=_label(fields))


def loaded_data(task: AdapterTask, message: str, lora_path: str) -> dict[str, Any]:
    data: dict[str, Any] = {"message": message, "lora_path": lora_path}
    if task.adapter_name:
        data["adapter_name"] = task.adapter_name
    return data


def scaled_data(task: AdapterTask, message: str) -> dict[str, Any]:
    data: dict[str, Any] = {"message": message, "scale": task.scale}
    if task.adapter_name:
        data["adapter_name"] = task.adapter_name
    return data


def status_data(status: AdapterStatus, lora_dir: Path | None) -> dict[str, Any]:
    """The official status fields, then ours: each default's folder, the adapters held for
    requests, and the names a request may give as lora_name."""
    data = status.model_dump(mode="json")
    data["available"] = available(lora_dir) if lora_dir is not None else []
    return data
