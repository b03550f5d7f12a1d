"""Audio files in an S3-compatible bucket (ACESTEP_OUTPUT_URL=s3://bucket/prefix).

Objects are named `<prefix>/audio/<path in the audio folder>` and `<prefix>/uploads/<path in
the upload folder>`. Credentials, region and endpoint come the usual AWS ways (environment,
~/.aws, an instance role); ACESTEP_S3_ENDPOINT_URL names a MinIO, R2 or other endpoint.
"""

from __future__ import annotations

import logging
import os
import urllib.parse
from collections.abc import Iterable

import boto3
from botocore.config import Config
from boto3.exceptions import S3UploadFailedError
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError
from starlette.responses import RedirectResponse, Response, StreamingResponse

from acestep_api.atomic_files import atomic_path
from acestep_api.audio_formats import mime_type
from acestep_api.settings import Settings
from acestep_api.storage.local import real_path_inside, remove_local
from acestep_api.storage.output_store import OutputStoreError, inside

log = logging.getLogger(__name__)

STREAM_CHUNK = 256 * 1024
DELETE_BATCH = 1000  # the most keys one DeleteObjects call takes
MISSING_CODES = {"404", "NoSuchKey", "NotFound"}


def parse_output_url(url: str) -> tuple[str, str]:
    """(bucket, prefix) of `s3://bucket/prefix`; ValueError naming what is wrong."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise ValueError(f"ACESTEP_OUTPUT_URL must look like s3://bucket/prefix, not {url!r}")
    return parts.netloc, parts.path.strip("/")


def _failure(action: str, error: Exception) -> OutputStoreError:
    # The code (AccessDenied, NoSuchBucket, ...) says enough; botocore's full text can carry URLs.
    cause = error.__cause__ or error.__context__
    if not isinstance(error, ClientError) and isinstance(cause, ClientError):
        error = cause  # boto3's transfer manager wraps the service's answer
    if isinstance(error, ClientError):
        code = error.response.get("Error", {}).get("Code", "error")
    elif isinstance(error, EndpointConnectionError):
        code = "unreachable"
    else:
        code = "error"
    return OutputStoreError(f"the output bucket could not {action} ({code})")


def _missing(error: ClientError) -> bool:
    return str(error.response.get("Error", {}).get("Code")) in MISSING_CODES


class S3Outputs:
    def __init__(self, client, bucket: str, prefix: str, audio_dir: os.PathLike | str,
                 upload_dir: os.PathLike | str, redirect: bool = False, presign_seconds: int = 300):
        self.client = client
        self.bucket = bucket
        self.prefix = prefix
        self.audio_dir = str(audio_dir)
        self.upload_dir = str(upload_dir)
        self.redirect = redirect
        self.presign_seconds = presign_seconds

    @classmethod
    def from_settings(cls, settings: Settings) -> "S3Outputs":
        bucket, prefix = parse_output_url(settings.output_url or "")
        config = Config(s3={"addressing_style": settings.s3_addressing_style},
                        retries={"max_attempts": 3, "mode": "standard"},
                        connect_timeout=5, read_timeout=60)
        client = boto3.client("s3", endpoint_url=settings.s3_endpoint_url or None, config=config)
        return cls(client, bucket, prefix, settings.audio_dir, settings.upload_dir,
                   redirect=settings.output_redirect, presign_seconds=settings.output_presign_seconds)

    # --- names ---------------------------------------------------------------------

    def _key(self, kind: str, relative: str) -> str:
        name = f"{kind}/{relative.replace(os.sep, '/')}"
        return f"{self.prefix}/{name}" if self.prefix else name

    def _audio_key(self, path: str) -> str | None:
        relative = inside(path, self.audio_dir)
        return self._key("audio", relative) if relative is not None else None

    def _upload_key(self, path: str) -> str | None:
        relative = inside(path, self.upload_dir)
        return self._key("uploads", relative) if relative is not None else None

    # --- writing -------------------------------------------------------------------

    def _put(self, path: str, key: str) -> None:
        try:
            self.client.upload_file(path, self.bucket, key,
                                    ExtraArgs={"ContentType": mime_type(path, "application/octet-stream")})
        except (BotoCoreError, ClientError, S3UploadFailedError) as error:
            raise _failure("store a file", error) from None

    def publish(self, paths: Iterable[str]) -> None:
        """Upload each file, then drop the local copy: the bucket is the record from now on."""
        paths = [path for path in paths if path]
        for path in paths:
            key = self._audio_key(path)
            if key is None:
                raise OutputStoreError("an audio file lies outside the audio folder")
            self._put(path, key)
        remove_local(paths)

    def publish_upload(self, path: str) -> None:
        key = self._upload_key(path)
        if key is None:
            return  # a file a request named in an input folder: it is not ours to copy
        self._put(path, key)

    # --- reading -------------------------------------------------------------------

    @staticmethod
    def _read(call, *args, **kwargs):
        """`call`'s answer; None when the object does not exist; any other failure is an
        OutputStoreError naming only the service's code."""
        try:
            return call(*args, **kwargs)
        except ClientError as error:
            if _missing(error):
                return None
            raise _failure("read a file", error) from None
        except BotoCoreError as error:
            raise _failure("read a file", error) from None

    def _download(self, key: str, target: str) -> bool:
        """Download `key` to `target` whole or not at all; False when there is no such object."""
        os.makedirs(os.path.dirname(target), exist_ok=True)

        def download() -> bool:
            with atomic_path(target) as temp:
                self.client.download_file(self.bucket, key, str(temp))
            return True

        return self._read(download) is not None

    def fetch(self, path: str) -> str | None:
        key = self._audio_key(path)
        if key is None:
            raise PermissionError(path)
        local = os.path.normpath(os.path.abspath(path))
        if os.path.isfile(local):
            return real_path_inside(local, self.audio_dir)
        return local if self._download(key, local) else None

    def fetch_upload(self, path: str) -> None:
        """Bring an upload the job needs onto this machine when another machine received it."""
        key = self._upload_key(path)
        if key is not None and not os.path.isfile(path):
            self._download(key, os.path.normpath(os.path.abspath(path)))

    def _head(self, key: str) -> dict | None:
        return self._read(self.client.head_object, Bucket=self.bucket, Key=key)

    def size(self, path: str) -> int | None:
        key = self._audio_key(path)
        if key is None:
            raise PermissionError(path)
        head = self._head(key)
        return int(head["ContentLength"]) if head is not None else None

    def response(self, path: str, media_type: str) -> Response | None:
        key = self._audio_key(path)
        if key is None:
            raise PermissionError(path)
        if self.redirect:
            if self._head(key) is None:
                return None
            url = self.client.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": key, "ResponseContentType": media_type},
                ExpiresIn=self.presign_seconds)
            return RedirectResponse(url, status_code=307)
        obj = self._read(self.client.get_object, Bucket=self.bucket, Key=key)
        if obj is None:
            return None
        body = obj["Body"]
        return StreamingResponse(body.iter_chunks(STREAM_CHUNK), media_type=media_type,
                                 headers={"Content-Length": str(obj["ContentLength"])},
                                 background=None)

    # --- removing ------------------------------------------------------------------

    def _delete(self, keys: list[str]) -> None:
        for start in range(0, len(keys), DELETE_BATCH):
            batch = keys[start:start + DELETE_BATCH]
            try:
                self.client.delete_objects(Bucket=self.bucket,
                                           Delete={"Objects": [{"Key": key} for key in batch], "Quiet": True})
            except (BotoCoreError, ClientError) as error:
                log.warning("Could not delete %d objects from the output bucket: %s", len(batch), error)

    def remove(self, paths: Iterable[str]) -> None:
        paths = [path for path in paths if path]
        remove_local(paths)
        self._delete([key for key in map(self._audio_key, paths) if key is not None])

    def remove_uploads(self, paths: Iterable[str]) -> None:
        self._delete([key for key in map(self._upload_key, paths) if key is not None])
