"""The serverless worker checks input audio as the HTTP routes do: the same bounds, and no
file of the upload folder (it has no uploads, so none is its own)."""

from __future__ import annotations

import numpy as np
import soundfile as sf

from acestep_api.admission.audio_paths import NOT_OWN_UPLOAD
from acestep_api.settings import ServerlessSettings
from acestep_api.serverless.worker import ServerlessWorker
from acestep_api.settings import Settings
from tests.input_audio_files import float_wav, write_bomb


def test_the_worker_refuses_out_of_bounds_audio_and_upload_folder_files(tiny_engine, tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    write_bomb(inputs / "wide.flac", seconds=20)  # 29 MiB as float32
    float_wav(inputs / "nan.wav", float("nan"))
    settings = Settings(_env_file=None, output_dir=tmp_path / "outputs", input_dir=inputs, max_decoded_audio_mb=16)
    settings.upload_dir.mkdir(parents=True)
    stray = settings.upload_dir / "ctx_audio_someone_elses.wav"
    sf.write(stray, np.full((4800, 2), 0.1, dtype=np.float32), 48000)
    worker = ServerlessWorker(settings, ServerlessSettings(_env_file=None), load=lambda _: tiny_engine)

    def error(path: str) -> str:
        return worker.run({"caption": "x", "task_type": "cover", "src_audio_path": path}, lambda m: None)["error"]

    assert error("wide.flac").startswith("src_audio_path: audio file 'wide.flac' is too large to decode")
    assert "the limit is 16 MB (ACESTEP_MAX_DECODED_AUDIO_MB)" in error("wide.flac")
    assert error("nan.wav") == "src_audio_path: audio file 'nan.wav' contains NaN or infinite samples"
    assert error(str(stray)) == f"src_audio_path: {NOT_OWN_UPLOAD}"
