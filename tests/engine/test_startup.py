"""Engine start-up from Settings: the demo folder is written once, the settings reach the loader."""

from __future__ import annotations

import subprocess
import sys

import pytest

from acestep_api.engine import startup
from acestep_api.engine.engine import MusicEngine
from acestep_api.engine.layout import BASE_FOLDER, DEFAULT_LM_FOLDER, TURBO_FOLDER, is_demo_folder
from acestep_api.engine.placement import OffloadPolicy
from acestep_api.settings import Settings


@pytest.fixture
def loads(monkeypatch):
    """The arguments each build_engine call hands the loader (no models are loaded)."""
    calls = []

    def from_checkpoints(cls, *args, **kwargs):
        calls.append((args, kwargs))
        return "engine"

    monkeypatch.setattr(MusicEngine, "from_checkpoints", classmethod(from_checkpoints))
    return calls


def test_settings_reach_the_loader(loads, tmp_path):
    settings = Settings(_env_file=None, checkpoint_dir=tmp_path, output_dir=tmp_path / "out", config_path2="b",
                        device="cpu", init_llm="false", lm_backend="vllm", lm_max_duration=30,
                        lm_kv_cache="dynamic", lm_compile="on")
    assert startup.build_engine(settings) == "engine"
    (args, kwargs), = loads
    assert args == (tmp_path, [settings.config_path, "b"], tmp_path / "out" / "api_audio", "cpu", settings.batch_max,
                    settings.lm_model_path)
    options = kwargs.pop("options")
    assert kwargs == {"init_llm": "off", "lm_backend": "vllm", "lm_device": "auto", "lm_max_duration": 30,
                      "lora_dir": tmp_path / "loras", "lora_cache_size": 4,
                      "lm_kv_cache": "dynamic", "lm_compile": "on"}
    assert (options.on_demand, options.slot_count, options.download, options.compile_model) == (False, 3, True, False)
    assert options.policy == OffloadPolicy() and options.flash_attention is True


def test_model_and_memory_settings_reach_the_loader(loads, tmp_path):
    settings = Settings(_env_file=None, checkpoint_dir=tmp_path, on_demand_model_load=True, model_slots=2,
                        download_models=False, offload_to_cpu=True, offload_dit_to_cpu=True,
                        lm_offload_to_cpu=False, compile_model=True, use_flash_attention=False)
    startup.build_engine(settings)
    (_, kwargs), = loads
    options = kwargs["options"]
    assert (options.on_demand, options.slot_count, options.download) == (True, 2, False)
    assert options.policy == OffloadPolicy(text_encoder=True, vae=True, dit=True, lm=False)
    assert (options.compile_model, options.flash_attention) == (True, False)


def test_no_init_loads_nothing_at_start_up(loads, tmp_path):
    engine = startup.build_engine(Settings(_env_file=None, checkpoint_dir=tmp_path, no_init=True))
    assert loads == [] and not engine.loaded
    served = engine.served()
    assert not served.initialized and served.default_model == TURBO_FOLDER
    assert engine.model_names == [TURBO_FOLDER]  # what the serverless worker logs at start


def test_demo_settings_point_at_written_demo_checkpoints(tmp_path, monkeypatch):
    written = []
    monkeypatch.setattr("acestep_api.engine.tiny.write_tiny_checkpoints",
                        lambda root: written.append(root) or (root / "DEMO_CHECKPOINTS").write_text(""))
    settings = startup.use_demo_checkpoints(Settings(_env_file=None, config_path3="x", lm_model_path="elsewhere"))
    assert written == [settings.checkpoint_dir] and is_demo_folder(settings.checkpoint_dir)
    assert (settings.demo, settings.dit_config_paths, settings.lm_model_path) == (
        True, [TURBO_FOLDER, BASE_FOLDER], DEFAULT_LM_FOLDER)


def test_demo_checkpoints_are_written_once(loads, tmp_path, monkeypatch):
    pointed = []

    def use_demo(settings):
        pointed.append(settings)
        (tmp_path / "DEMO_CHECKPOINTS").write_text("")
        return settings.model_copy(update={"checkpoint_dir": tmp_path})

    monkeypatch.setattr(startup, "use_demo_checkpoints", use_demo)
    settings = Settings(_env_file=None, demo=True, checkpoint_dir=tmp_path / "none")
    startup.build_engine(settings)  # the RunPod worker: demo on, nothing written yet
    startup.build_engine(use_demo(settings))  # serve: the CLI pointed the settings first
    assert len(pointed) == 2  # one by build_engine, one by the "CLI" above; none for the second build
    assert [args[0] for args, _ in loads] == [tmp_path, tmp_path]


def test_start_up_modules_load_no_torch_until_an_engine_is_built():
    code = ("import sys, acestep_api.engine.startup, acestep_api.settings, acestep_api.cli\n"
            "assert 'torch' not in sys.modules, 'torch'\n"
            "import acestep_api.engine.engine\n"
            "assert 'acestep_api.engine.tiny' not in sys.modules, 'demo writers'\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_no_init_serves_the_lm_guidance_its_backend_will_have(loads, tmp_path):
    vllm = startup.build_engine(Settings(_env_file=None, checkpoint_dir=tmp_path, no_init=True, lm_backend="vllm"))
    pt = startup.build_engine(Settings(_env_file=None, checkpoint_dir=tmp_path, no_init=True, lm_backend="pt"))
    assert (vllm.served().lm_backend, vllm.served().lm_guidance) == ("vllm", False)
    assert (pt.served().lm_backend, pt.served().lm_guidance) == ("transformers", True)
