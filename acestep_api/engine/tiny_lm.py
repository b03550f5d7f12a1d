"""A tiny random 5 Hz LM, written in the official on-disk layout.

It is a ``Qwen3ForCausalLM`` of two narrow layers with a tokenizer shaped like the real one:
byte-level BPE, the Qwen chat tokens, ``<think>`` and ``</think>``, then all 64,000
``<|audio_code_N|>`` tokens with contiguous ids, and a chat template that renders the prompts'
messages exactly as Qwen3's does. Loaded by the same code as the real checkpoints, it lets the
planner, the constraints and both phases run on a CPU in moments. Its output is random: only
constrained decoding makes it well-formed.

Files written (the real folder's names)::

    config.json  generation_config.json  model.safetensors
    tokenizer.json  tokenizer_config.json  chat_template.jinja
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from acestep_api.engine.demo_tokenizer import BPE_TRAINING_TEXT, train_byte_level_bpe
from acestep_api.engine.demo_weights import randomize_parameters
from acestep_api.engine.lm.vocab import AUDIO_CODE_COUNT, EOS_TOKEN, PAD_TOKEN, audio_code_token

TINY_LM_DIMS: dict[str, Any] = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 8,
    "max_position_embeddings": 40960,
    "rope_theta": 1000000.0,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": True,
}

LOGIT_SCALE = 3.0

# Qwen3's rendering of the message shapes the prompts use: system and user turns as they are;
# an assistant turn after the last user turn shows its reasoning as <think>\n…\n</think>\n\n
# followed by the answer (the reasoning is read from content that holds a </think>).
CHAT_TEMPLATE = r"""{%- set ns = namespace(last_user=messages|length - 1, found=false) -%}
{%- for message in messages[::-1] -%}
    {%- if not ns.found and message.role == 'user' -%}
        {%- set ns.last_user = messages|length - 1 - loop.index0 -%}
        {%- set ns.found = true -%}
    {%- endif -%}
{%- endfor -%}
{%- for message in messages -%}
    {%- set content = message.content if message.content is string else '' -%}
    {%- if message.role == 'assistant' -%}
        {%- set reasoning = message.reasoning_content if message.reasoning_content is string else '' -%}
        {%- if message.reasoning_content is not string and '</think>' in content -%}
            {%- set reasoning = content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n') -%}
            {%- set content = content.split('</think>')[-1].lstrip('\n') -%}
        {%- endif -%}
        {%- if loop.index0 > ns.last_user and (loop.last or reasoning) -%}
            {{- '<|im_start|>assistant\n<think>\n' + reasoning.strip('\n') + '\n</think>\n\n' + content.lstrip('\n') + '<|im_end|>\n' -}}
        {%- else -%}
            {{- '<|im_start|>assistant\n' + content + '<|im_end|>\n' -}}
        {%- endif -%}
    {%- else -%}
        {{- '<|im_start|>' + message.role + '\n' + content + '<|im_end|>\n' -}}
    {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{- '<|im_start|>assistant\n' -}}
    {%- if enable_thinking is defined and enable_thinking is false -%}
        {{- '<think>\n\n</think>\n\n' -}}
    {%- endif -%}
{%- endif -%}
"""

# The LM's own words on top of the shared tiny training text: its instructions and CoT fields.
_LM_TRAINING_TEXT = """\
Understand the given musical conditions and describe the audio semantics accordingly:
Expand the user's input into a more detailed and specific musical description:
Format the user's input into a more detailed and specific musical description:
bpm: 120
caption: A bright pop song with synths and drums.
duration: 30
genres: pop
keyscale: C major
language: en
timesignature: 4
instrumental: true
instrumental: false
"""


def build_tiny_lm_tokenizer() -> Any:
    """An offline tokenizer laid out like the real LM's (``tokenizers.Tokenizer``).

    Learned byte-level BPE ids first; then ``<|endoftext|>``, ``<|im_start|>``, ``<|im_end|>``,
    ``<think>``, ``</think>``; then ``<|audio_code_0|>`` … ``<|audio_code_63999|>`` contiguous,
    marked special as in the real tokenizer. No token is appended to encoded text.
    """
    from tokenizers import AddedToken

    tokenizer = train_byte_level_bpe(BPE_TRAINING_TEXT + _LM_TRAINING_TEXT, vocab_size=640)
    tokenizer.add_special_tokens(
        [AddedToken(audio_code_token(i), special=True, normalized=False) for i in range(AUDIO_CODE_COUNT)]
    )
    return tokenizer


def write_tiny_lm(folder: Path, seed: int = 0) -> Path:
    """Write the tiny LM into ``folder`` (usually the default LM folder under the checkpoints) and return it.

    Deterministic for a given ``seed``; about two seconds, most of it the 64,000-token tokenizer.
    """
    from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=build_tiny_lm_tokenizer(),
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        model_max_length=131072,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(str(folder))
    if not (folder / "chat_template.jinja").is_file():  # older transformers embed it in the config
        (folder / "chat_template.jinja").write_text(CHAT_TEMPLATE, encoding="utf-8")

    config = Qwen3Config(
        vocab_size=64 * math.ceil(len(tokenizer) / 64),  # padded past the tokenizer, as real LMs are
        bos_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **TINY_LM_DIMS,
    )
    config.architectures = ["Qwen3ForCausalLM"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen3ForCausalLM(config)
    randomize_parameters(model, torch.Generator().manual_seed(seed + 300))
    with torch.no_grad():  # logits of spread ~3, peaked like a trained LM's rather than nearly flat
        model.model.norm.weight.mul_(LOGIT_SCALE)
    model.save_pretrained(str(folder), safe_serialization=True)
    return folder
