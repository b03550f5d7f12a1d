"""Settings only the serverless worker reads (the engine's own come from `Settings`).

The names are those of the RunPod handler the ACE-Step 1.5 serverless template documents,
so an endpoint configured for it keeps its meaning here.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from acestep_api.engine.request import DURATION_MAX, DURATION_MIN


class ServerlessSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ACESTEP_", env_file=".env", extra="ignore")

    # Song length (s) of a 1.5-dialect job that names none.
    default_duration: float = Field(default=90.0, ge=DURATION_MIN, le=DURATION_MAX)
    # Seconds a job may generate before it is stopped (input `timeout_seconds` overrides it).
    job_timeout: float = Field(default=1800.0, gt=0)
    # Fewest seconds between two progress updates sent to the platform.
    progress_interval: float = Field(default=2.0, ge=0)
