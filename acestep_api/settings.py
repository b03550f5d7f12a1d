"""Every ACESTEP_* setting in one place.

Values come from the environment (prefix ``ACESTEP_``) or a ``.env`` file; the CLI
overrides them by passing keyword arguments to :class:`Settings`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ACESTEP_", env_file=".env", extra="ignore")

    # Serving
    api_host: str = "127.0.0.1"
    api_port: int = 8001
    api_key: str | None = Field(default=None, description="Enables auth when set (an empty string counts as set).")

    # Storage
    # ACESTEP_TMPDIR is the official server's name for its audio folder (RunPod images set it).
    output_dir: Path = Field(
        default=Path("outputs"),
        validation_alias=AliasChoices("output_dir", "ACESTEP_OUTPUT_DIR", "ACESTEP_TMPDIR"),
    )
    retention_days: float = Field(default=7.0, ge=0, description="How long finished jobs and their files are kept.")

    # Queue
    queue_maxsize: int = Field(default=200, ge=1)
    avg_job_seconds: float = 5.0
    avg_window: int = Field(default=50, ge=1)
    batch_max: int = Field(default=8, ge=1, description="Larger batch_size requests are clamped to this.")

    # Models
    checkpoint_dir: Path = Path("checkpoints")
    config_path: str = "acestep-v15-turbo"
    config_path2: str = ""
    config_path3: str = ""
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    init_llm: str = "auto"
    lm_model_path: str = "acestep-5Hz-lm-0.6B"
    demo: bool = False

    @property
    def audio_dir(self) -> Path:
        return self.output_dir / "api_audio"

    @property
    def database_path(self) -> Path:
        return self.output_dir / "jobs.sqlite3"

    @property
    def dit_config_paths(self) -> list[str]:
        """The configured DiT slots, primary first, empty slots dropped."""
        return [p for p in (self.config_path, self.config_path2, self.config_path3) if p]
