"""The sentence a client reads when the 5 Hz LM fails on its input. Imports nothing heavy: the
LM-only jobs and the planner both use it."""

from __future__ import annotations

import logging

from acestep_api.engine.request import GenerationError

log = logging.getLogger(__name__)

# The details (the tokenizer's or torch's own words) go to the log.
LM_FAILED = "the 5 Hz LM could not process this input; the server log has the details"


def lm_failure(what: str, error: Exception) -> GenerationError:
    """The job's error for a failed LM call ("create_sample failed: ..."): a GenerationError's
    own message (written for users), else a sentence naming no internals; logs the details."""
    if isinstance(error, GenerationError) and str(error):
        return GenerationError(f"{what} failed: {error}")
    log.error("%s failed", what, exc_info=error)
    return GenerationError(f"{what} failed: {LM_FAILED}")
