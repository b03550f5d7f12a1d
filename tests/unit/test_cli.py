from pathlib import Path

from acestep_api.cli import build_parser, primary_checkpoint_exists, settings_from_args
from acestep_api.engine.tiny import write_tiny_checkpoints


def parse(*argv: str):
    return settings_from_args(build_parser().parse_args(["serve", *argv]))


def test_flags_override_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("ACESTEP_API_PORT", "9000")
    monkeypatch.setenv("ACESTEP_API_KEY", "from-env")
    settings = parse("--port", "8000", "--api-key", "from-flag", "--output-dir", str(tmp_path))
    assert (settings.api_port, settings.api_key, settings.output_dir) == (8000, "from-flag", tmp_path)


def test_demo_comes_from_the_flag_or_the_environment(monkeypatch):
    monkeypatch.delenv("ACESTEP_DEMO", raising=False)
    assert parse().demo is False
    assert parse("--demo").demo is True
    monkeypatch.setenv("ACESTEP_DEMO", "1")
    assert parse().demo is True  # an absent flag leaves the environment's value


def test_primary_checkpoint_detection(tmp_path):
    settings = parse("--checkpoint-dir", str(tmp_path))
    assert not primary_checkpoint_exists(settings)
    write_tiny_checkpoints(tmp_path)
    assert primary_checkpoint_exists(settings)
    assert not primary_checkpoint_exists(parse("--checkpoint-dir", str(Path(tmp_path) / "nope")))


def test_primary_checkpoint_detection_agrees_with_the_loader(tmp_path):
    # A config.json without weights is not a checkpoint the loader can serve...
    (tmp_path / "acestep-v15-turbo").mkdir()
    (tmp_path / "acestep-v15-turbo" / "config.json").write_text("{}")
    assert not primary_checkpoint_exists(parse("--checkpoint-dir", str(tmp_path)))
    # ...while a diffusers-layout folder is one, so the demo must not replace it.
    diffusers_layout = tmp_path / "diffusers-dit"
    (diffusers_layout / "transformer").mkdir(parents=True)
    (diffusers_layout / "transformer" / "config.json").write_text("{}")
    settings = parse("--checkpoint-dir", str(tmp_path)).model_copy(update={"config_path": "diffusers-dit"})
    assert primary_checkpoint_exists(settings)
