"""Which requests the 5 Hz LM samples with classifier-free guidance (``lm_cfg_scale``): the
planner's phase 1 (metadata) and phase 2 (audio codes) run a conditional and an unconditional
prompt; sample mode, format and analysis of audio codes do not.

Plain rules on the request, without torch: the admission checks use them to refuse guidance
that the served LM cannot give (engine/served.py, ``ServedModels.lm_guidance``), and the
planner follows the same rules when it runs.
"""

from __future__ import annotations

from acestep_api.engine.request import GenerationRequest

LM_SKIPPED_TASKS = ("cover", "cover-nofsq", "repaint")  # they follow their source audio, not a plan


def writes_codes(request: GenerationRequest) -> bool:
    """Phase 2 runs: ``thinking`` without audio codes of its own (analysis never thinks)."""
    return request.thinking and not request.analysis_only and not request.audio_code_string.strip()


def may_write_metadata(request: GenerationRequest) -> bool:
    """Phase 1 may run: some metadata is missing and no sample (which writes it) runs first. (A
    format step that writes a duration skips it too; that is known only once it ran.)"""
    given = (request.bpm is not None, bool(request.key_scale.strip()), bool(request.time_signature),
             request.audio_duration is not None)
    samples = request.sample_mode or bool(request.sample_query.strip())
    return not samples and not all(given)


def uses_lm_guidance(request: GenerationRequest) -> bool:
    """True when the planner may sample this request with guidance (``lm_cfg_scale`` other than 1)."""
    if request.lm_cfg_scale == 1.0 or request.skip_lm or request.task_type in LM_SKIPPED_TASKS:
        return False
    if request.extract_codes_only or request.full_analysis_only:  # they describe codes, unguided
        return False
    return writes_codes(request) or may_write_metadata(request)
