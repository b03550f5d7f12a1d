"""The keys this server accepts: the single ACESTEP_API_KEY (named "default") and those of
ACESTEP_API_KEYS_FILE, and which of them a presented credential is.

A presented key is hashed once and its digest compared, in constant time, with the digest of
every key held, all of them whatever matched: neither the answer's timing nor the file's
order tells anyone how close a guess was. The file is read again when its modification time,
size or inode change (one `stat` per look-up); a file that no longer reads keeps the last good
set, and says why in the log once per change.
"""

from __future__ import annotations

import logging
import os
import threading
from hmac import compare_digest
from pathlib import Path

from acestep_api.server.key_file import SINGLE_KEY_NAME, KeyFileError, KeySpec, digest_of, load_key_file
from acestep_api.settings import Settings

log = logging.getLogger(__name__)

_Signature = tuple[int, int, int] | None  # (mtime_ns, size, inode) of the file; None: unreadable


def _signature(path: Path) -> _Signature:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_mtime_ns, info.st_size, info.st_ino


class KeyRing:
    def __init__(self, settings: Settings):
        """Reads the keys file now: a KeyFileError stops the server from starting."""
        self.path = settings.api_keys_file
        self.enabled = settings.auth_enabled
        self._single: list[tuple[bytes, KeySpec]] = []
        if settings.api_key is not None:
            digest = digest_of(settings.api_key)  # an empty key is a key too
            self._single = [(digest, KeySpec(name=SINGLE_KEY_NAME, key_sha256=digest.hex()))]
        self._reserved = frozenset({SINGLE_KEY_NAME})
        self._lock = threading.Lock()
        self._file_keys: list[tuple[bytes, KeySpec]] = []
        self._seen: _Signature = None
        if self.path is not None:
            self._seen = _signature(self.path)
            self._file_keys = self._read()
            log.info("Read %d API keys from %s", len(self._file_keys), self.path)

    def _read(self) -> list[tuple[bytes, KeySpec]]:
        return [(spec.digest, spec) for spec in load_key_file(self.path, reserved=self._reserved)]

    def refresh(self) -> None:
        """Read the file again if it changed since it was last looked at."""
        if self.path is None:
            return
        signature = _signature(self.path)
        if signature == self._seen:
            return
        with self._lock:
            if signature == self._seen:
                return
            self._seen = signature
            try:
                keys = self._read()
            except KeyFileError as error:
                log.error("%s; keeping the %d keys read before", error, len(self._file_keys))
                return
            self._file_keys = keys
            log.info("Read %d API keys from %s again", len(keys), self.path)

    def identify(self, presented: str) -> KeySpec | None:
        """The key `presented` is, or None."""
        self.refresh()
        digest = digest_of(presented)
        found = None
        for stored, spec in self._single + self._file_keys:
            # No early exit: every digest is compared whichever one matches.
            if compare_digest(digest, stored) and found is None:
                found = spec
        return found

    @property
    def names(self) -> list[str]:
        return [spec.name for _, spec in self._single + self._file_keys]
