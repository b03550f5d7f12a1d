"""The tiny random 5 Hz LM: official layout, loadable, real-shaped vocabulary."""

from __future__ import annotations

import json

import pytest
import torch

from acestep_api.engine.layout import DEFAULT_LM_FOLDER
from acestep_api.engine.lm.backend_transformers import TransformersBackend
from acestep_api.engine.lm.loader import load_lm
from acestep_api.engine.lm.vocab import AUDIO_CODE_COUNT, LMVocab, audio_code_token
from acestep_api.engine.tiny_lm import write_tiny_lm


@pytest.fixture(scope="module")
def backend(tiny_checkpoints) -> TransformersBackend:
    return load_lm(tiny_checkpoints / DEFAULT_LM_FOLDER, torch.device("cpu"))


def test_written_in_the_official_layout(tiny_checkpoints):
    folder = tiny_checkpoints / DEFAULT_LM_FOLDER
    assert DEFAULT_LM_FOLDER == "acestep-5Hz-lm-0.6B"
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        assert (folder / name).is_file(), name
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["Qwen3ForCausalLM"]
    assert config["tie_word_embeddings"] is True
    assert config["num_hidden_layers"] == 2


def test_loads_as_a_tied_qwen3_causal_lm(backend):
    model = backend.model
    assert type(model).__name__ == "Qwen3ForCausalLM"
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert backend.model_name == DEFAULT_LM_FOLDER


def test_code_tokens_are_contiguous_after_the_chat_tokens(backend):
    tokenizer = backend.tokenizer
    vocab = LMVocab.from_tokenizer(tokenizer, backend.vocab_size)
    assert vocab.code_count == AUDIO_CODE_COUNT
    assert vocab.first_code_id == tokenizer.convert_tokens_to_ids("</think>") + 1
    assert vocab.eos_id == tokenizer.convert_tokens_to_ids("<|im_end|>") == tokenizer.eos_token_id
    assert vocab.pad_id == tokenizer.convert_tokens_to_ids("<|endoftext|>") == tokenizer.pad_token_id
    ids = [tokenizer.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>")]
    assert ids == list(range(ids[0], ids[0] + 5))
    assert vocab.first_code_id + AUDIO_CODE_COUNT == len(tokenizer)


def test_tokenizer_round_trips_code_tokens(backend):
    tokenizer = backend.tokenizer
    vocab = LMVocab.from_tokenizer(tokenizer, backend.vocab_size)
    codes = [0, 1, 12345, 63998, 63999]
    text = "<think>\n</think>\n\n" + "".join(audio_code_token(c) for c in codes) + "<|im_end|>"
    ids = tokenizer(text)["input_ids"]
    assert ids[-6:-1] == [vocab.first_code_id + c for c in codes]
    assert tokenizer.decode(ids, skip_special_tokens=False) == text
    assert tokenizer("<|audio_code_64000|>")["input_ids"][0] != vocab.first_code_id + 64000  # no such token


def test_logits_cover_the_vocabulary(backend):
    tokenizer = backend.tokenizer
    batch = tokenizer(["<|im_start|>user\nhello<|im_end|>\n"], return_tensors="pt")
    with torch.no_grad():
        logits = backend.model(**batch).logits
    assert logits.shape[-1] == backend.vocab_size >= len(tokenizer)
    assert backend.vocab_size % 64 == 0
    assert torch.isfinite(logits).all()


def test_writing_is_deterministic(tiny_checkpoints, tmp_path):
    again = write_tiny_lm(tmp_path / DEFAULT_LM_FOLDER, seed=0)
    assert (again / "model.safetensors").read_bytes() == (tiny_checkpoints / DEFAULT_LM_FOLDER / "model.safetensors").read_bytes()
    assert (again / "tokenizer.json").read_bytes() == (tiny_checkpoints / DEFAULT_LM_FOLDER / "tokenizer.json").read_bytes()
