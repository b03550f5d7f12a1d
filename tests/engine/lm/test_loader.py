"""Finding and loading an LM folder, and the clear errors when that is not possible."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer

from acestep_api.engine.loading.errors import CheckpointError, LMLoadError
from acestep_api.engine.layout import DEFAULT_LM_FOLDER, LM_MODEL_NAMES, TEXT_ENCODER_FOLDER, VAE_FOLDER
from acestep_api.engine.lm.folders import list_lm_folders, resolve_lm_folder
from acestep_api.engine.lm.loader import lm_dtype, load_lm
from acestep_api.engine.lm.tokenizer import check_vocabulary, load_lm_tokenizer


def test_default_name_is_an_official_one():
    assert DEFAULT_LM_FOLDER in LM_MODEL_NAMES
    assert LM_MODEL_NAMES == ("acestep-5Hz-lm-0.6B", "acestep-5Hz-lm-1.7B", "acestep-5Hz-lm-4B")


def test_resolves_a_name_under_the_checkpoint_dir_and_a_path(tiny_checkpoints):
    assert resolve_lm_folder(tiny_checkpoints, DEFAULT_LM_FOLDER) == tiny_checkpoints / DEFAULT_LM_FOLDER
    assert resolve_lm_folder("/nonexistent", tiny_checkpoints / DEFAULT_LM_FOLDER) == tiny_checkpoints / DEFAULT_LM_FOLDER


def test_lists_only_causal_lm_folders(tiny_checkpoints):
    assert list_lm_folders(tiny_checkpoints) == [DEFAULT_LM_FOLDER]  # not the text encoder, VAE or DiTs


def test_missing_lm_names_what_exists(tiny_checkpoints):
    with pytest.raises(LMLoadError) as error:
        resolve_lm_folder(tiny_checkpoints, "acestep-5Hz-lm-4B")
    message = str(error.value)
    assert "acestep-5Hz-lm-4B" in message and DEFAULT_LM_FOLDER in message
    assert isinstance(error.value, CheckpointError)


@pytest.mark.parametrize("name", [TEXT_ENCODER_FOLDER, VAE_FOLDER])
def test_a_folder_that_is_not_an_lm_is_refused(tiny_checkpoints, name):
    with pytest.raises(LMLoadError, match="not an LM checkpoint"):
        resolve_lm_folder(tiny_checkpoints, name)
    with pytest.raises(LMLoadError, match="not an LM checkpoint"):
        load_lm(tiny_checkpoints / name, torch.device("cpu"))


def test_empty_name_is_refused(tiny_checkpoints):
    with pytest.raises(LMLoadError, match="empty"):
        resolve_lm_folder(tiny_checkpoints, " ")


def test_unknown_backend_names_the_allowed_ones(tiny_checkpoints):
    with pytest.raises(LMLoadError, match="allowed: transformers, vllm"):
        load_lm(tiny_checkpoints / DEFAULT_LM_FOLDER, torch.device("cpu"), backend="mlx")


def test_vllm_backend_here_gives_a_clear_error(tiny_checkpoints):
    with pytest.raises(LMLoadError) as error:
        load_lm(tiny_checkpoints / DEFAULT_LM_FOLDER, torch.device("cpu"), backend="vllm")
    message = str(error.value)
    assert "vllm" in message and "CUDA" in message and "transformers" in message


def test_dtype_is_bf16_on_cuda_and_fp32_elsewhere():
    assert lm_dtype(torch.device("cuda")) == torch.bfloat16
    assert lm_dtype(torch.device("cpu")) == torch.float32
    assert lm_dtype(torch.device("mps")) == torch.float32


def test_loads_on_cpu_in_fp32_for_inference(tiny_checkpoints):
    backend = load_lm(tiny_checkpoints / DEFAULT_LM_FOLDER, torch.device("cpu"))
    assert backend.name == "transformers"
    assert next(backend.model.parameters()).dtype == torch.float32
    assert not backend.model.training
    assert not any(p.requires_grad for p in backend.model.parameters())
    assert backend.tokenizer.chat_template


def test_a_model_narrower_than_the_tokenizer_is_refused(tiny_checkpoints):
    folder = tiny_checkpoints / DEFAULT_LM_FOLDER
    tokenizer = load_lm_tokenizer(folder)
    with pytest.raises(LMLoadError, match="vocab_size"):
        check_vocabulary(folder, tokenizer, len(tokenizer) - 1)
    # The text encoder's tokenizer holds only 1,000 code tokens.
    short = AutoTokenizer.from_pretrained(str(tiny_checkpoints / TEXT_ENCODER_FOLDER), local_files_only=True)
    with pytest.raises(LMLoadError, match="audio_code_999"):
        check_vocabulary(folder, short, 10**6)


def test_a_tokenizer_without_chat_template_is_refused(tiny_checkpoints):
    with pytest.raises(LMLoadError, match="chat template"):
        load_lm_tokenizer(tiny_checkpoints / TEXT_ENCODER_FOLDER)
