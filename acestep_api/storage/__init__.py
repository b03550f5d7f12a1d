"""Where generated audio lives once a job has written it: the output store.

Every process that serves or writes audio (the embedded server, API replicas, workers) holds
one `OutputStore`, chosen by `ACESTEP_OUTPUT_URL`:

- unset: `LocalOutputs`, the audio folder on this machine's disk. A folder shared between
  machines (NFS, a RunPod network volume, a Docker volume mounted at the same path everywhere)
  needs nothing more: every process sees every file at the path the results name.
- `s3://bucket/prefix`: `S3Outputs`, an S3-compatible bucket (AWS, MinIO, R2, ...). Workers
  upload a job's files before it succeeds and drop their local copies; replicas stream the
  object (or redirect to a presigned URL) and fetch a local copy where a route needs the bytes.

Results keep naming files by their path in the audio folder (the official `/v1/audio?path=`
shape); the store maps such a path to its object.
"""

from __future__ import annotations

from acestep_api.storage.local import LocalOutputs
from acestep_api.storage.output_store import OutputStore, OutputStoreError
from acestep_api.settings import Settings


def build_output_store(settings: Settings) -> OutputStore:
    """The store `settings` name: the local audio folder, or the bucket of ACESTEP_OUTPUT_URL."""
    url = settings.output_url
    if not url:
        return LocalOutputs(settings.audio_dir, settings.upload_dir)
    # Imported only when used: boto3 is a large import that most servers never need.
    from acestep_api.storage.s3 import S3Outputs

    return S3Outputs.from_settings(settings)


__all__ = ["LocalOutputs", "OutputStore", "OutputStoreError", "build_output_store"]
