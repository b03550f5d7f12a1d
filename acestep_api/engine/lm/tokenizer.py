"""An LM folder's tokenizer, and the check that its audio-code tokens fit the model.

Both backends use them, so they live apart from :mod:`acestep_api.engine.lm.loader`, which
picks the backend.
"""

from __future__ import annotations

from pathlib import Path

from acestep_api.engine.loading.errors import LMLoadError
from acestep_api.engine.lm.vocab import AUDIO_CODE_COUNT, LMVocab


def load_lm_tokenizer(folder: Path):
    """The folder's fast tokenizer with its chat template, offline (a few seconds: 64,000 added tokens)."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise LMLoadError(f"cannot load the LM tokenizer from {folder}: {exc}") from exc
    if not getattr(tokenizer, "chat_template", None):
        raise LMLoadError(f"the LM tokenizer in {folder} has no chat template (chat_template.jinja)")
    return tokenizer


def check_vocabulary(folder: Path, tokenizer, vocab_size: int) -> LMVocab:
    """The audio-code tokens must exist, be contiguous and fit in the model's logits."""
    try:
        vocab = LMVocab.from_tokenizer(tokenizer, vocab_size)
    except ValueError as exc:
        raise LMLoadError(f"{folder} is not a 5 Hz LM: {exc}") from exc
    if vocab.code_count != AUDIO_CODE_COUNT:
        raise LMLoadError(
            f"{folder}: only <|audio_code_0|> to <|audio_code_{vocab.code_count - 1}|> have contiguous ids; "
            f"a 5 Hz LM has {AUDIO_CODE_COUNT}"
        )
    if vocab.first_code_id + vocab.code_count > vocab_size or len(tokenizer) > vocab_size:
        raise LMLoadError(
            f"{folder}: the tokenizer has {len(tokenizer)} tokens but the model's vocab_size is {vocab_size}"
        )
    return vocab
