"""GET /metrics: this process's Prometheus metrics, in the text format (docs/operations.md).
The key guards it when set, unless ACESTEP_PROTECT_METRICS is false."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from acestep_api.metrics import ServerMetrics
from acestep_api.server.auth import require_metrics_key
from acestep_api.server.dependencies import get_metrics
from acestep_api.server.openapi.route_docs import answers, key_required

router = APIRouter(tags=["operations"], dependencies=[Depends(require_metrics_key)])

METRICS_ANSWER = {
    200: {
        "description": "The metrics in the Prometheus text exposition format.",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    }
}


@router.get("/metrics", response_class=Response, summary="Prometheus metrics of this process",
            responses={**METRICS_ANSWER, **answers(None, 401)},
            openapi_extra=key_required(unless_off="protect_metrics"))
async def metrics(server_metrics: Annotated[ServerMetrics, Depends(get_metrics)]) -> Response:
    return Response(generate_latest(server_metrics.registry), media_type=CONTENT_TYPE_LATEST)
