"""The hard token budget of one LM call: its prompt plus the tokens it may add.

The planner's prompts are built from texts already cut to their token budgets, so a call
within the rules always fits; this is the backstop that makes the bound hold whatever a
caller passes, on every backend.
"""

from __future__ import annotations

from acestep_api.engine.limits import LM_CONTEXT_TOKENS
from acestep_api.engine.request import GenerationError

LM_INPUT_TOO_LONG = (
    "The request's text is too long for the 5 Hz LM: its prompt is {tokens} tokens, and a call may "
    "use at most {budget} (prompt and output together). Shorten the caption or the lyrics."
)


def new_token_budget(prompt_tokens: int, max_new_tokens: int, context_tokens: int = LM_CONTEXT_TOKENS) -> int:
    """``max_new_tokens`` clamped so that prompt + output <= ``context_tokens``; a prompt that
    leaves no room is refused (a GenerationError, whose message the client sees)."""
    if prompt_tokens >= context_tokens:
        raise GenerationError(LM_INPUT_TOO_LONG.format(tokens=prompt_tokens, budget=context_tokens))
    return max(0, min(max_new_tokens, context_tokens - prompt_tokens))
