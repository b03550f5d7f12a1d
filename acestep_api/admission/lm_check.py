"""Whether the served 5 Hz LM can sample a request the way it asks: guidance (``lm_cfg_scale``
other than 1) needs an LM backend that has it (``ServedModels.lm_guidance``; vllm has not).

A request that sets ``lm_cfg_scale`` itself is refused; one that leaves it to the default is
given 1, the only scale such an LM has, so that clients which never set it (the chat, fal and
RunPod dialects, official clients that send no LM settings) are served as before.
"""

from __future__ import annotations

from acestep_api.dialects.coercion import InvalidField
from acestep_api.engine.lm.guidance import uses_lm_guidance
from acestep_api.engine.request import GenerationRequest
from acestep_api.engine.served import ServedModels

NO_GUIDANCE = (
    "lm_cfg_scale must be 1 on this server (got {scale:g}): its 5 Hz LM runs on the {backend} backend, "
    "which has no classifier-free guidance; send lm_cfg_scale 1 (or leave it out)"
)


def fit_lm_guidance(generation: GenerationRequest, served: ServedModels) -> GenerationRequest:
    """The request, with ``lm_cfg_scale`` 1 where the LM has no guidance and the client left it
    unset; an InvalidField where the client asked for guidance that the LM cannot give."""
    if served.lm_guidance or not served.lm_available or not uses_lm_guidance(generation):
        return generation
    if "lm_cfg_scale" in generation.model_fields_set:
        raise InvalidField("lm_cfg_scale", NO_GUIDANCE.format(scale=generation.lm_cfg_scale, backend=served.lm_backend))
    return generation.model_copy(update={"lm_cfg_scale": 1.0})
