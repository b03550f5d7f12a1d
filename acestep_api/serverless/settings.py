"""The serverless worker's settings live with all the others, in :mod:`acestep_api.settings`;
this name stays for the modules that import them from here."""

from __future__ import annotations

from acestep_api.settings import ServerlessSettings

__all__ = ["ServerlessSettings"]
