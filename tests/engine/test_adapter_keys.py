"""The official adapter key names map onto the diffusers DiT strictly, and client paths are
confined to the adapters folder (no model needed)."""

from __future__ import annotations

import pytest

from acestep_api.engine.adapter_folders import AdapterError, available, name_for_path
from acestep_api.engine.loading.adapter_keys import AdapterKeyError, module_and_tensor, rename_pattern


@pytest.mark.parametrize("key,expected", [
    ("base_model.model.layers.0.self_attn.q_proj.lora_A.weight", ("layers.0.self_attn.to_q", "lora_A.weight")),
    ("base_model.model.layers.11.cross_attn.o_proj.lora_B.weight", ("layers.11.cross_attn.to_out.0", "lora_B.weight")),
    ("base_model.model.layers.2.mlp.gate_proj.lora_A.weight", ("layers.2.mlp.gate_proj", "lora_A.weight")),
    ("base_model.model.decoder.layers.0.self_attn.v_proj.lora_A.weight", ("layers.0.self_attn.to_v", "lora_A.weight")),
    ("layers.0.self_attn.k_proj.lora_magnitude_vector", ("layers.0.self_attn.to_k", "lora_magnitude_vector")),
])
def test_official_lora_keys_map_onto_diffusers_names(key, expected):
    assert module_and_tensor(key, "lora_") == expected


def test_lokr_keys_and_patterns_map_too():
    assert module_and_tensor("base_model.model.layers.1.self_attn.q_proj.lokr_w1", "lokr_") == \
        ("layers.1.self_attn.to_q", "lokr_w1")
    assert rename_pattern("layers.0.self_attn.o_proj") == "layers.0.self_attn.to_out.0"
    assert rename_pattern("q_proj") == "to_q"


@pytest.mark.parametrize("key,words", [
    ("base_model.model.encoder.layers.0.self_attn.q_proj.lora_A.weight", "only the DiT decoder"),
    ("base_model.model.layers.0.self_attn.q_proj.weight", "names no lora_"),
    ("base_model.model.lora_A.weight", "names no lora_"),
])
def test_keys_that_do_not_map_are_errors_naming_them(key, words):
    with pytest.raises(AdapterKeyError) as raised:
        module_and_tensor(key, "lora_")
    assert words in str(raised.value) and key in str(raised.value)


def test_lora_path_must_be_a_folder_directly_inside_the_adapters_folder(tmp_path):
    root = tmp_path / "loras"
    (root / "style").mkdir(parents=True)
    (root / "style" / "adapter_config.json").write_text("{}")
    (root / "style" / "nested").mkdir()
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "adapter_config.json").write_text("{}")
    assert available(root) == ["style"]
    assert name_for_path(root, "style") == name_for_path(root, str(root / "style")) == "style"
    assert name_for_path(root, "./style/") == "style"
    for bad in ("../outside", str(tmp_path / "outside"), "style/nested", "style/..", "", "missing", "/"):
        with pytest.raises(AdapterError):
            name_for_path(root, bad)
