"""`acestep-api ui` (the browser UI for a running server) and `serve --ui` (the UI next to
the API in one process).

Gradio is imported only when the UI starts, so the other commands stay light; before that
its telemetry and version check are switched off: a server often has no way out to the
internet, and nothing should wait on one.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import sys

from acestep_api.settings import Settings

logger = logging.getLogger("acestep_api.ui")

# Set before gradio is imported; a user's own setting wins.
OFFLINE_ENVIRONMENT = {
    "GRADIO_ANALYTICS_ENABLED": "False",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
}
WILDCARD_HOSTS = ("", "0.0.0.0", "::", "[::]")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--api-url", help="the REST API to use (default http://127.0.0.1:<ACESTEP_API_PORT>)")
    parser.add_argument("--host", help="bind address of the UI (ACESTEP_UI_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port of the UI (ACESTEP_UI_PORT, default 7860)")
    parser.add_argument("--api-key", help="the API's key, when it requires one (ACESTEP_API_KEY)")


def local_api_url(host: str, port: int) -> str:
    """Where a process on this machine reaches an API bound to host:port."""
    if host in WILDCARD_HOSTS:
        host = "127.0.0.1"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 literal
    return f"http://{host}:{port}"


def _prepare_environment() -> None:
    for name, value in OFFLINE_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    # Each poll of the API (twice a second per open job) would otherwise be an INFO line.
    logging.getLogger("httpx").setLevel(logging.WARNING)


def launch(api_url: str, api_key: str | None, host: str, port: int, *, block: bool):
    """Build the page and serve it; with block=False it runs in Gradio's own daemon thread
    and this returns at once."""
    _prepare_environment()
    if importlib.util.find_spec("gradio") is None:
        raise SystemExit("error: the browser UI needs gradio: pip install 'acestep-api[ui]'")
    from acestep_api.ui.app import build_ui
    from acestep_api.ui.handlers import UiContext

    context = UiContext(api_url=api_url.rstrip("/"), api_key=api_key or None)
    page = build_ui(context)
    page.queue(default_concurrency_limit=None)
    logger.info("Serving the browser UI on %s, for the API at %s", local_api_url(host, port), api_url)
    page.launch(
        server_name=host,
        server_port=port,
        prevent_thread_lock=not block,
        inbrowser=False,
        share=False,
        ssr_mode=False,
        mcp_server=False,
        run_history=False,
        enable_monitoring=False,
        show_error=False,
        quiet=True,
        footer_links=["settings"],
        allowed_paths=[str(context.download_root)],
    )
    return page


def run(args: argparse.Namespace) -> int:
    settings = Settings()
    api_url = args.api_url or local_api_url(settings.api_host, settings.api_port)
    host = args.host or settings.ui_host
    port = args.port or settings.ui_port
    api_key = args.api_key if args.api_key is not None else settings.api_key
    try:
        launch(api_url, api_key, host, port, block=True)
    except OSError as exc:
        print(f"error: cannot serve the UI on {host}:{port}: {exc} (choose another with --port or ACESTEP_UI_PORT)",
              file=sys.stderr)
        return 1
    return 0


def start_background(settings: Settings) -> None:
    """Serve the UI next to the API that is about to start on settings.api_host/api_port.
    The API need not be up yet: the page loads its models when opened, and Generate
    retries them."""
    api_url = local_api_url(settings.api_host, settings.api_port)
    try:
        launch(api_url, settings.api_key, settings.ui_host, settings.ui_port, block=False)
    except OSError as exc:
        raise SystemExit(f"error: cannot serve the UI on {settings.ui_host}:{settings.ui_port}: {exc} "
                         "(set ACESTEP_UI_PORT to another port)") from exc
