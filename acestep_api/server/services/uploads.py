"""Who owns the audio files a request uploaded: the request until it is refused (then they
go), the caller once it is accepted, the job once it is queued (the queue deletes them)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from acestep_api.engine.request import GenerationRequest
from acestep_api.admission.audio_paths import resolve_request_audio
from acestep_api.server.bodies import RequestBody
from acestep_api.settings import Settings


@contextmanager
def discarded_on_failure(body: RequestBody) -> Iterator[RequestBody]:
    """Whatever goes wrong inside (a refusal, a cancelled request), no job owns the uploads."""
    try:
        yield body
    except BaseException:
        body.discard_uploads()
        raise


def resolve_own_audio(generation: GenerationRequest, body: RequestBody, settings: Settings) -> GenerationRequest:
    """The request's audio paths made real; in the upload folder only this request's own
    uploads may be named."""
    own_uploads = {upload.path_field: upload.path for upload in body.uploads}
    generation = resolve_request_audio(generation, settings.upload_dir, settings.input_dirs, own_uploads,
                                       allow_temp=settings.allow_temp_paths, private=settings.private_files)
    if not body.uploads:
        return generation
    # The engine names an uploaded file by its upload field too, should it vanish before the job runs.
    return generation.model_copy(update={"upload_fields": {upload.path_field: upload.field for upload in body.uploads}})
