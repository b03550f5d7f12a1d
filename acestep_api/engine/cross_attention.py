"""Cross-attention that ignores the padding of a batch whose items have texts of different lengths.

The DiT's cross-attention reads the condition encoder's packed sequence (lyrics, timbre,
caption) with no mask (diffusers' ``AceStepTransformer1DModel`` passes none): every item of a single request has the same texts, so there is no padding. Items
of different jobs have sequences of different lengths, padded at the end to the longest; the
padding must weigh nothing, or an item would not come out as it does alone. While
``masked_cross_attention`` is active, each cross-attention module's processor is diffusers' own,
given the key mask [B, S] (True = a real token); self-attention is untouched.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from diffusers.models.transformers.ace_step_transformer import AceStepAttention, AceStepAttnProcessor2_0


class KeyMaskedProcessor(AceStepAttnProcessor2_0):
    """diffusers' ACE-Step attention with a fixed key mask for cross-attention calls."""

    def __init__(self, key_mask: torch.Tensor, like: AceStepAttnProcessor2_0 | None = None):
        super().__init__()
        self.key_mask = key_mask
        if like is not None:  # keep an attention backend chosen for the model
            self._attention_backend = like._attention_backend
            self._parallel_config = like._parallel_config

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, image_rotary_emb=None):
        if encoder_hidden_states is not None and attention_mask is None:
            attention_mask = self.key_mask
        return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)


@contextmanager
def masked_cross_attention(transformer: torch.nn.Module, key_mask: torch.Tensor | None) -> Iterator[None]:
    """Run ``transformer``'s cross-attention with ``key_mask`` [B, S]; nothing changes when the
    mask is None or has no padding (a single request's batch keeps the exact unmasked path)."""
    if key_mask is None or bool(key_mask.all()):
        yield
        return
    modules = [m for m in transformer.modules() if isinstance(m, AceStepAttention) and m.is_cross_attention]
    saved = [m.processor for m in modules]
    try:
        for module, processor in zip(modules, saved):
            module.set_processor(KeyMaskedProcessor(key_mask, processor))
        yield
    finally:
        for module, processor in zip(modules, saved):
            module.set_processor(processor)
