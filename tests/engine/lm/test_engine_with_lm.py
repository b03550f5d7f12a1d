"""The engine with the LM: the codes the LM writes are what the DiT follows."""

from __future__ import annotations

import copy

import numpy as np
import soundfile

from acestep_api.dialects import official
from acestep_api.engine.request import GenerationRequest


def recording_engine(engine, output_dir):
    engine = copy.copy(engine)
    engine.output_dir = output_dir
    planner = copy.copy(engine.planner)
    plans = []
    original = planner.plan

    def plan(request, seeds, progress=None):
        plans.append(original(request, seeds, progress))
        return plans[-1]

    planner.plan = plan
    engine.planner = planner
    return engine, plans


def test_thinking_codes_drive_the_dit(tiny_lm_engine, tiny_engine, tmp_path):
    engine, plans = recording_engine(tiny_lm_engine, tmp_path / "lm")
    request = GenerationRequest(prompt="house", thinking=True, audio_duration=10, batch_size=1,
                                use_random_seed=False, seeds=[7], audio_format="wav")
    result = engine.generate(request)
    planned = plans[0].request
    assert planned.lm_audio_codes and "LM Time Costs" in official.generation_info(result)

    dit_only = copy.copy(tiny_engine)
    dit_only.output_dir = tmp_path / "dit"

    def replay(codes: str):
        replayed = planned.model_copy(update={"thinking": False, "lm_audio_codes": None, "audio_code_string": codes})
        return soundfile.read(dit_only.generate(replayed).audio_paths[0])[0]

    produced = soundfile.read(result.audio_paths[0])[0]
    assert np.array_equal(produced, replay(planned.lm_audio_codes[0]))
    other = "".join(f"<|audio_code_{(i * 7919) % 64000}|>" for i in range(50))
    assert not np.array_equal(produced, replay(other))
