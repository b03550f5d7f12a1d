"""The official /v1/lora/* routes: the server's default adapter for jobs that name none.

Each change is a job on the one queue (the worker changes the DiT between jobs, in order with
them); GET /v1/lora/status reads the state the worker last published, without waiting in line.
Answers as official: load and unload problems are HTTP 400 with the reason in ``detail``;
toggle and scale problems are HTTP 200 with ``code`` 400 in the envelope.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request

from acestep_api.dialects import official_lora
from acestep_api.dialects.official import wrap
from acestep_api.engine.adapter_tasks import AdapterLedger, AdapterTask
from acestep_api.engine.served import ServedModels
from acestep_api.jobs.backend import JobBackend
from acestep_api.server.auth import authorized_fields, require_api_key
from acestep_api.server.dependencies import get_adapter_ledger, get_queue, get_served, get_settings
from acestep_api.server.openapi.answers import Envelope, LoraChange, LoraStatus
from acestep_api.server.openapi.request_bodies import AuthOnlyBody, LoraLoadBody, LoraScaleBody, LoraToggleBody
from acestep_api.server.openapi.route_docs import answers, body, key_required, merged
from acestep_api.server.services.adapters import require_adapters, run_adapter_job
from acestep_api.settings import Settings

router = APIRouter(tags=["lora"])

Ledger = Annotated[AdapterLedger | None, Depends(get_adapter_ledger)]
Queue = Annotated[JobBackend, Depends(get_queue)]
Fields = Annotated[dict, Depends(authorized_fields)]
Config = Annotated[Settings, Depends(get_settings)]


async def _run(queue: JobBackend, task: AdapterTask, settings: Settings, request: Request):
    return await run_adapter_job(queue, task, settings.generation_timeout, request)


@router.post("/v1/lora/load", response_model=None, summary="Load an adapter as the default for jobs",
             responses=answers(Envelope[LoraChange], 400, 401, 413, 429, 500, 504),
             openapi_extra=merged(body(LoraLoadBody, required=True), key_required(body_token=True)))
async def load_lora(fields: Fields, request: Request, ledger: Ledger, queue: Queue, settings: Config,
                    served: Annotated[ServedModels, Depends(get_served)]) -> dict:
    require_adapters(ledger)
    if served.lora_dir is None:
        raise HTTPException(status_code=400, detail="this server has no adapters folder (ACESTEP_LORA_DIR)")
    task = official_lora.parse_load(fields, served.lora_dir)
    answer, failure = await _run(queue, task, settings, request)
    if answer is None:
        raise HTTPException(status_code=500, detail=f"Failed to load LoRA: {failure}")
    if answer.problem:
        raise HTTPException(status_code=400, detail=answer.problem)
    return wrap(official_lora.loaded_data(task, answer.message, str(fields.get("lora_path"))))


@router.post("/v1/lora/unload", response_model=None, summary="Unload the default adapters",
             responses=answers(Envelope[LoraChange], 400, 401, 413, 429, 500, 504),
             openapi_extra=merged(body(AuthOnlyBody), key_required(body_token=True)))
async def unload_lora(fields: Fields, request: Request, ledger: Ledger, queue: Queue, settings: Config) -> dict:
    require_adapters(ledger)
    answer, failure = await _run(queue, AdapterTask(op="unload"), settings, request)
    if answer is None:
        raise HTTPException(status_code=500, detail=f"Failed to unload LoRA: {failure}")
    if answer.problem:
        raise HTTPException(status_code=400, detail=answer.problem)
    return wrap({"message": answer.message})


@router.post("/v1/lora/toggle", response_model=None, summary="Turn the default adapter on or off",
             responses=answers(Envelope[LoraChange | None], 400, 401, 413, 429, 500, 504),
             openapi_extra=merged(body(LoraToggleBody, required=True), key_required(body_token=True)))
async def toggle_lora(fields: Fields, request: Request, ledger: Ledger, queue: Queue, settings: Config) -> dict:
    require_adapters(ledger)
    task = official_lora.parse_toggle(fields)
    answer, failure = await _run(queue, task, settings, request)
    if answer is None:
        return wrap(None, code=500, error=f"Failed to toggle LoRA: {failure}")
    if answer.problem:
        return wrap(None, code=400, error=answer.problem)
    return wrap({"message": answer.message, "use_lora": task.use_lora})


@router.post("/v1/lora/scale", response_model=None, summary="Set a default adapter's strength",
             responses=answers(Envelope[LoraChange | None], 400, 401, 413, 429, 500, 504),
             openapi_extra=merged(body(LoraScaleBody, required=True), key_required(body_token=True)))
async def scale_lora(fields: Fields, request: Request, ledger: Ledger, queue: Queue, settings: Config) -> dict:
    require_adapters(ledger)
    task = official_lora.parse_scale(fields)
    answer, failure = await _run(queue, task, settings, request)
    if answer is None:
        return wrap(None, code=500, error=f"Failed to set LoRA scale: {failure}")
    if answer.problem:
        return wrap(None, code=400, error=answer.problem)
    return wrap(official_lora.scaled_data(task, answer.message))


@router.get("/v1/lora/status", response_model=None, summary="The default adapters and those requests may name",
            responses=answers(Envelope[LoraStatus], 401, 500), openapi_extra=key_required(),
            dependencies=[Depends(require_api_key)])
async def lora_status(ledger: Ledger, served: Annotated[ServedModels, Depends(get_served)]) -> dict:
    status = require_adapters(ledger).read()
    return wrap(official_lora.status_data(status, served.lora_dir))
