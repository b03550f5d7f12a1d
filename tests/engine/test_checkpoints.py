"""Tiny checkpoints, the official-layout loader's strictness, the other layouts and loaders."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from acestep_api.engine.loading.dit import load_dit_checkpoint
from acestep_api.engine.loading.errors import CheckpointError
from acestep_api.engine.loading.folders import resolve_dit_folder
from acestep_api.engine.loading.keys import diffusers_to_official_key, official_to_diffusers_key
from acestep_api.engine.loading.modules import parameters_on_meta
from acestep_api.engine.loading.text_encoder import load_text_encoder
from acestep_api.engine.loading.vae import load_vae
from acestep_api.engine.layout import (
    BASE_FOLDER,
    DEMO_MARKER,
    DIFFUSERS_SUBFOLDERS,
    TEXT_ENCODER_FOLDER,
    TURBO_FOLDER,
    VAE_FOLDER,
)
from acestep_api.engine.request import TASK_TYPES, TURBO_TASK_TYPES
from acestep_api.engine.tiny import is_demo_checkpoint, write_tiny_checkpoints

GOLDEN_DIT = Path(__file__).resolve().parent.parent / "data" / "golden" / "acestep-v15-tiny"


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_checkpoints(tmp_path_factory.mktemp("ckpt"), seed=0)


@pytest.fixture
def turbo_copy(tiny_root: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny turbo folder that a test may damage."""
    return Path(shutil.copytree(tiny_root / TURBO_FOLDER, tmp_path / "dit"))


def rewrite_weights(folder: Path, edit) -> None:
    path = folder / "model.safetensors"
    state = load_file(str(path))
    edit(state)
    save_file(state, str(path))


def run_dit(ckpt, seed: int = 0) -> torch.Tensor:
    """One DiT call on fixed random inputs shaped by the checkpoint's config."""
    cfg = ckpt.config
    gen = torch.Generator().manual_seed(seed)
    channels = cfg["audio_acoustic_hidden_dim"]
    with torch.no_grad():
        return ckpt.transformer(
            hidden_states=torch.randn(1, 11, channels, generator=gen),
            timestep=torch.tensor([0.7]),
            timestep_r=torch.tensor([0.7]),
            encoder_hidden_states=torch.randn(1, 5, cfg["hidden_size"], generator=gen),
            context_latents=torch.randn(1, 11, cfg["in_channels"] - channels, generator=gen),
        ).sample.float()


def assert_same_weights(ours, reference) -> None:
    for component, module in reference.modules.items():
        theirs = ours.modules[component].state_dict()
        assert theirs.keys() == module.state_dict().keys(), component
        for key, tensor in module.state_dict().items():
            assert torch.equal(theirs[key], tensor), f"{component}.{key} differs"


# --------------------------------------------------------------------------- #
#  Tiny checkpoints                                                            #
# --------------------------------------------------------------------------- #


def test_tiny_root_has_every_folder(tiny_root: Path) -> None:
    for name in (TURBO_FOLDER, BASE_FOLDER, VAE_FOLDER, TEXT_ENCODER_FOLDER, DEMO_MARKER):
        assert (tiny_root / name).exists(), name
    for name in (TURBO_FOLDER, BASE_FOLDER):
        files = {p.name for p in (tiny_root / name).iterdir()}
        assert files >= {"config.json", "model.safetensors", "silence_latent.pt"}
    assert is_demo_checkpoint(tiny_root)
    assert is_demo_checkpoint(tiny_root / TURBO_FOLDER)
    assert not is_demo_checkpoint(GOLDEN_DIT)


def test_tiny_turbo_and_base_load(tiny_root: Path) -> None:
    turbo = load_dit_checkpoint(tiny_root / TURBO_FOLDER)
    base = load_dit_checkpoint(tiny_root / BASE_FOLDER)
    assert (turbo.name, turbo.is_turbo, turbo.config["model_version"]) == (TURBO_FOLDER, True, "turbo")
    assert (base.name, base.is_turbo, base.config["model_version"]) == (BASE_FOLDER, False, "base")
    assert turbo.supported_task_types == TURBO_TASK_TYPES
    assert base.supported_task_types == TASK_TYPES
    channels = turbo.config["audio_acoustic_hidden_dim"]
    assert turbo.config["in_channels"] == 3 * channels
    assert turbo.config["timbre_hidden_dim"] == channels
    assert tuple(turbo.silence_latent.shape) == (1, 15000, channels)
    out_turbo, out_base = run_dit(turbo), run_dit(base)
    assert torch.isfinite(out_turbo).all()
    assert not torch.allclose(out_turbo, out_base), "turbo and base must have different weights"


def test_tiny_official_file_uses_official_names(tiny_root: Path) -> None:
    keys = set(load_file(str(tiny_root / TURBO_FOLDER / "model.safetensors")))
    golden_keys = set(load_file(str(GOLDEN_DIT / "model.safetensors")))
    assert keys == golden_keys  # same layer counts as the golden tiny model, so the same 171 names
    assert len(keys) == 171


def test_tiny_weights_are_random_everywhere(tiny_root: Path) -> None:
    state = load_file(str(tiny_root / TURBO_FOLDER / "model.safetensors"))
    for key, tensor in state.items():
        assert not torch.all(tensor == 0), f"{key} is all zeros"
        assert not torch.all(tensor == 1), f"{key} is all ones"


def test_tiny_checkpoints_are_deterministic(tmp_path: Path, tiny_root: Path) -> None:
    again = write_tiny_checkpoints(tmp_path / "again", seed=0)
    other = write_tiny_checkpoints(tmp_path / "other", seed=1)
    for rel in (f"{TURBO_FOLDER}/model.safetensors", f"{VAE_FOLDER}/diffusion_pytorch_model.safetensors",
                f"{TEXT_ENCODER_FOLDER}/model.safetensors", f"{TEXT_ENCODER_FOLDER}/tokenizer.json"):
        assert (again / rel).read_bytes() == (tiny_root / rel).read_bytes(), rel
    assert (other / TURBO_FOLDER / "model.safetensors").read_bytes() != (
        tiny_root / TURBO_FOLDER / "model.safetensors"
    ).read_bytes()


def test_dit_overrides_change_only_the_dit(tmp_path: Path) -> None:
    root = write_tiny_checkpoints(tmp_path, dit_overrides={"hidden_size": 32, "num_hidden_layers": 4})
    ckpt = load_dit_checkpoint(root / BASE_FOLDER)
    assert ckpt.config["hidden_size"] == 32 and ckpt.is_turbo is False
    assert ckpt.config["layer_types"] == ["sliding_attention", "full_attention"] * 2
    assert run_dit(ckpt).shape == (1, 11, ckpt.config["audio_acoustic_hidden_dim"])


# --------------------------------------------------------------------------- #
#  Key mapping                                                                 #
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    ("official", "component", "ours"),
    [
        ("decoder.layers.3.self_attn.q_proj.weight", "transformer", "layers.3.self_attn.to_q.weight"),
        ("decoder.layers.0.cross_attn.o_proj.weight", "transformer", "layers.0.cross_attn.to_out.0.weight"),
        ("decoder.layers.1.cross_attn.k_norm.weight", "transformer", "layers.1.cross_attn.norm_k.weight"),
        ("decoder.proj_in.1.weight", "transformer", "proj_in_conv.weight"),
        ("decoder.proj_out.1.bias", "transformer", "proj_out_conv.bias"),
        ("decoder.time_embed_r.time_proj.weight", "transformer", "time_embed_r.time_proj.weight"),
        ("encoder.lyric_encoder.layers.1.self_attn.v_proj.weight", "condition_encoder",
         "lyric_encoder.layers.1.self_attn.to_v.weight"),
        ("encoder.timbre_encoder.special_token", "condition_encoder", "timbre_encoder.special_token"),
        ("tokenizer.attention_pooler.layers.0.self_attn.q_norm.weight", "audio_tokenizer",
         "attention_pooler.layers.0.self_attn.norm_q.weight"),
        ("tokenizer.quantizer.project_in.bias", "audio_tokenizer", "quantizer.project_in.bias"),
        ("detokenizer.proj_out.weight", "audio_detokenizer", "proj_out.weight"),
        ("null_condition_emb", "condition_encoder", "null_condition_emb"),
    ],
)
def test_key_mapping_both_ways(official: str, component: str, ours: str) -> None:
    assert official_to_diffusers_key(official) == (component, ours)
    assert diffusers_to_official_key(component, ours) == official


def test_key_mapping_drops_rotary_and_rejects_strangers() -> None:
    assert official_to_diffusers_key("decoder.rotary_emb.inv_freq") is None
    with pytest.raises(CheckpointError, match="lm_head.weight"):
        official_to_diffusers_key("lm_head.weight")


# --------------------------------------------------------------------------- #
#  Strict loading                                                              #
# --------------------------------------------------------------------------- #


def test_renamed_key_fails(turbo_copy: Path) -> None:
    def rename(state):
        state["decoder.layers.0.self_attn.query.weight"] = state.pop("decoder.layers.0.self_attn.q_proj.weight")

    rewrite_weights(turbo_copy, rename)
    with pytest.raises(CheckpointError) as err:
        load_dit_checkpoint(turbo_copy)
    assert "decoder.layers.0.self_attn.q_proj.weight" in str(err.value)  # missing
    assert "decoder.layers.0.self_attn.query.weight" in str(err.value)  # unexpected


def test_missing_key_fails(turbo_copy: Path) -> None:
    rewrite_weights(turbo_copy, lambda state: state.pop("encoder.text_projector.weight"))
    with pytest.raises(CheckpointError, match=r"missing keys: encoder\.text_projector\.weight"):
        load_dit_checkpoint(turbo_copy)


def test_missing_null_condition_fails(turbo_copy: Path) -> None:
    rewrite_weights(turbo_copy, lambda state: state.pop("null_condition_emb"))
    with pytest.raises(CheckpointError, match=r"missing keys: null_condition_emb"):
        load_dit_checkpoint(turbo_copy)


def test_extra_key_fails(turbo_copy: Path) -> None:
    rewrite_weights(turbo_copy, lambda state: state.__setitem__("decoder.extra_gate.weight", torch.ones(3)))
    with pytest.raises(CheckpointError, match=r"unexpected keys: decoder\.extra_gate\.weight"):
        load_dit_checkpoint(turbo_copy)


def test_key_outside_known_prefixes_fails(turbo_copy: Path) -> None:
    rewrite_weights(turbo_copy, lambda state: state.__setitem__("lm_head.weight", torch.ones(3)))
    with pytest.raises(CheckpointError, match=r"unexpected keys: lm_head\.weight"):
        load_dit_checkpoint(turbo_copy)


def test_wrong_shape_fails(turbo_copy: Path) -> None:
    rewrite_weights(turbo_copy, lambda state: state.__setitem__("decoder.condition_embedder.bias", torch.ones(65)))
    with pytest.raises(CheckpointError, match=r"wrong shapes: decoder\.condition_embedder\.bias \(checkpoint \[65\]"):
        load_dit_checkpoint(turbo_copy)


def test_config_that_does_not_match_the_weights_fails(turbo_copy: Path) -> None:
    config = json.loads((turbo_copy / "config.json").read_text())
    config["intermediate_size"] = 96
    (turbo_copy / "config.json").write_text(json.dumps(config))
    needs = r"mlp\.gate_proj\.weight \(checkpoint \[128, 64\], config needs \[96, 64\]\)"
    with pytest.raises(CheckpointError, match=needs):
        load_dit_checkpoint(turbo_copy)


def test_config_fields_left_out_take_official_defaults(turbo_copy: Path, tiny_root: Path) -> None:
    config = json.loads((turbo_copy / "config.json").read_text())
    # All equal to the AceStepConfig defaults (layer_types: the default alternation).
    for field in ("rope_theta", "rms_norm_eps", "layer_types", "fsq_input_levels", "attention_bias",
                  "pool_window_size", "patch_size", "is_turbo", "use_sliding_window"):
        del config[field]
    (turbo_copy / "config.json").write_text(json.dumps(config))
    ckpt = load_dit_checkpoint(turbo_copy)
    assert ckpt.is_turbo is True  # model_version "turbo"
    assert ckpt.config["layer_types"] == ["sliding_attention", "full_attention"]
    assert ckpt.config["rope_theta"] == 1000000 and ckpt.config["fsq_input_levels"] == [8, 8, 8, 5, 5, 5]
    assert_same_weights(ckpt, load_dit_checkpoint(tiny_root / TURBO_FOLDER))


def test_rotary_inv_freq_keys_are_ignored(turbo_copy: Path, tiny_root: Path) -> None:
    rewrite_weights(turbo_copy, lambda state: state.__setitem__("decoder.rotary_emb.inv_freq", torch.ones(8)))
    assert_same_weights(load_dit_checkpoint(turbo_copy), load_dit_checkpoint(tiny_root / TURBO_FOLDER))


def test_bf16_file_loads_in_any_dtype(turbo_copy: Path, tiny_root: Path) -> None:
    def to_bf16(state):
        for key in state:
            state[key] = state[key].to(torch.bfloat16)

    rewrite_weights(turbo_copy, to_bf16)
    as_fp32 = load_dit_checkpoint(turbo_copy, dtype=torch.float32)
    as_bf16 = load_dit_checkpoint(turbo_copy, dtype=torch.bfloat16)
    for ckpt, dtype in ((as_fp32, torch.float32), (as_bf16, torch.bfloat16)):
        for module in ckpt.modules.values():
            assert {p.dtype for p in module.parameters()} == {dtype}
        assert ckpt.silence_latent.dtype == dtype
    reference = run_dit(load_dit_checkpoint(tiny_root / TURBO_FOLDER))
    assert torch.allclose(run_dit(as_fp32), reference, rtol=0.05, atol=0.05)


def test_sharded_checkpoint_loads(turbo_copy: Path, tiny_root: Path) -> None:
    state = load_file(str(turbo_copy / "model.safetensors"))
    (turbo_copy / "model.safetensors").unlink()
    keys = sorted(state)
    shards = {"model-00001-of-00002.safetensors": keys[::2], "model-00002-of-00002.safetensors": keys[1::2]}
    weight_map = {}
    for name, shard_keys in shards.items():
        save_file({k: state[k] for k in shard_keys}, str(turbo_copy / name))
        weight_map.update({k: name for k in shard_keys})
    (turbo_copy / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    assert_same_weights(load_dit_checkpoint(turbo_copy), load_dit_checkpoint(tiny_root / TURBO_FOLDER))

    (turbo_copy / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(CheckpointError, match="model-00002-of-00002.safetensors"):
        load_dit_checkpoint(turbo_copy)


def test_silence_latent_of_another_length_resizes_the_buffer(turbo_copy: Path) -> None:
    silence = torch.randn(1, 4, 100)
    torch.save(silence, turbo_copy / "silence_latent.pt")
    ckpt = load_dit_checkpoint(turbo_copy)
    assert torch.equal(ckpt.silence_latent, silence.transpose(1, 2))
    assert ckpt.condition_encoder.silence_latent.shape == (1, 100, 4)


def test_silence_latent_with_wrong_channels_fails(turbo_copy: Path) -> None:
    torch.save(torch.randn(1, 5, 100), turbo_copy / "silence_latent.pt")
    with pytest.raises(CheckpointError, match=r"\[1, 4, L\]"):
        load_dit_checkpoint(turbo_copy)


def test_missing_silence_latent_fails(turbo_copy: Path) -> None:
    (turbo_copy / "silence_latent.pt").unlink()
    with pytest.raises(CheckpointError, match="silence_latent.pt"):
        load_dit_checkpoint(turbo_copy)


def test_not_a_checkpoint_folder_fails(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(CheckpointError, match="notes.txt"):
        load_dit_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_dit_checkpoint(tmp_path / "nowhere")


def test_loading_builds_parameters_on_meta_only_inside_the_block() -> None:
    with parameters_on_meta():
        inside = nn.Linear(4, 4)
    outside = nn.Linear(4, 4)
    assert inside.weight.device.type == "meta"
    assert outside.weight.device.type == "cpu"


def test_loaded_modules_are_ready_for_inference(tiny_root: Path) -> None:
    ckpt = load_dit_checkpoint(tiny_root / TURBO_FOLDER)
    for name, module in ckpt.modules.items():
        assert not module.training, name
        for pname, param in module.named_parameters():
            assert param.device.type == "cpu" and not param.requires_grad, f"{name}.{pname}"
        for bname, buf in module.named_buffers():
            assert buf.device.type == "cpu", f"{name}.{bname}"


# --------------------------------------------------------------------------- #
#  diffusers layout                                                            #
# --------------------------------------------------------------------------- #


def test_diffusers_layout_loads_the_same_model(tiny_root: Path, tmp_path: Path) -> None:
    official = load_dit_checkpoint(tiny_root / TURBO_FOLDER)
    folder = tmp_path / "acestep-v15-turbo-diffusers"
    for component, sub in DIFFUSERS_SUBFOLDERS.items():
        official.modules[component].save_pretrained(str(folder / sub))
    converted = load_dit_checkpoint(folder)
    assert converted.name == "acestep-v15-turbo-diffusers"
    assert converted.is_turbo is True
    assert converted.supported_task_types == TURBO_TASK_TYPES
    assert torch.equal(converted.silence_latent, official.silence_latent)
    for key in ("hidden_size", "num_hidden_layers", "in_channels", "text_hidden_dim", "fsq_dim", "layer_types"):
        assert converted.config[key] == official.config[key], key
    assert_same_weights(converted, official)
    torch.testing.assert_close(run_dit(converted), run_dit(official), rtol=1e-5, atol=1e-5)


def test_diffusers_layout_with_a_missing_subfolder_fails(tiny_root: Path, tmp_path: Path) -> None:
    official = load_dit_checkpoint(tiny_root / TURBO_FOLDER)
    folder = tmp_path / "partial"
    official.transformer.save_pretrained(str(folder / "transformer"))
    with pytest.raises(CheckpointError, match="condition_encoder"):
        load_dit_checkpoint(folder)


# --------------------------------------------------------------------------- #
#  Text encoder, tokenizer, VAE                                                #
# --------------------------------------------------------------------------- #


def test_tokenizer_appends_endoftext(tiny_root: Path) -> None:
    tokenizer, _ = load_text_encoder(tiny_root / TEXT_ENCODER_FOLDER)
    eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    assert tokenizer.pad_token_id == eos
    ids = tokenizer("# Caption\nA calm piano piece", truncation=True, max_length=256)["input_ids"]
    assert ids[-1] == eos and ids.count(eos) == 1
    # The caption template ends "<|endoftext|>\n": the post-processor adds another one.
    ids = tokenizer("# Metas\n- duration: 30 seconds\n<|endoftext|>\n")["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids[-3:]) == ["<|endoftext|>", "Ċ", "<|endoftext|>"]


def test_tokenizer_has_qwen_and_audio_code_tokens(tiny_root: Path) -> None:
    tokenizer, model = load_text_encoder(tiny_root / TEXT_ENCODER_FOLDER)
    for token in ("<|im_start|>", "<|im_end|>", "<think>", "</think>", "<|audio_code_0|>", "<|audio_code_999|>"):
        ids = tokenizer(token, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1 and tokenizer.convert_ids_to_tokens(ids) == [token], token
    assert len(tokenizer) <= model.config.vocab_size


def test_text_encoder_runs(tiny_root: Path) -> None:
    tokenizer, model = load_text_encoder(tiny_root / TEXT_ENCODER_FOLDER)
    dit_config = json.loads((tiny_root / TURBO_FOLDER / "config.json").read_text())
    ids = torch.tensor([tokenizer("[Verse]\nla la la")["input_ids"]])
    with torch.no_grad():
        hidden = model(input_ids=ids).last_hidden_state
        embeddings = model.embed_tokens(ids)
    assert hidden.shape == (1, ids.shape[1], dit_config["text_hidden_dim"])
    assert embeddings.shape == hidden.shape
    assert torch.isfinite(hidden).all()


def test_text_encoder_missing_folder_fails(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="config.json"):
        load_text_encoder(tmp_path)


def test_vae_loads_at_25_latent_frames_per_second(tiny_root: Path) -> None:
    vae = load_vae(tiny_root / VAE_FOLDER)
    dit_config = json.loads((tiny_root / TURBO_FOLDER / "config.json").read_text())
    channels = dit_config["audio_acoustic_hidden_dim"]
    assert vae.config.sampling_rate == 48000
    assert math.prod(vae.config.downsampling_ratios) == 1920
    assert vae.config.decoder_input_channels == channels
    with torch.no_grad():
        audio = vae.decode(torch.randn(1, channels, 25, generator=torch.Generator().manual_seed(0))).sample
        latents = vae.encode(audio).latent_dist.mean
    assert audio.shape == (1, 2, 48000)
    assert latents.shape == (1, channels, 25)
    assert torch.isfinite(audio).all()


def test_vae_missing_folder_fails(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="config.json"):
        load_vae(tmp_path)


# --------------------------------------------------------------------------- #
#  resolve_dit_folder                                                          #
# --------------------------------------------------------------------------- #


def test_resolve_by_name_and_by_path(tiny_root: Path) -> None:
    assert resolve_dit_folder(tiny_root, TURBO_FOLDER) == tiny_root / TURBO_FOLDER
    assert resolve_dit_folder(tiny_root / "elsewhere", str(tiny_root / BASE_FOLDER)) == tiny_root / BASE_FOLDER


def test_resolve_unknown_name_lists_what_exists(tiny_root: Path) -> None:
    with pytest.raises(CheckpointError) as err:
        resolve_dit_folder(tiny_root, "acestep-v15-sft")
    message = str(err.value)
    assert "acestep-v15-sft" in message
    assert TURBO_FOLDER in message and BASE_FOLDER in message
    assert VAE_FOLDER + "," not in message  # only DiT folders are offered


def test_resolve_folder_that_is_not_a_dit(tiny_root: Path) -> None:
    with pytest.raises(CheckpointError, match="not a DiT checkpoint"):
        resolve_dit_folder(tiny_root, VAE_FOLDER)


def test_resolve_empty_name(tiny_root: Path) -> None:
    with pytest.raises(CheckpointError, match="empty"):
        resolve_dit_folder(tiny_root, "")


def test_resolve_in_missing_checkpoint_dir(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="none"):
        resolve_dit_folder(tmp_path / "missing", "acestep-v15-turbo")
