"""Where the audio-code tokens and the special tokens sit in an LM tokenizer's vocabulary."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

AUDIO_CODE_PATTERN = re.compile(r"<\|audio_code_(\d+)\|>")
AUDIO_CODE_COUNT = 64000  # FSQ levels 8*8*8*5*5*5
EOS_TOKEN = "<|im_end|>"
PAD_TOKEN = "<|endoftext|>"
THINK_END_TOKEN = "</think>"


def audio_code_token(code: int) -> str:
    return f"<|audio_code_{code}|>"


@dataclass(frozen=True)
class LMVocab:
    """Token ids the planner and the constraints need. Codes are contiguous:
    ``<|audio_code_N|>`` has id ``first_code_id + N`` for N in ``[0, code_count)``."""

    first_code_id: int
    code_count: int
    eos_id: int
    pad_id: int
    vocab_size: int  # rows of the model's logits (may exceed len(tokenizer))

    @classmethod
    def from_tokenizer(cls, tokenizer: Any, vocab_size: int | None = None) -> "LMVocab":
        first = tokenizer.convert_tokens_to_ids(audio_code_token(0))
        if first is None or first == tokenizer.unk_token_id:
            raise ValueError("the LM tokenizer has no <|audio_code_0|> token")
        count = 0
        while count < AUDIO_CODE_COUNT and tokenizer.convert_tokens_to_ids(audio_code_token(count)) == first + count:
            count += 1
        eos = tokenizer.convert_tokens_to_ids(EOS_TOKEN)
        pad = tokenizer.convert_tokens_to_ids(PAD_TOKEN)
        return cls(first, count, eos, pad, vocab_size or len(tokenizer))

    def is_code(self, token_id: int) -> bool:
        return self.first_code_id <= token_id < self.first_code_id + self.code_count

    def code_of(self, token_id: int) -> int:
        return token_id - self.first_code_id



def parse_audio_codes(text: str) -> list[int]:
    """Every ``<|audio_code_N|>`` in ``text`` (a client's ``audio_code_string`` or LM output), N clamped
    to ``[0, 63999]``, as the official handler parses them."""
    # More than 6 digits is past the last code anyway; int() of 5,000 digits would raise.
    return [min(int(n), AUDIO_CODE_COUNT - 1) if len(n) <= 6 else AUDIO_CODE_COUNT - 1
            for n in AUDIO_CODE_PATTERN.findall(text)]


def format_audio_codes(codes: list[int]) -> str:
    return "".join(audio_code_token(code) for code in codes)
