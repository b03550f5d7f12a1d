"""Every ACESTEP_* setting in one place.

Values come from the environment (prefix ``ACESTEP_``) or a ``.env`` file; the CLI
overrides them by passing keyword arguments to :class:`Settings`. :class:`Settings` holds
what the server and the engine read; :class:`ServerlessSettings`, the few that only the
RunPod worker reads, from the same environment.
"""

from __future__ import annotations

import base64
import os
import re
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from acestep_api.engine.layout import DEFAULT_DIT_FOLDER, DEFAULT_LM_FOLDER, LORA_FOLDER
from acestep_api.engine.request import DURATION_MAX, DURATION_MIN

WEBHOOK_SECRET_PREFIX = "whsec_"
WEBHOOK_SECRET_BYTES = (24, 64)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ACESTEP_", env_file=".env", extra="ignore")

    # Serving
    api_host: str = "127.0.0.1"
    api_port: int = 8001
    api_key: str | None = Field(default=None, description="Enables auth when set (an empty string counts as set).")
    # More keys, each with its own name, quotas and rate limits (docs/operations.md#keys-and-quotas);
    # read again when it changes. Auth is on when this or api_key is set.
    api_keys_file: Path | None = Field(default=None, description="TOML file of named API keys with their limits.")
    # With a key set, /openapi.json, /docs and /redoc need it too (the API's map stays private).
    protect_docs: bool = True
    # With a key set, GET /metrics needs it too; false leaves it open to a scraper without one.
    protect_metrics: bool = True

    # Where clients reach this server when it sits behind a proxy (e.g.
    # https://<POD_ID>-8000.proxy.runpod.net): absolute audio URLs start with it. Unset, they
    # follow the request (X-Forwarded-Proto / X-Forwarded-Host, then Host).
    public_url: str | None = None
    # Proxies whose X-Forwarded-* headers uvicorn trusts for the client address and scheme
    # ("*" trusts any: right in a container behind the platform's proxy).
    forwarded_allow_ips: str = "127.0.0.1"
    # How long a synchronous route (chat completions, prompt-to-audio) waits for its job.
    generation_timeout: float = Field(default=600.0, gt=0)

    # The browser UI (`acestep-api ui`, `serve --ui`).
    ui_host: str = "127.0.0.1"
    ui_port: int = 7860

    # Storage
    # ACESTEP_TMPDIR is the official server's name for its audio folder (RunPod images set it).
    output_dir: Path = Field(
        default=Path("outputs"),
        validation_alias=AliasChoices("output_dir", "ACESTEP_OUTPUT_DIR", "ACESTEP_TMPDIR"),
    )
    retention_days: float = Field(default=7.0, ge=0, description="How long finished jobs and their files are kept.")
    # Generated audio in an S3-compatible bucket instead of the audio folder (acestep_api/storage):
    # s3://bucket/prefix. Credentials and region come the usual AWS ways.
    output_url: str | None = Field(default=None, description="s3://bucket/prefix: keep generated audio in a bucket.")
    s3_endpoint_url: str | None = Field(default=None, description="The S3 endpoint (MinIO, R2, ...); unset: AWS.")
    s3_addressing_style: Literal["auto", "path", "virtual"] = "auto"
    # GET /v1/audio of a file in the bucket: stream it through this server, or answer 307 with
    # a presigned URL valid for output_presign_seconds (the client downloads from the bucket).
    output_redirect: bool = False
    output_presign_seconds: int = Field(default=300, ge=1, le=7 * 24 * 3600)

    # Audio input
    max_upload_mb: float = Field(default=100.0, gt=0, description="Largest accepted upload, per file (MiB).")
    # Request bodies (request_guard.py): JSON and form bodies, the text fields of a multipart
    # body, and the text beside a chat body's base64 audio. 1 MiB holds the longest lyrics and
    # a 600 s song's audio codes many times over.
    max_body_kb: int = Field(default=1024, ge=1, description="Largest JSON / form body (KiB).")
    max_request_mb: float | None = Field(
        default=None, gt=0,
        description="Largest multipart body (MiB); unset: two uploads at max_upload_mb plus max_body_kb.",
    )
    # One folder, or several separated by os.pathsep (":" on Linux and macOS, ";" on Windows)
    # or by commas; `input_dirs` splits them.
    input_dir: Path | None = Field(
        default=None,
        description="Folder(s) whose files requests may name in src_audio_path / reference_audio_path.",
    )
    # The newer official server reads absolute paths inside the system temp folder, where its
    # clients leave their files; false: only ACESTEP_INPUT_DIR and the request's own uploads.
    allow_temp_paths: bool = Field(
        default=True, description="Requests may also name audio files inside the system temp folder."
    )
    # engine.audio_input.DEFAULT_MAX_DECODED_MB (not imported: it would load torch here).
    max_decoded_audio_mb: float = Field(
        default=512.0, gt=0, description="Largest input audio accepted, as decoded float32 at its own rate and channels (MiB)."
    )

    # Queue
    queue_maxsize: int = Field(default=200, ge=1)
    avg_job_seconds: float = 5.0
    avg_window: int = Field(default=50, ge=1)
    batch_max: int = Field(default=8, ge=1, description="Larger batch_size requests are clamped to this.")
    # Waiting jobs that may share a DiT call run as one batch of up to this many items (the sum
    # of their batch_size); 1 turns batching off (docs/architecture.md#batching-jobs).
    batch_max_items: int = Field(default=8, ge=1, description="Most batch items one batched DiT call runs; 1: no batching.")

    # Distributed mode (docs/deploy.md): a postgresql:// URL puts the jobs and their queue in
    # that database, shared by API replicas and GPU workers; unset, one process holds all.
    database_url: str | None = Field(default=None, description="postgresql://user:password@host:port/db")
    # A worker whose heartbeat is older than this is dead: its job goes to another worker.
    worker_stall_seconds: float = Field(default=10.0, ge=2, le=600)
    # The name a worker reports in /health and logs; unset: host name and process id.
    worker_name: str | None = None

    # Encoding (the worker's CPU pool for audio files; docs/architecture.md#the-encoding-pool)
    encode_workers: int = Field(default=0, ge=0, description="Threads that encode audio files; 0: one per CPU core.")
    encode_backlog: int = Field(
        default=1, ge=0,
        description="Jobs whose audio may wait for or be in encoding while the next job runs; 0: none.",
    )

    # Webhooks (docs/operations.md#webhooks): a job's callback URL, signed per Standard Webhooks.
    webhook_secret: SecretStr | None = Field(
        default=None,
        description="Signing secret, whsec_ followed by the base64 of 24 to 64 random bytes; "
                    "unset: requests that name a webhook are refused.",
    )
    webhook_allow_private: bool = Field(
        default=False, description="Allow callback URLs on loopback, private and other non-public addresses.",
    )
    webhook_timeout: float = Field(default=10.0, gt=0, le=120, description="Seconds one attempt may take.")
    webhook_max_attempts: int = Field(default=8, ge=1, le=20, description="Attempts before a delivery fails.")
    webhook_retry_seconds: float = Field(
        default=10.0, gt=0, le=3600, description="Delay before the first retry; doubled after each failed attempt.",
    )

    # Models
    checkpoint_dir: Path = Path("checkpoints")
    config_path: str = DEFAULT_DIT_FOLDER
    config_path2: str = ""
    config_path3: str = ""
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    # The 5 Hz LM. init_llm: "auto" loads it when its folder exists; true-ish requires it
    # (a failed load is reported by the LM routes and jobs); false-ish never loads it.
    init_llm: str = "auto"
    lm_model_path: str = Field(default=DEFAULT_LM_FOLDER, description="A folder name under checkpoint_dir, or a path.")
    lm_backend: Literal["transformers", "pt", "vllm"] = Field(
        default="transformers", description='"pt" is the official name of the transformers backend.'
    )
    lm_device: Literal["auto", "cpu", "cuda", "mps"] = Field(default="auto", description="auto = the DiT's device.")
    # The transformers backend's decoding (docs/architecture.md, the 5 Hz LM planner).
    lm_kv_cache: Literal["static", "dynamic"] = Field(
        default="static", description="static: preallocated, fixed shapes (compilable); dynamic: grown per token."
    )
    lm_compile: Literal["auto", "on", "off"] = Field(
        default="auto", description="Compile the LM's decoding step: auto = on CUDA only (compiling on CPU is slow)."
    )
    lm_max_duration: float = Field(
        default=600.0, ge=10, le=600, description="Longest song (s) the LM may choose when the client gives no duration."
    )
    demo: bool = False
    # Adapters (LoRA / LoKr folders as the official trainer writes them): requests name them by
    # folder name (lora_name); POST /v1/lora/load loads one from there. Unset: <checkpoint_dir>/loras.
    lora_dir: Path | None = None
    lora_cache_size: int = Field(
        default=4, ge=1, le=64,
        description="Adapters kept loaded for requests (least recently used go first), besides the defaults.",
    )

    # Models loaded at run time (docs/configuration.md#models-loaded-at-run-time)
    on_demand_model_load: bool = Field(
        default=False, description="A request naming a model or LM on disk that is not loaded: its job loads it.")
    model_slots: int = Field(default=3, ge=1, le=3, description="DiTs loaded at once (POST /v1/init slots 1-3).")
    download_models: bool = Field(
        default=True, description="A load naming a missing official checkpoint fetches it from the Hugging Face Hub.")
    no_init: bool = Field(default=False, description="Start without loading models; the first job loads them.")

    # Memory (docs/configuration.md#memory)
    offload_to_cpu: bool | None = Field(
        default=None,
        description="The text encoder and the VAE wait on the CPU between their stages; unset: on for GPUs under 16 GiB.")
    offload_dit_to_cpu: bool = Field(
        default=False, description="With offload_to_cpu, the DiT waits on the CPU too.")
    lm_offload_to_cpu: bool | None = Field(
        default=None, description="The 5 Hz LM waits on the CPU between uses; unset: as offload_to_cpu.")
    compile_model: bool = Field(default=False, description="torch.compile the DiT (slow first job, faster after).")
    use_flash_attention: bool = Field(
        default=True, description="The DiT uses diffusers' flash attention backend where it is available.")

    @property
    def llm_mode(self) -> Literal["auto", "on", "off"]:
        value = self.init_llm.strip().lower()
        if value in ("", "auto"):
            return "auto"
        return "on" if value in ("1", "true", "yes", "on") else "off"

    @field_validator("lm_compile", mode="before")
    @classmethod
    def _boolean_lm_compile(cls, value):
        if isinstance(value, bool):
            return "on" if value else "off"
        if isinstance(value, str):
            value = value.strip().lower()
            return {"1": "on", "true": "on", "yes": "on", "0": "off", "false": "off", "no": "off", "": "auto"}.get(value, value)
        return value

    @field_validator("public_url", mode="before")
    @classmethod
    def _blank_public_url_is_none(cls, value):
        if isinstance(value, str):
            value = value.strip().rstrip("/")
            return value or None
        return value

    @field_validator("output_url", "s3_endpoint_url", mode="before")
    @classmethod
    def _blank_url_is_none(cls, value):
        if isinstance(value, str):
            return value.strip() or None
        return value

    @field_validator("output_url")
    @classmethod
    def _output_url_is_s3(cls, value):
        if value is not None and not re.fullmatch(r"s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/.*)?", value):
            raise ValueError("ACESTEP_OUTPUT_URL must look like s3://bucket/prefix (a valid bucket name)")
        return value

    @field_validator("api_keys_file", mode="before")
    @classmethod
    def _blank_keys_file_is_none(cls, value):
        return None if isinstance(value, str) and not value.strip() else value

    @property
    def auth_enabled(self) -> bool:
        return self.api_key is not None or self.api_keys_file is not None

    @field_validator("webhook_secret", mode="before")
    @classmethod
    def _webhook_secret_is_standard(cls, value):
        # A secret the Standard Webhooks libraries read the same way on both ends (they decode
        # loosely, so a typo would otherwise sign with a key nobody meant).
        if value is None or isinstance(value, SecretStr):
            return value
        text = str(value).strip()
        if not text:
            return None
        try:
            key = base64.b64decode(text.removeprefix(WEBHOOK_SECRET_PREFIX), validate=True)
        except ValueError:
            key = b""
        if not WEBHOOK_SECRET_BYTES[0] <= len(key) <= WEBHOOK_SECRET_BYTES[1]:
            raise ValueError(
                f"ACESTEP_WEBHOOK_SECRET must be {WEBHOOK_SECRET_PREFIX} followed by the base64 of "
                f"{WEBHOOK_SECRET_BYTES[0]} to {WEBHOOK_SECRET_BYTES[1]} random bytes"
            )
        return text

    @field_validator("database_url", mode="before")
    @classmethod
    def _postgres_url(cls, value):
        if isinstance(value, str):
            value = value.strip()
            if not value:
                return None
            if not value.startswith(("postgresql://", "postgres://")):
                raise ValueError("ACESTEP_DATABASE_URL must be a postgresql:// URL")
        return value

    @field_validator("input_dir", "lora_dir", mode="before")
    @classmethod
    def _blank_input_dir_is_none(cls, value):
        # An empty ACESTEP_INPUT_DIR= (or LORA_DIR=) must not become Path("."), the working folder.
        return None if isinstance(value, str) and not value.strip() else value

    @property
    def input_dirs(self) -> tuple[Path, ...]:
        """The ACESTEP_INPUT_DIR folders, in the order given; none when unset."""
        if self.input_dir is None:
            return ()
        parts = re.split(f"[,{re.escape(os.pathsep)}]", str(self.input_dir))
        return tuple(Path(part.strip()) for part in parts if part.strip())

    @property
    def private_files(self) -> tuple[Path, ...]:
        """Files no request may name as audio, whatever folder holds them: the job database."""
        database = self.database_path
        return (database,) + tuple(database.with_name(database.name + end) for end in ("-wal", "-shm", "-journal"))

    @property
    def adapters_dir(self) -> Path:
        return self.lora_dir if self.lora_dir is not None else self.checkpoint_dir / LORA_FOLDER

    @property
    def distributed(self) -> bool:
        return bool(self.database_url)

    @property
    def audio_dir(self) -> Path:
        return self.output_dir / "api_audio"

    @property
    def upload_dir(self) -> Path:
        """Where uploaded audio waits for its job; emptied as jobs end."""
        return self.output_dir / "uploads"

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def max_body_bytes(self) -> int:
        return self.max_body_kb * 1024

    @property
    def max_request_bytes(self) -> int:
        if self.max_request_mb is not None:
            return int(self.max_request_mb * 1024 * 1024)
        # 64 KiB more for the parts' boundaries and headers.
        return 2 * self.max_upload_bytes + self.max_body_bytes + 64 * 1024

    @property
    def database_path(self) -> Path:
        return self.output_dir / "jobs.sqlite3"

    @property
    def dit_config_paths(self) -> list[str]:
        """The configured DiT slots, primary first, empty slots dropped."""
        return [p for p in (self.config_path, self.config_path2, self.config_path3) if p]


class ServerlessSettings(BaseSettings):
    """The settings only the serverless worker reads (it reads the engine's from :class:`Settings`).

    The names are those of the RunPod handler the ACE-Step 1.5 serverless template documents,
    so an endpoint configured for it keeps its meaning here.
    """

    model_config = SettingsConfigDict(env_prefix="ACESTEP_", env_file=".env", extra="ignore")

    # Song length (s) of a 1.5-dialect job that names none.
    default_duration: float = Field(default=90.0, ge=DURATION_MIN, le=DURATION_MAX)
    # Seconds a job may generate before it is stopped (input `timeout_seconds` overrides it).
    job_timeout: float = Field(default=1800.0, gt=0)
    # Fewest seconds between two progress updates sent to the platform.
    progress_interval: float = Field(default=2.0, ge=0)
