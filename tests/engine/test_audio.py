"""Latent checks, tiled decoding, the peak guard, and writing every audio format."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from acestep_api.engine.audio import FILE_EXTENSIONS, FILE_FORMATS, check_latents, decode_latents, peak_guard, write_audio
from acestep_api.engine.loading.vae import load_vae
from acestep_api.engine.request import AUDIO_FORMATS, GenerationError
from tests.audio_files import AAC_FRAME, length_matches, read_audio


def test_check_latents_refuses_nan_inf_and_all_zero():
    good = torch.randn(1, 10, 4)
    check_latents(good)
    for bad_value in (float("nan"), float("inf"), float("-inf")):
        bad = good.clone()
        bad[0, 3, 1] = bad_value
        with pytest.raises(GenerationError, match="NaN or Inf"):
            check_latents(bad)
    with pytest.raises(GenerationError, match="all-zero"):
        check_latents(torch.zeros(2, 10, 4))


def test_peak_guard_scales_only_items_that_clip():
    loud = torch.tensor([[0.5, -2.0], [1.0, 0.25]])
    quiet = torch.tensor([[0.5, -0.8], [0.1, 0.25]])
    guarded = peak_guard(torch.stack([loud, quiet]))
    assert torch.allclose(guarded[0], loud / 2.0)
    assert torch.equal(guarded[1], quiet)


@pytest.fixture(scope="module")
def tiny_vae(tiny_checkpoints):
    return load_vae(tiny_checkpoints / "vae")


def test_tiled_decode_matches_one_shot_decode(tiny_vae):
    latents = torch.randn(2, 40, tiny_vae.config.decoder_input_channels, generator=torch.Generator().manual_seed(0))
    whole = decode_latents(tiny_vae, latents, chunk=64)
    assert whole.shape == (2, 2, 40 * 1920)
    assert whole.dtype == torch.float32
    tiled = decode_latents(tiny_vae, latents, chunk=24, overlap=8)
    assert tiled.shape == whole.shape
    # The tiny VAE sees less than 8 frames around a sample, so overlap-discard is exact here.
    assert torch.allclose(tiled, whole, atol=1e-5)


def test_every_request_format_has_a_writer():
    assert set(FILE_FORMATS) == set(AUDIO_FORMATS)


@pytest.mark.parametrize("fmt", AUDIO_FORMATS)
def test_write_audio_reads_back_as_48k_stereo_of_the_same_length(tmp_path, fmt):
    samples = 48000 + 321
    t = np.arange(samples) / 48000
    wave = np.stack([0.5 * np.sin(2 * np.pi * 440 * t), 0.3 * np.sin(2 * np.pi * 660 * t)]).astype(np.float32)
    path = write_audio(torch.from_numpy(wave), tmp_path / f"tone{FILE_EXTENSIONS[fmt]}", fmt)
    data, rate = read_audio(path)
    assert rate == 48000
    # AAC within its priming and last-frame padding (tests/audio_files.py); the rest exactly.
    assert data.shape[1] == 2 and length_matches(path, len(data), samples)
    if fmt == "aac":
        # FFmpeg's AAC encoder rings on pure tones (peaks up to 0.2 off here), so each channel
        # is checked by its likeness to its own tone, past the 1024 samples of priming.
        aligned = data[AAC_FRAME : AAC_FRAME + samples].T
        for channel in range(2):
            assert np.corrcoef(aligned[channel], wave[channel])[0, 1] > 0.95
    else:
        # Lossy codecs shift phase slightly; the channels must still carry their own tone and level.
        assert abs(np.abs(data[:, 0]).max() - 0.5) < 0.1
        assert abs(np.abs(data[:, 1]).max() - 0.3) < 0.1
    if fmt in ("wav", "flac"):
        assert np.allclose(data.T, wave, atol=1 / 2**15 + 1e-6)
    if fmt == "wav32":
        assert np.array_equal(data.T, wave)  # 32-bit float holds the samples as they are


def test_wav32_is_32_bit_float_wav_and_aac_is_an_adts_stream(tmp_path):
    wave = np.zeros((2, 4800), dtype=np.float32)
    wav32 = write_audio(wave, tmp_path / "a.wav", "wav32")
    wav16 = write_audio(wave, tmp_path / "b.wav", "wav")
    assert (sf.info(str(wav32)).format, sf.info(str(wav32)).subtype) == ("WAV", "FLOAT")
    assert sf.info(str(wav16)).subtype == "PCM_16"
    aac = write_audio(wave, tmp_path / "c.aac", "aac")
    head = aac.read_bytes()[:2]
    assert head[0] == 0xFF and head[1] & 0xF0 == 0xF0  # the ADTS sync word of the first frame
    assert (FILE_EXTENSIONS["wav32"], FILE_EXTENSIONS["aac"]) == (".wav", ".aac")


def test_write_audio_refuses_an_unknown_format(tmp_path):
    with pytest.raises(GenerationError, match="wma"):
        write_audio(torch.zeros(2, 100), tmp_path / "x.wma", "wma")
