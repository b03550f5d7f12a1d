"""Which requests the LM samples with guidance (engine/lm/guidance.py), and the vllm backend's
own refusal of guidance that reaches it anyway."""

from __future__ import annotations

import pytest

from acestep_api.engine.lm.guidance import uses_lm_guidance
from acestep_api.engine.lm.types import SamplingParams
from acestep_api.engine.request import GenerationError, GenerationRequest

METADATA = {"bpm": 100, "key_scale": "C major", "time_signature": "4", "audio_duration": 30.0}


@pytest.mark.parametrize(("fields", "guided"), [
    ({}, True),  # phase 1 writes the missing metadata
    (METADATA, False),  # nothing for the LM to write
    ({**METADATA, "thinking": True}, True),  # phase 2 writes the codes
    ({**METADATA, "thinking": True, "audio_code_string": "<|audio_code_1|>"}, False),  # codes given
    ({"sample_mode": True}, False),  # the sample writes the metadata, unguided
    ({"sample_mode": True, "thinking": True}, True),
    ({"task_type": "cover", "thinking": True}, False),  # the LM does not plan a cover
    ({"thinking": True, "lm_cfg_scale": 1.0}, False),
    ({"thinking": True, "skip_lm": True}, False),  # a replay
    ({"extract_codes_only": True}, False),
])
def test_which_requests_use_guidance(fields, guided):
    assert uses_lm_guidance(GenerationRequest(prompt="x", **fields)) is guided


def test_the_vllm_backend_refuses_guidance_that_reaches_it(tiny_checkpoints):
    from acestep_api.engine.layout import DEFAULT_LM_FOLDER
    from acestep_api.engine.lm.backend_vllm import VllmBackend
    from acestep_api.engine.lm.tokenizer import load_lm_tokenizer

    tokenizer = load_lm_tokenizer(tiny_checkpoints / DEFAULT_LM_FOLDER)
    backend = VllmBackend(engine=None, tokenizer=tokenizer, model_name="lm", vocab_size=len(tokenizer))
    assert backend.supports_cfg is False
    with pytest.raises(GenerationError, match="no classifier-free guidance; lm_cfg_scale must be 1 \\(got 2.5\\)"):
        backend.generate(["a"], uncond_prompts=["b"], params=SamplingParams(cfg_scale=2.5), max_new_tokens=5,
                         stop_token_ids=set())
