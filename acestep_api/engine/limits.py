"""How much free text a request may carry, and how much of it the 5 Hz LM reads.

Two bounds, defined once here for every dialect (docs/security.md, "Text fields and the 5 Hz
LM"):

- **Characters**, enforced when a request is read: a longer value is refused with a 400 that
  names the field and the limit. They are generous (several times what the models read) so
  that no sensible request is refused; they keep the cost of reading, storing and tokenizing
  a request small.
- **LM tokens**, enforced where the LM's prompts are built: caption and lyrics are cut to the
  lengths the official server's DiT text encoder reads (256 and 2048 tokens), so the LM never
  attends to more than the DiT is conditioned on, and its memory (quadratic in the prompt
  length) stays bounded whatever the client sent. Every LM call also has a hard total budget
  (prompt plus new tokens).

This module imports nothing, so the engine and the HTTP layer can both use it.
"""

from __future__ import annotations

# --- Characters ------------------------------------------------------------------------------

PROMPT_MAX_CHARS = 4096  # caption / prompt / tags, in every dialect
LYRICS_MAX_CHARS = 16384
QUERY_MAX_CHARS = 4096  # a sample-mode description
AUDIO_CODES_MAX_CHARS = 100_000  # 3,000 codes of "<|audio_code_63999|>" with separators
PATH_MAX_CHARS = 4096  # a file path (PATH_MAX on Linux)
SHORT_TEXT_MAX_CHARS = 256  # names: a model, a track, one track class
TAG_MAX_CHARS = 64  # a key, a time signature, a language code

# GenerationRequest's text fields (canonical names) -> their limit in characters.
TEXT_MAX_CHARS: dict[str, int] = {
    "prompt": PROMPT_MAX_CHARS,
    "global_caption": PROMPT_MAX_CHARS,
    "lyrics": LYRICS_MAX_CHARS,
    "instruction": 1024,
    "vocal_language": TAG_MAX_CHARS,
    "key_scale": TAG_MAX_CHARS,
    "time_signature": TAG_MAX_CHARS,
    "model": SHORT_TEXT_MAX_CHARS,
    "lm_model_path": SHORT_TEXT_MAX_CHARS,
    "reference_audio_path": PATH_MAX_CHARS,
    "src_audio_path": PATH_MAX_CHARS,
    "audio_code_string": AUDIO_CODES_MAX_CHARS,
    "track_name": SHORT_TEXT_MAX_CHARS,
    "sample_query": QUERY_MAX_CHARS,
    "lm_negative_prompt": PROMPT_MAX_CHARS,
}
# One chat message's text (or one text part): a caption and lyrics, with their tags.
CHAT_TEXT_MAX_CHARS = PROMPT_MAX_CHARS + LYRICS_MAX_CHARS + 64
CHAT_MAX_MESSAGES = 256
CHAT_MAX_PARTS = 64  # content parts of one message

# --- Lists -----------------------------------------------------------------------------------

TRACK_CLASSES_MAX_ITEMS = 32
SEEDS_MAX_ITEMS = 64  # seeds map onto batch items; the batch is far smaller
TIMESTEPS_MAX_ITEMS = 200  # as many as inference_steps allows; turbo uses the first 20

# --- LM tokens -------------------------------------------------------------------------------

LM_CAPTION_TOKENS = 256  # the official DiT text encoder's max_length for the caption prompt
LM_LYRICS_TOKENS = 2048  # ... and for the lyrics
LM_QUERY_TOKENS = 1024  # a sample-mode description (it stands for caption and lyrics)
LM_CODES_TOKENS = 3000  # audio codes to describe: 600 s at 5 codes per second, one token each
# Prompt plus new tokens, per row of one LM call. The longest call, phase 2 of a 600 s song,
# needs about 256 + 2048 + ~600 (its chain of thought) + 3001 codes < 6,000.
LM_CONTEXT_TOKENS = 8192


def text_problem(value: str, max_chars: int) -> str | None:
    """What is wrong with a text value ("must be at most 4096 characters (got 5000)"), or None."""
    if len(value) > max_chars:
        return f"must be at most {max_chars} characters (got {len(value)})"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate ("\ud800") is valid JSON but not text: tokenizers and JSON encoders fail on it.
        return "must be valid Unicode text (it holds a lone surrogate)"
    return None
