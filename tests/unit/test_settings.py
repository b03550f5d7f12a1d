from pathlib import Path

from acestep_api.settings import Settings


def test_output_dir_from_acestep_output_dir(monkeypatch):
    monkeypatch.setenv("ACESTEP_OUTPUT_DIR", "/srv/music")
    settings = Settings(_env_file=None)
    assert settings.output_dir == Path("/srv/music")
    assert settings.audio_dir == Path("/srv/music/api_audio")
    assert settings.database_path == Path("/srv/music/jobs.sqlite3")


def test_official_tmpdir_name_is_honoured_and_output_dir_wins(monkeypatch):
    monkeypatch.setenv("ACESTEP_TMPDIR", "/app/outputs")
    assert Settings(_env_file=None).output_dir == Path("/app/outputs")
    monkeypatch.setenv("ACESTEP_OUTPUT_DIR", "/srv/music")
    assert Settings(_env_file=None).output_dir == Path("/srv/music")


def test_keyword_overrides_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("ACESTEP_OUTPUT_DIR", "/srv/music")
    monkeypatch.setenv("ACESTEP_API_PORT", "8000")
    settings = Settings(_env_file=None, output_dir=tmp_path)
    assert settings.output_dir == tmp_path and settings.api_port == 8000


def test_dit_slots_keep_order_and_drop_empty(monkeypatch):
    monkeypatch.setenv("ACESTEP_CONFIG_PATH2", "acestep-v15-base")
    assert Settings(_env_file=None).dit_config_paths == ["acestep-v15-turbo", "acestep-v15-base"]


def test_the_adapters_folder_defaults_to_loras_in_the_checkpoints(monkeypatch):
    monkeypatch.setenv("ACESTEP_CHECKPOINT_DIR", "/srv/checkpoints")
    monkeypatch.setenv("ACESTEP_LORA_DIR", "")  # blank: the default, never the working folder
    assert str(Settings(_env_file=None).adapters_dir) == "/srv/checkpoints/loras"
    monkeypatch.setenv("ACESTEP_LORA_DIR", "/srv/adapters")
    monkeypatch.setenv("ACESTEP_LORA_CACHE_SIZE", "2")
    settings = Settings(_env_file=None)
    assert (str(settings.adapters_dir), settings.lora_cache_size) == ("/srv/adapters", 2)
