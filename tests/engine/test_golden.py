"""The tiny official checkpoint, loaded through our loader, reproduces the official model code.

Golden inputs and outputs: tests/data/golden/README.md. A wrong key mapping, a dropped or
swapped tensor, or a wrong config translation shows up here and nowhere else.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from acestep_api.engine.loading.dit import DitCheckpoint, load_dit_checkpoint

GOLDEN = Path(__file__).resolve().parent.parent / "data" / "golden"
REL_TOL = 1e-4


@pytest.fixture(scope="module")
def ckpt() -> DitCheckpoint:
    torch.manual_seed(0)
    return load_dit_checkpoint(GOLDEN / "acestep-v15-tiny", device="cpu", dtype=torch.float32)


def golden(file: str, prefix: str) -> dict[str, torch.Tensor]:
    """Tensors of one golden file under ``prefix``, with the prefix dropped."""
    tensors = load_file(str(GOLDEN / f"golden_{file}.safetensors"))
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def assert_close(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    """Relative error (max abs error / max abs expected) below REL_TOL; says how far off it is."""
    assert actual.shape == expected.shape, f"{what}: shape {list(actual.shape)} != golden {list(expected.shape)}"
    actual, expected = actual.detach().double(), expected.double()
    max_abs = (actual - expected).abs().max().item()
    scale = max(expected.abs().max().item(), 1e-12)
    rel = max_abs / scale
    assert rel < REL_TOL, f"{what}: max abs error {max_abs:.3e}, relative {rel:.3e} (limit {REL_TOL:.0e})"


def assert_equal_ints(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    assert actual.shape == expected.shape, f"{what}: shape {list(actual.shape)} != golden {list(expected.shape)}"
    differ = (actual.long() != expected.long()).sum().item()
    assert differ == 0, f"{what}: {differ} of {expected.numel()} integers differ from golden"


def encode_conditions(encoder: torch.nn.Module, g: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The condition encoder on a golden case's text, lyric and reference inputs."""
    return encoder(
        text_hidden_states=g["text_hidden_states"],
        text_attention_mask=g["text_attention_mask"],
        lyric_hidden_states=g["lyric_hidden_states"],
        lyric_attention_mask=g["lyric_attention_mask"],
        refer_audio_acoustic_hidden_states_packed=g["refer_audio_acoustic_hidden_states_packed"],
        refer_audio_order_mask=g["refer_audio_order_mask"],
    )


def test_golden_checkpoint_is_the_expected_model(ckpt: DitCheckpoint) -> None:
    assert ckpt.name == "acestep-v15-tiny"
    assert ckpt.is_turbo is True
    assert ckpt.config["hidden_size"] == 64 and ckpt.config["num_hidden_layers"] == 2
    assert tuple(ckpt.silence_latent.shape) == (1, 15000, 8)
    raw = torch.load(GOLDEN / "acestep-v15-tiny" / "silence_latent.pt", weights_only=True)
    assert torch.equal(ckpt.silence_latent, raw.transpose(1, 2))
    assert ckpt.silence_latent is ckpt.condition_encoder.silence_latent


@pytest.mark.parametrize("case", ["odd", "turbo_even", "short"])
def test_dit_forward(ckpt: DitCheckpoint, case: str) -> None:
    g = golden("dit", f"dit.{case}.")
    with torch.no_grad():
        out = ckpt.transformer(
            hidden_states=g["hidden_states"],
            timestep=g["timestep"],
            timestep_r=g["timestep_r"],
            encoder_hidden_states=g["encoder_hidden_states"],
            context_latents=g["context_latents"],
        ).sample
    assert_close(out, g["output"], f"DiT {case}")


def test_condition_encoder(ckpt: DitCheckpoint) -> None:
    g = golden("encoder", "encoder.")
    enc = ckpt.condition_encoder
    with torch.no_grad():
        hidden, mask = encode_conditions(enc, g)
        lyric = enc.lyric_encoder(inputs_embeds=g["lyric_hidden_states"], attention_mask=g["lyric_attention_mask"])
        timbre, timbre_mask = enc.timbre_encoder(
            g["refer_audio_acoustic_hidden_states_packed"], g["refer_audio_order_mask"]
        )
        text = enc.text_projector(g["text_hidden_states"])
    assert_close(hidden, g["output.encoder_hidden_states"], "packed encoder_hidden_states")
    assert_equal_ints(mask, g["output.encoder_attention_mask"], "packed encoder_attention_mask")
    assert_close(lyric, g["output.lyric_hidden_states"], "lyric encoder")
    assert_close(timbre, g["output.timbre_embs"], "timbre embeddings")
    assert_equal_ints(timbre_mask, g["output.timbre_mask"], "timbre mask")
    assert_close(text, g["output.text_projected"], "text projector")


def test_tokenizer_pads_with_silence(ckpt: DitCheckpoint) -> None:
    g = golden("tokenizer", "tokenizer.padded.")
    with torch.no_grad():
        quantized, indices = ckpt.audio_tokenizer.tokenize(g["latents"], ckpt.silence_latent)
    assert_equal_ints(indices, g["indices"], "padded tokenizer indices")
    assert_close(quantized, g["quantized"], "padded tokenizer quantized")
    # With an all-ones input mask, every pooled 5-frame group is valid.
    frames = g["latents"].shape[1]
    groups = -(-frames // ckpt.config["pool_window_size"])
    assert torch.equal(g["pooled_mask"], torch.ones(g["latents"].shape[0], groups))


def test_tokenizer_exact_length(ckpt: DitCheckpoint) -> None:
    g = golden("tokenizer", "tokenizer.exact.")
    with torch.no_grad():
        quantized, indices = ckpt.audio_tokenizer.tokenize(g["latents"])
    assert_equal_ints(indices, g["indices"], "exact tokenizer indices")
    assert_close(quantized, g["quantized"], "exact tokenizer quantized")


def test_detokenizer(ckpt: DitCheckpoint) -> None:
    tok = golden("tokenizer", "tokenizer.padded.")
    padded = golden("tokenizer", "detokenizer.padded.")
    free = golden("tokenizer", "detokenizer.free.")
    with torch.no_grad():
        assert_close(ckpt.audio_detokenizer(tok["quantized"]), padded["output"], "detokenizer (padded codes)")
        assert_close(ckpt.audio_detokenizer(free["input"]), free["output"], "detokenizer (free input)")


def test_fsq_output_from_indices(ckpt: DitCheckpoint) -> None:
    g = golden("tokenizer", "fsq.subset.")
    with torch.no_grad():
        out = ckpt.audio_tokenizer.quantizer.get_output_from_indices(g["indices"][None, :, None])[0]
    assert_close(out, g["output"], "FSQ get_output_from_indices (subset)")


def test_fsq_level_indices_of_every_code(ckpt: DitCheckpoint) -> None:
    expected = golden("tokenizer", "fsq.all.")["level_indices"]
    quantizer = ckpt.audio_tokenizer.quantizer
    levels = torch.tensor(ckpt.config["fsq_input_levels"], dtype=torch.float64)
    codes = quantizer.get_codes_from_indices(torch.arange(64000)[None, :, None])[0, 0].double()
    # code value = level * 2 / (L - 1) - 1, so the level comes back exactly by rounding.
    level_indices = torch.round((codes + 1.0) * (levels - 1.0) / 2.0)
    assert_equal_ints(level_indices, expected, "FSQ level indices of all 64000 codes")
    with torch.no_grad():
        out = quantizer.get_output_from_indices(torch.arange(64000)[None, :, None])[0]
        reference = quantizer.project_out(expected.float() * 2.0 / (levels.float() - 1.0) - 1.0)
    assert_close(out, reference, "FSQ output of all 64000 codes")


def turbo_euler(ckpt: DitCheckpoint, noise, timesteps, encoder_hidden_states, context_latents) -> torch.Tensor:
    """The official turbo ODE loop: x <- x - v*(t - t_next); the last step returns x - v*t."""
    x = noise
    batch = noise.shape[0]
    for i, t in enumerate(timesteps.tolist()):
        t_batch = torch.full((batch,), t, dtype=noise.dtype)
        v = ckpt.transformer(
            hidden_states=x,
            timestep=t_batch,
            timestep_r=t_batch,
            encoder_hidden_states=encoder_hidden_states,
            context_latents=context_latents,
        ).sample
        t_next = timesteps[i + 1].item() if i + 1 < len(timesteps) else 0.0
        x = x - v * (t - t_next)
    return x


@pytest.mark.parametrize("case", ["t2m", "cover"])
def test_turbo_generate(ckpt: DitCheckpoint, case: str) -> None:
    g = golden("generate", f"generate.{case}.")
    with torch.no_grad():
        encoder_hidden_states, _ = encode_conditions(ckpt.condition_encoder, g)
        src = g["src_latents"]
        quantized, _ = ckpt.audio_tokenizer.tokenize(src, ckpt.silence_latent)
        hints = ckpt.audio_detokenizer(quantized)[:, : src.shape[1]]
        is_cover = g["is_covers"].bool()[:, None, None]
        context = torch.cat([torch.where(is_cover, hints, src), g["chunk_masks"]], dim=-1)
        assert_close(context, g["context_latents"], f"{case} context_latents")
        target = turbo_euler(ckpt, g["noise"], g["timesteps"], encoder_hidden_states, context)
    assert_close(target, g["target_latents"], f"{case} target_latents")
