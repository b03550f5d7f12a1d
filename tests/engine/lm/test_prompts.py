"""The LM prompts, rendered by the tiny LM's chat template, against Qwen3's chat format written
out by hand (docs/pipeline.md#lm-prompts)."""

from __future__ import annotations

import pytest

from acestep_api.engine.layout import DEFAULT_LM_FOLDER
from acestep_api.engine.lm import prompts
from acestep_api.engine.lm.tokenizer import load_lm_tokenizer

GEN_SYSTEM = (
    "<|im_start|>system\n# Instruction\nGenerate audio semantic tokens based on the given conditions:\n\n"
    "<|im_end|>\n"
)
CAPTION = "温柔的钢琴民谣，女声"
LYRICS = "[Verse]\n月光洒在窗前\n我想起你的脸"
COT = "<think>\nbpm: 92\ncaption: 温柔的钢琴民谣\nduration: 30\nkeyscale: A minor\nlanguage: zh\ntimesignature: 4\n</think>"


@pytest.fixture(scope="module")
def tokenizer(tiny_checkpoints):
    return load_lm_tokenizer(tiny_checkpoints / DEFAULT_LM_FOLDER)


def test_phase1_with_cjk_lyrics(tokenizer):
    assert prompts.phase1_prompt(tokenizer, CAPTION, LYRICS) == (
        "<|im_start|>system\n# Instruction\nGenerate audio semantic tokens based on the given conditions:\n\n"
        "<|im_end|>\n"
        "<|im_start|>user\n# Caption\n温柔的钢琴民谣，女声\n\n# Lyric\n[Verse]\n月光洒在窗前\n我想起你的脸\n<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_phase1_with_empty_caption_and_instrumental_lyrics(tokenizer):
    assert prompts.phase1_prompt(tokenizer, "", "[Instrumental]") == (
        GEN_SYSTEM + "<|im_start|>user\n# Caption\n\n\n# Lyric\n[Instrumental]\n<|im_end|>\n<|im_start|>assistant\n"
    )


@pytest.mark.parametrize("negative", ["NO USER INPUT", "", "   ", "  NO USER INPUT \n"])
def test_phase1_uncond_without_negative_prompt_keeps_only_the_lyrics(tokenizer, negative):
    assert prompts.phase1_uncond_prompt(tokenizer, CAPTION, LYRICS, negative) == (
        GEN_SYSTEM + "<|im_start|>user\n# Lyric\n[Verse]\n月光洒在窗前\n我想起你的脸\n<|im_end|>\n<|im_start|>assistant\n"
    )


def test_phase1_uncond_with_negative_prompt_replaces_the_caption(tokenizer):
    assert prompts.phase1_uncond_prompt(tokenizer, CAPTION, "[Instrumental]", "noisy, low quality") == (
        GEN_SYSTEM
        + "<|im_start|>user\n# Caption\nnoisy, low quality\n\n# Lyric\n[Instrumental]\n<|im_end|>\n<|im_start|>assistant\n"
    )


def test_phase2_puts_the_cot_in_the_assistant_turn_and_ends_after_it(tokenizer):
    assert prompts.phase2_prompt(tokenizer, CAPTION, LYRICS, COT) == (
        GEN_SYSTEM
        + "<|im_start|>user\n# Caption\n温柔的钢琴民谣，女声\n\n# Lyric\n[Verse]\n月光洒在窗前\n我想起你的脸\n<|im_end|>\n"
        "<|im_start|>assistant\n<think>\nbpm: 92\ncaption: 温柔的钢琴民谣\nduration: 30\nkeyscale: A minor\n"
        "language: zh\ntimesignature: 4\n</think>\n\n<|im_end|>\n"
    )


def test_phase2_uncond_without_negative_prompt_has_an_empty_cot_and_the_caption(tokenizer):
    assert prompts.phase2_uncond_prompt(tokenizer, "", "[Instrumental]", "NO USER INPUT") == (
        GEN_SYSTEM
        + "<|im_start|>user\n# Caption\n\n\n# Lyric\n[Instrumental]\n<|im_end|>\n"
        "<|im_start|>assistant\n<think>\n\n</think>\n\n<|im_end|>\n"
    )


def test_phase2_uncond_with_negative_prompt_replaces_the_caption(tokenizer):
    assert prompts.phase2_uncond_prompt(tokenizer, CAPTION, LYRICS, "noisy") == (
        GEN_SYSTEM
        + "<|im_start|>user\n# Caption\nnoisy\n\n# Lyric\n[Verse]\n月光洒在窗前\n我想起你的脸\n<|im_end|>\n"
        "<|im_start|>assistant\n<think>\n\n</think>\n\n<|im_end|>\n"
    )


def test_understand_prompt(tokenizer):
    assert prompts.understand_prompt(tokenizer, "<|audio_code_1|><|audio_code_63999|>") == (
        "<|im_start|>system\n# Instruction\n"
        "Understand the given musical conditions and describe the audio semantics accordingly:\n\n<|im_end|>\n"
        "<|im_start|>user\n<|audio_code_1|><|audio_code_63999|><|im_end|>\n<|im_start|>assistant\n"
    )


@pytest.mark.parametrize("instrumental, flag", [(True, "true"), (False, "false")])
def test_inspiration_prompt(tokenizer, instrumental, flag):
    assert prompts.inspiration_prompt(tokenizer, "一首安静的夜曲", instrumental) == (
        "<|im_start|>system\n# Instruction\n"
        "Expand the user's input into a more detailed and specific musical description:\n\n<|im_end|>\n"
        f"<|im_start|>user\n一首安静的夜曲\n\ninstrumental: {flag}<|im_end|>\n<|im_start|>assistant\n"
    )


def test_format_prompt_has_no_newline_after_the_lyrics(tokenizer):
    assert prompts.format_prompt(tokenizer, "latin pop", "[Instrumental]") == (
        "<|im_start|>system\n# Instruction\n"
        "Format the user's input into a more detailed and specific musical description:\n\n<|im_end|>\n"
        "<|im_start|>user\n# Caption\nlatin pop\n\n# Lyric\n[Instrumental]<|im_end|>\n<|im_start|>assistant\n"
    )


def test_chat_tokens_are_single_tokens_in_the_rendered_prompt(tokenizer):
    ids = tokenizer(prompts.phase2_prompt(tokenizer, "x", "y", "<think>\nbpm: 90\n</think>"))["input_ids"]
    for token in ("<|im_start|>", "<|im_end|>", "<think>", "</think>"):
        assert tokenizer.convert_tokens_to_ids(token) in ids
    assert ids[-2:] == [tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer("\n")["input_ids"][0]]
