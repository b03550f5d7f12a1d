"""A small client of the REST API, and the `acestep-api generate` command built on it."""

from acestep_api.client.api_client import AceStepClient, ApiError, TaskState, TimeoutExpired

__all__ = ["AceStepClient", "ApiError", "TaskState", "TimeoutExpired"]
