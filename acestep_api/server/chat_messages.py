"""Kept for `server/request_guard.py` until it imports the chat body limit from
`acestep_api.dialects.chat` itself; the chat dialect lives there."""

from acestep_api.dialects.chat import max_body_bytes

__all__ = ["max_body_bytes"]
