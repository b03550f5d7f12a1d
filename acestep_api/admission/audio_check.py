"""Input audio checked once before a job is queued, so empty, undecodable, non-finite or
out-of-bounds audio (a decompression bomb, a header's absurd sample rate) is refused now rather
than failing the job later. Silent audio passes: it means no source (text2music, silence frames
for the other tasks) or no reference, as in the official handler."""

from __future__ import annotations

from collections.abc import Mapping

from acestep_api.admission.audio_paths import AUDIO_PATH_FIELDS
from acestep_api.dialects.coercion import InvalidField
from acestep_api.engine.request import DURATION_MAX, GenerationRequest


def check_audio_files(generation: GenerationRequest, max_decoded_mb: float,
                      upload_fields: Mapping[str, str] | None = None) -> None:
    """Each audio input of the request, checked. `upload_fields` maps a path field to the
    upload field that filled it: an upload is named by that field, never by its server-chosen
    file name. Blocking: call it off the event loop."""
    # Imported here: decoding pulls in the numeric audio stack, needed only when audio comes.
    from acestep_api.engine.audio_input import AudioInputError, check_audio

    upload_fields = upload_fields or {}
    for path_field in AUDIO_PATH_FIELDS:
        path = getattr(generation, path_field)
        if not path:
            continue
        field = upload_fields.get(path_field, path_field)
        label = "audio file" if path_field in upload_fields else None  # None: the client's own file name
        try:
            check_audio(path, max_seconds=DURATION_MAX, label=label, max_decoded_mb=max_decoded_mb)
        except AudioInputError as error:
            raise InvalidField(field, f"{field}: {error}") from None
