"""The official memory settings on the engine: where each model sits at each stage with
ACESTEP_OFFLOAD_TO_CPU / _OFFLOAD_DIT_TO_CPU / _LM_OFFLOAD_TO_CPU, and the same audio with each
setting on as off (offloading, flash attention, compiling the DiT).

On a CPU-only machine the execution device is the CPU, so a move changes no tensor's device:
the recording hooks read where the placement keeps each unit, and where its parameters really
are (the two must agree, which on a GPU tells the devices apart).
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from acestep_api.engine.engine import MusicEngine
from acestep_api.engine.loading.dit import load_dit_checkpoint
from acestep_api.engine.model_slots import LM_UNIT, ModelOptions, ModelSlots, dit_unit
from acestep_api.engine.placement import TEXT_ENCODER, VAE, OffloadPolicy, Placement
from acestep_api.engine.request import GenerationRequest

TURBO = "acestep-v15-turbo"
REQUEST = GenerationRequest(prompt="placement", audio_duration=10, batch_size=1, inference_steps=2,
                            use_random_seed=False, seeds=[11], task_type="text2music")


def engine_with(tiny_engine, tmp_path, dit=None, **options) -> MusicEngine:
    return MusicEngine(tiny_engine.tokenizer, tiny_engine.text_encoder, tiny_engine.vae,
                       [dit or tiny_engine.dits[TURBO]], output_dir=tmp_path, device=tiny_engine.device,
                       dtype=tiny_engine.dtype, options=ModelOptions(**options))


def waves(engine: MusicEngine) -> np.ndarray:
    return np.stack(engine.render(REQUEST).plan.waves)


def record_stages(engine: MusicEngine) -> tuple[list[tuple[str, dict[str, bool]]], list]:
    """Forward pre-hooks on the module each stage runs: which units sit on the device then."""
    placement, dit = engine.placement, engine.dits[TURBO]
    units = (TEXT_ENCODER, VAE, dit_unit(TURBO))
    modules = {"text encoder": engine.text_encoder, "condition encoder": dit.condition_encoder,
               "transformer": dit.transformer, "vae decoder": engine.vae.decoder}
    seen: list[tuple[str, dict[str, bool]]] = []

    def hook(stage: str, module: torch.nn.Module):
        def record(*_):
            parameter = next(module.parameters())
            assert parameter.device == placement.device  # the module runs where the placement put it
            state = {unit: placement.on_device(unit) for unit in units}
            if not seen or seen[-1] != (stage, state):
                seen.append((stage, state))
        return record

    handles = [module.register_forward_pre_hook(hook(stage, module)) for stage, module in modules.items()]
    return seen, handles


def test_the_policy_follows_the_official_flags():
    assert OffloadPolicy.from_flags(False, True, None) == OffloadPolicy()  # the DiT flag needs offload_to_cpu
    assert OffloadPolicy.from_flags(True, False, None) == OffloadPolicy(text_encoder=True, vae=True, lm=True)
    assert OffloadPolicy.from_flags(True, True, False) == OffloadPolicy(text_encoder=True, vae=True, dit=True)
    assert OffloadPolicy.from_flags(False, False, True) == OffloadPolicy(lm=True)


@pytest.mark.parametrize("dit_too", [False, True])
def test_offloaded_models_are_on_the_device_only_for_their_stage(tiny_engine, tmp_path, dit_too):
    engine = engine_with(tiny_engine, tmp_path, policy=OffloadPolicy.from_flags(True, dit_too, None))
    turbo = dit_unit(TURBO)
    assert not engine.placement.on_device(TEXT_ENCODER) and not engine.placement.on_device(VAE)
    assert engine.placement.on_device(turbo) is not dit_too
    seen, handles = record_stages(engine)
    try:
        engine.render(REQUEST)
    finally:
        for handle in handles:
            handle.remove()
    assert seen == [
        # Text and conditions: the text encoder and the DiT; the VAE waits on the CPU.
        ("text encoder", {TEXT_ENCODER: True, VAE: False, turbo: True}),
        ("condition encoder", {TEXT_ENCODER: True, VAE: False, turbo: True}),
        # Denoising: the DiT alone (the text encoder went back to the CPU).
        ("transformer", {TEXT_ENCODER: False, VAE: False, turbo: True}),
        # Decoding: the VAE; an offloaded DiT went back.
        ("vae decoder", {TEXT_ENCODER: False, VAE: True, turbo: not dit_too}),
    ]


def test_offloading_leaves_the_audio_unchanged(tiny_engine, tmp_path):
    plain = waves(engine_with(tiny_engine, tmp_path))
    offloaded = waves(engine_with(tiny_engine, tmp_path, policy=OffloadPolicy.from_flags(True, True, True)))
    np.testing.assert_array_equal(plain, offloaded)


def test_the_lm_waits_on_the_cpu_until_its_stage(tiny_lm_planner):
    placement = Placement(torch.device("cpu"), OffloadPolicy(lm=True))
    placement.register(LM_UNIT, "lm", [tiny_lm_planner.backend.model])
    placement.register(VAE, VAE, [torch.nn.Linear(2, 2)])
    assert not placement.on_device(LM_UNIT)
    with placement.use(LM_UNIT):
        assert placement.on_device(LM_UNIT)
        assert next(tiny_lm_planner.backend.model.parameters()).device == placement.where(LM_UNIT)
    with placement.use(VAE):
        assert not placement.on_device(LM_UNIT)


def test_a_placement_moves_a_module_to_the_device_for_its_stage():
    """The move to the device, with a second device that exists on any machine: the execution
    device is "meta" here (tensors without data, so nothing can come back from it), and the
    module really changes device for its stage, and only then."""
    module, other = torch.nn.Linear(3, 3), torch.nn.Linear(3, 3)
    placement = Placement(torch.device("meta"), OffloadPolicy(vae=True, text_encoder=True))
    placement.register(VAE, VAE, [module])
    placement.register(TEXT_ENCODER, TEXT_ENCODER, [other])
    assert module.weight.device.type == "cpu" and other.weight.device.type == "cpu"
    with placement.use(VAE):
        assert module.weight.device.type == "meta" and other.weight.device.type == "cpu"


def test_flash_attention_falls_back_with_a_log_line_where_unavailable(tiny_engine, tmp_path, caplog):
    pytest.importorskip("diffusers")
    try:
        import flash_attn  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("flash-attn is installed: the backend is available here")
    caplog.set_level(logging.INFO, logger="acestep_api.engine.model_slots")
    plain = waves(engine_with(tiny_engine, tmp_path))
    flash = engine_with(tiny_engine, tmp_path, flash_attention=True)
    assert f"Flash attention unavailable for {TURBO}" in caplog.text
    np.testing.assert_array_equal(plain, waves(flash))


def test_compile_model_compiles_the_dit_in_place(tiny_checkpoints):
    dit = load_dit_checkpoint(tiny_checkpoints / TURBO)
    ModelSlots([dit], None, "", None, torch.device("cpu"), torch.float32, ModelOptions(compile_model=True))
    assert dit.transformer._compiled_call_impl is not None  # nn.Module.compile: the same module, compiled
    assert dit.transformer.config.audio_acoustic_hidden_dim  # its config and attributes are still there


@pytest.mark.slow  # torch.compile builds kernels with the C compiler on the first call
def test_compile_model_leaves_the_audio_unchanged(tiny_engine, tiny_checkpoints, tmp_path):
    plain = waves(engine_with(tiny_engine, tmp_path, dit=load_dit_checkpoint(tiny_checkpoints / TURBO)))
    compiled = waves(engine_with(tiny_engine, tmp_path, dit=load_dit_checkpoint(tiny_checkpoints / TURBO),
                                 compile_model=True))
    np.testing.assert_allclose(plain, compiled, atol=1e-4)
