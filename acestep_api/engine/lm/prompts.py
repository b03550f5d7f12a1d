"""The 5 Hz LM's prompts, rendered with the checkpoint's own chat template (docs/pipeline.md#lm-prompts).

Every prompt is a system message holding one instruction, a user message, and either a
generation prompt (the model answers next) or, for the audio-code phase, an assistant message
that already holds the chain of thought (the codes follow its closing ``<|im_end|>``).

The client's texts are cut to token budgets (engine/limits.py) before they enter a prompt:
caption and lyrics to what the official DiT text encoder reads, so that the LM's memory, which
grows with the square of the prompt's length, is bounded whatever was sent.
"""

from __future__ import annotations

from typing import Any

from acestep_api.engine.limits import LM_CAPTION_TOKENS, LM_CODES_TOKENS, LM_LYRICS_TOKENS, LM_QUERY_TOKENS
from acestep_api.engine.lm.types import NO_NEGATIVE_PROMPT

GENERATE_INSTRUCTION = "Generate audio semantic tokens based on the given conditions:"
UNDERSTAND_INSTRUCTION = "Understand the given musical conditions and describe the audio semantics accordingly:"
INSPIRATION_INSTRUCTION = "Expand the user's input into a more detailed and specific musical description:"
FORMAT_INSTRUCTION = "Format the user's input into a more detailed and specific musical description:"

EMPTY_COT = "<think>\n</think>"  # the unconditional rows' chain of thought in the code phase


def has_negative_prompt(negative_prompt: str | None) -> bool:
    """True for a real negative prompt; empty text and the "NO USER INPUT" sentinel mean none."""
    return bool(negative_prompt and negative_prompt.strip() and negative_prompt.strip() != NO_NEGATIVE_PROMPT)


def fit_tokens(tokenizer: Any, text: str, max_tokens: int) -> str:
    """``text`` cut to its first ``max_tokens`` tokens (the official text encoder truncates the
    same way, from the end)."""
    if len(text.encode("utf-8", "surrogatepass")) <= max_tokens:
        return text  # a byte-level token holds at least one byte: it fits, no need to tokenize
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) <= max_tokens:
        return text
    # A cut inside a multi-byte character decodes to U+FFFD: drop that partial character.
    return tokenizer.decode(ids[:max_tokens], skip_special_tokens=False).rstrip("\ufffd")


def _system(instruction: str) -> dict[str, str]:
    return {"role": "system", "content": f"# Instruction\n{instruction}\n\n"}


def _caption_and_lyrics(tokenizer: Any, caption: str, lyrics: str) -> str:
    return f"# Caption\n{_caption(tokenizer, caption)}\n\n# Lyric\n{_lyrics(tokenizer, lyrics)}\n"


def _caption(tokenizer: Any, caption: str) -> str:
    return fit_tokens(tokenizer, caption, LM_CAPTION_TOKENS)


def _lyrics(tokenizer: Any, lyrics: str) -> str:
    return fit_tokens(tokenizer, lyrics, LM_LYRICS_TOKENS)


def _render(tokenizer: Any, messages: list[dict[str, str]], *, add_generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def _ask(tokenizer: Any, instruction: str, user_content: str) -> str:
    """System + user, ending with the assistant's turn opened for the model."""
    messages = [_system(instruction), {"role": "user", "content": user_content}]
    return _render(tokenizer, messages, add_generation_prompt=True)


def _with_cot(tokenizer: Any, user_content: str, cot_text: str) -> str:
    """System + user + the assistant's chain of thought; the audio codes come after it."""
    messages = [
        _system(GENERATE_INSTRUCTION),
        {"role": "user", "content": user_content},
        {"role": "assistant", "content": cot_text},
    ]
    text = _render(tokenizer, messages, add_generation_prompt=False)
    return text if text.endswith("\n") else text + "\n"


# --- Generation: phase 1 (chain of thought) and phase 2 (audio codes) --------------------


def phase1_prompt(tokenizer: Any, caption: str, lyrics: str) -> str:
    """The model writes ``<think>\\n<metadata YAML>\\n</think>`` for this caption and lyrics."""
    return _ask(tokenizer, GENERATE_INSTRUCTION, _caption_and_lyrics(tokenizer, caption, lyrics))


def phase1_uncond_prompt(tokenizer: Any, caption: str, lyrics: str, negative_prompt: str = NO_NEGATIVE_PROMPT) -> str:
    """Phase 1's unconditional prompt for CFG: the negative prompt in place of the caption, or,
    with none, the lyrics alone (``caption`` is then unused)."""
    if has_negative_prompt(negative_prompt):
        return _ask(tokenizer, GENERATE_INSTRUCTION, _caption_and_lyrics(tokenizer, negative_prompt, lyrics))
    return _ask(tokenizer, GENERATE_INSTRUCTION, f"# Lyric\n{_lyrics(tokenizer, lyrics)}\n")


def phase2_prompt(tokenizer: Any, caption: str, lyrics: str, cot_text: str) -> str:
    """The audio-code prompt: phase 1's messages plus the CoT (``<think>\\n…\\n</think>``) as the
    assistant's message."""
    return _with_cot(tokenizer, _caption_and_lyrics(tokenizer, caption, lyrics), cot_text)


def phase2_uncond_prompt(tokenizer: Any, caption: str, lyrics: str, negative_prompt: str = NO_NEGATIVE_PROMPT) -> str:
    """Phase 2's unconditional prompt for CFG: an empty CoT, and the negative prompt (if any) in
    place of the caption."""
    shown_caption = negative_prompt if has_negative_prompt(negative_prompt) else caption
    return _with_cot(tokenizer, _caption_and_lyrics(tokenizer, shown_caption, lyrics), EMPTY_COT)


# --- Other uses: describing codes, writing a song from a description, formatting ------------


def understand_prompt(tokenizer: Any, code_string: str) -> str:
    """Audio codes (``<|audio_code_N|>…``) in; metadata CoT and lyrics out."""
    return _ask(tokenizer, UNDERSTAND_INSTRUCTION, fit_tokens(tokenizer, code_string, LM_CODES_TOKENS))


def inspiration_prompt(tokenizer: Any, query: str, instrumental: bool) -> str:
    """A free-text description in; metadata CoT, caption and lyrics out (sample mode)."""
    query = fit_tokens(tokenizer, query, LM_QUERY_TOKENS)
    return _ask(tokenizer, INSPIRATION_INSTRUCTION, f"{query}\n\ninstrumental: {'true' if instrumental else 'false'}")


def format_prompt(tokenizer: Any, caption: str, lyrics: str) -> str:
    """A rough caption and lyrics in; a detailed caption, metadata and tidied lyrics out.
    Unlike the generation prompts, the user content has no trailing newline."""
    content = f"# Caption\n{_caption(tokenizer, caption)}\n\n# Lyric\n{_lyrics(tokenizer, lyrics)}"
    return _ask(tokenizer, FORMAT_INSTRUCTION, content)
