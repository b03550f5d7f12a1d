"""A chat request's `input_audio` parts as files in the upload folder (ACESTEP_UPLOAD_DIR),
decoded by the chat dialect and checked before the job is queued. The job owns the files
from submission on: the queue deletes them when it ends."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from acestep_api.dialects.chat import AudioAttachment, decode_attachment
from acestep_api.dialects.coercion import InvalidField
from acestep_api.engine.request import DURATION_MAX
from acestep_api.jobs.retention import remove_files
from acestep_api.settings import Settings

FILE_PREFIX = "chat_audio_"


def save_audio(targets: list[tuple[str, AudioAttachment]], settings: Settings) -> dict[str, str]:
    """Decode, write and check each used part; request field -> file path. Blocking (call it
    in a worker thread). On any failure no file is left behind."""
    # Imported here: decoding pulls in the numeric audio stack, needed only when audio comes.
    from acestep_api.engine.audio_input import AudioInputError, check_audio

    upload_dir = Path(settings.upload_dir).absolute()  # jobs record absolute paths
    paths: dict[str, str] = {}
    try:
        for path_field, attachment in targets:
            raw, suffix = decode_attachment(attachment, settings.max_upload_bytes, settings.max_upload_mb)
            upload_dir.mkdir(parents=True, exist_ok=True)
            handle, path = tempfile.mkstemp(prefix=FILE_PREFIX, suffix=suffix, dir=upload_dir)
            paths[path_field] = path
            with os.fdopen(handle, "wb") as file:
                file.write(raw)
            try:
                # Labelled, never by the file's server-chosen name.
                check_audio(path, max_seconds=DURATION_MAX, label="audio file",
                            max_decoded_mb=settings.max_decoded_audio_mb)
            except AudioInputError as error:
                name = f"{attachment.field}.data"
                raise InvalidField(name, f"{name}: {error}") from None
    except BaseException:
        remove_files(paths.values())
        raise
    return paths
