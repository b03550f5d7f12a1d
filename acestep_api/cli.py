"""The `acestep-api` command: serve the API (and the UI), generate songs from a running
server, write demo checkpoints, download weights."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from acestep_api.engine.downloads import EXTRA_REPOS, DownloadError, download_main, download_model
from acestep_api.settings import Settings

logger = logging.getLogger("acestep_api")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="acestep-api", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve the REST API")
    serve.add_argument("--host", help="bind address (ACESTEP_API_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (ACESTEP_API_PORT, default 8001)")
    serve.add_argument("--api-key", help="require this key (ACESTEP_API_KEY)")
    serve.add_argument("--checkpoint-dir", type=Path, help="checkpoints folder (ACESTEP_CHECKPOINT_DIR)")
    serve.add_argument("--output-dir", type=Path, help="audio files and the job database (ACESTEP_OUTPUT_DIR)")
    serve.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], help="ACESTEP_DEVICE")
    serve.add_argument("--init-llm", help="load the 5 Hz LM: auto (when present), true or false (ACESTEP_INIT_LLM)")
    serve.add_argument("--lm-model-path", help="LM folder name under the checkpoints, or a path (ACESTEP_LM_MODEL_PATH)")
    serve.add_argument("--lm-backend", choices=["transformers", "pt", "vllm"], help="ACESTEP_LM_BACKEND")
    serve.add_argument("--lm-device", choices=["auto", "cpu", "cuda", "mps"], help="ACESTEP_LM_DEVICE")
    demo = serve.add_mutually_exclusive_group()
    demo.add_argument("--demo", action="store_true", default=None,
                      help="serve small random-weight checkpoints (the audio is noise); ACESTEP_DEMO=1")
    demo.add_argument("--demo-if-no-weights", action="store_true",
                      help="serve the demo when the primary checkpoint is not in the checkpoints folder")
    serve.add_argument("--ui", action="store_true",
                       help="also serve the browser UI (ACESTEP_UI_HOST / ACESTEP_UI_PORT, default port 7860)")
    serve.add_argument("--with-worker", action="store_true",
                       help="distributed mode (ACESTEP_DATABASE_URL): also run a GPU worker in this process")

    worker = commands.add_parser(
        "worker", help="run one GPU worker of the distributed mode (needs ACESTEP_DATABASE_URL)")
    for option, kwargs in (
        ("--checkpoint-dir", {"type": Path, "help": "ACESTEP_CHECKPOINT_DIR"}),
        ("--output-dir", {"type": Path, "help": "the shared output folder (ACESTEP_OUTPUT_DIR)"}),
        ("--device", {"choices": ["auto", "cpu", "cuda", "mps"], "help": "ACESTEP_DEVICE"}),
        ("--init-llm", {"help": "ACESTEP_INIT_LLM"}),
        ("--lm-model-path", {"help": "ACESTEP_LM_MODEL_PATH"}),
        ("--lm-backend", {"choices": ["transformers", "pt", "vllm"], "help": "ACESTEP_LM_BACKEND"}),
        ("--lm-device", {"choices": ["auto", "cpu", "cuda", "mps"], "help": "ACESTEP_LM_DEVICE"}),
        ("--name", {"help": "the name /health and the logs show (ACESTEP_WORKER_NAME)"}),
    ):
        worker.add_argument(option, **kwargs)
    worker.add_argument("--demo", action="store_true", default=None, help="random-weight demo checkpoints")

    db = commands.add_parser("db", help="the distributed mode's database")
    db_commands = db.add_subparsers(dest="db_command", required=True)
    db_commands.add_parser("migrate", help="create procrastinate's tables and ours (idempotent)")

    # The two client commands keep their own modules light: no torch import on this path.
    from acestep_api.client import generate as generate_command
    from acestep_api.ui import command as ui_command

    generate = commands.add_parser("generate", help="generate songs on a running server (generate_music.py)",
                                   description=generate_command.DESCRIPTION)
    generate_command.add_arguments(generate)

    ui = commands.add_parser("ui", help="serve the browser UI for a running server")
    ui_command.add_arguments(ui)

    tiny = commands.add_parser("demo-checkpoints", help="write small random checkpoints in the official layout")
    tiny.add_argument("dir", type=Path)
    tiny.add_argument("--seed", type=int, default=0)

    download = commands.add_parser("download", help="download ACE-Step 1.5 weights from the Hugging Face Hub")
    download.add_argument("--dir", type=Path, default=Path("checkpoints"))
    download.add_argument("models", nargs="*", help=f"extra models: {', '.join(EXTRA_REPOS)}")
    return parser


def settings_from_args(args: argparse.Namespace) -> Settings:
    options = ("host", "port", "api_key", "checkpoint_dir", "output_dir", "device", "init_llm", "lm_model_path",
               "lm_backend", "lm_device", "demo", "name")
    given = {option: getattr(args, option, None) for option in options}
    overrides = {
        "api_host": given["host"],
        "api_port": given["port"],
        "api_key": given["api_key"],
        "checkpoint_dir": given["checkpoint_dir"],
        "output_dir": given["output_dir"],
        "device": given["device"],
        "init_llm": given["init_llm"],
        "lm_model_path": given["lm_model_path"],
        "lm_backend": given["lm_backend"],
        "lm_device": given["lm_device"],
        "demo": given["demo"],
        "worker_name": given["name"],
    }
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


def primary_checkpoint_exists(settings: Settings) -> bool:
    """Whether the loader will find the primary DiT (official or diffusers layout)."""
    from acestep_api.engine.loading.errors import CheckpointError
    from acestep_api.engine.loading.folders import resolve_dit_folder

    try:
        resolve_dit_folder(settings.checkpoint_dir, settings.config_path)
    except CheckpointError:
        return False
    return True


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from acestep_api.engine.startup import DEMO_DIT_MODELS, use_demo_checkpoints
    from acestep_api.server.app import create_app
    from acestep_api.server.key_file import KeyFileError

    settings = settings_from_args(args)
    if args.demo_if_no_weights and not settings.demo and not primary_checkpoint_exists(settings):
        logger.warning("No usable %s checkpoint under %s (config.json with model.safetensors, or "
                       "diffusers' transformer/ layout).", settings.config_path, settings.checkpoint_dir)
        settings = settings.model_copy(update={"demo": True})
    if settings.demo and settings.distributed and not args.with_worker:
        # A replica loads no model: it only names the demo's models until a worker reports.
        settings = settings.model_copy(update={"config_path": DEMO_DIT_MODELS[0], "config_path2": DEMO_DIT_MODELS[1],
                                               "config_path3": ""})
    elif settings.demo:
        # Before the app is built, so that its settings (and the UI's) name the folder served.
        settings = use_demo_checkpoints(settings)
    if args.ui:
        from acestep_api.ui import command as ui_command

        ui_command.start_background(settings)
    if args.with_worker and not settings.distributed:
        print("error: --with-worker needs ACESTEP_DATABASE_URL (the embedded mode always runs its worker)",
              file=sys.stderr)
        return 2
    # Embedded: the one process runs the worker. Distributed: only with --with-worker; a plain
    # replica loads no model.
    start_worker = args.with_worker or not settings.distributed
    # The app object is built here with the final settings, so --api-key always takes effect.
    try:
        app = create_app(settings, start_worker=start_worker)
    except KeyFileError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    uvicorn.run(
        app,
        host=settings.api_host,
        port=settings.api_port,
        workers=1,
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
    )
    return 0


def worker(args: argparse.Namespace) -> int:
    """One GPU worker: loads the models, registers, takes jobs from their queues until SIGTERM
    (the running job ends first)."""
    import asyncio

    from acestep_api.dialects import official
    from acestep_api.engine.startup import build_engine, use_demo_checkpoints
    from acestep_api.jobs.distributed.runner import DistributedWorker
    from acestep_api.jobs.distributed.setup import open_backend
    from acestep_api.jobs.distributed.stranded import sweep_stranded
    from acestep_api.jobs.worker import JobWorker
    from acestep_api.server.services.webhooks import server_endpoints
    from acestep_api.storage import build_output_store
    from acestep_api.webhooks.observer import WebhookEvents
    from acestep_api.webhooks.sender import build_sender

    settings = settings_from_args(args)
    if not settings.distributed:
        print("error: acestep-api worker needs ACESTEP_DATABASE_URL=postgresql://...", file=sys.stderr)
        return 2
    if settings.demo:
        settings = use_demo_checkpoints(settings)
    settings.audio_dir.mkdir(parents=True, exist_ok=True)
    engine = build_engine(settings)
    backend = open_backend(settings)

    # The jobs this worker ends get their webhook's answer stored here, and this process sends
    # due deliveries as every replica with the secret does (leased claims: one sender at a time).
    webhooks = WebhookEvents(backend.deliveries, official.final_item)
    backend.events = webhooks

    async def run() -> None:
        job_worker = JobWorker(backend, engine, retention_seconds=settings.retention_days * 86400,
                               encode_workers=settings.encode_workers or None, encode_backlog=settings.encode_backlog,
                               outputs=build_output_store(settings))
        runner = DistributedWorker(settings.database_url, backend, job_worker, engine.served(),
                                   name=settings.worker_name, stall_seconds=settings.worker_stall_seconds)
        sender = build_sender(settings, backend.deliveries, server_endpoints(settings))
        if sender is not None:
            sender.start()
            webhooks.wake = sender.wake
        stranded = asyncio.create_task(sweep_stranded(backend, webhooks))
        try:
            await runner.run(install_signal_handlers=True)
        finally:
            stranded.cancel()
            await asyncio.gather(stranded, return_exceptions=True)
            if sender is not None:
                await sender.stop()

    try:
        asyncio.run(run())
    finally:
        backend.close()
    return 0


def db(args: argparse.Namespace) -> int:
    from acestep_api.jobs.distributed.schema import migrate

    settings = Settings()
    if not settings.distributed:
        print("error: set ACESTEP_DATABASE_URL=postgresql://...", file=sys.stderr)
        return 2
    created = migrate(settings.database_url)
    print("database schema created" if created else "database schema up to date")
    return 0


def demo_checkpoints(args: argparse.Namespace) -> int:
    from acestep_api.engine.tiny import write_tiny_checkpoints

    root = write_tiny_checkpoints(args.dir, seed=args.seed)
    print(root)
    return 0


def download(args: argparse.Namespace) -> int:
    unknown = [m for m in args.models if m not in EXTRA_REPOS]
    if unknown:
        print(f"error: unknown model(s) {', '.join(unknown)}; choose from {', '.join(EXTRA_REPOS)}", file=sys.stderr)
        return 2
    download_main(args.dir)
    for name in args.models:
        try:
            download_model(name, args.dir)
        except DownloadError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
    print(args.dir)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # The client command prints only its own messages (as generate_music.py); the servers log.
    level = logging.WARNING if args.command == "generate" else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "generate":
        from acestep_api.client import generate as generate_command

        return generate_command.run(args)
    if args.command == "ui":
        from acestep_api.ui import command as ui_command

        return ui_command.run(args)
    handlers = {"serve": serve, "worker": worker, "db": db, "demo-checkpoints": demo_checkpoints,
                "download": download}
    return handlers[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
