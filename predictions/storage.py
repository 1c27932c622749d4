"""Model files on local disk: a cache keyed by sha256, filled from the model storage (S3 or a folder).

Every file lands under a temporary name and is renamed into place only after its hash checks
out, so a reader never sees a partial file at a cache path.
"""

import hashlib
import logging
import os
import tempfile
import threading
from pathlib import Path
from typing import BinaryIO

from django.conf import settings

from .inference.errors import ModelUnavailable, ModelValidationError
from .models import model_storage

logger = logging.getLogger(__name__)

CHUNK_BYTES = 1024 * 1024


class HashMismatch(ValueError):
    """A downloaded file is not the one that was registered."""


class ModelFileCache:
    """Local copies of model files, named `<sha256><suffix>` (`.keras`, `.tflite`)."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def fetch(self, *, name: str, sha256: str, suffix: str) -> Path:
        """The local path of a stored file, downloading it once; the hash must match."""
        target = self._path(sha256, suffix)
        if target.exists():
            return target
        with self._lock(sha256):
            if target.exists():
                return target
            try:
                with model_storage().open(name, "rb") as remote:
                    path, _, _ = self.add(remote, suffix=suffix, expected_sha256=sha256)
            except HashMismatch:
                raise ModelUnavailable(
                    f"The stored model file {name} does not match its registered sha256."
                ) from None
            except Exception as exc:  # boto3, the filesystem: any failure to read the file.
                logger.warning("could not fetch model file %s: %s", name, exc)
                raise ModelUnavailable(
                    f"The model file cannot be fetched from the model storage right now ({exc})."
                ) from None
            return path

    def add(
        self, stream: BinaryIO, *, suffix: str = ".keras", expected_sha256: str | None = None
    ) -> tuple[Path, str, int]:
        """Copy a file object into the cache; returns (path, sha256, size). With
        `expected_sha256`, a file whose hash differs never reaches the cache (HashMismatch)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        size = 0
        handle, temp_name = tempfile.mkstemp(dir=self.directory, suffix=".part")
        try:
            with os.fdopen(handle, "wb") as out:
                while chunk := stream.read(CHUNK_BYTES):
                    digest.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
            sha256 = digest.hexdigest()
            if expected_sha256 is not None and sha256 != expected_sha256:
                raise HashMismatch(f"expected sha256 {expected_sha256}, got {sha256}")
            target = self._path(sha256, suffix)
            os.replace(temp_name, target)
        except BaseException:
            Path(temp_name).unlink(missing_ok=True)
            raise
        return target, sha256, size

    def retag(self, path: Path, suffix: str) -> Path:
        """Give a cached file another suffix (Keras picks its loader by the file's name)."""
        target = path.with_suffix(suffix)
        os.replace(path, target)
        return target

    def _path(self, sha256: str, suffix: str) -> Path:
        return self.directory / f"{sha256}{suffix}"

    def _lock(self, key: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(key, threading.Lock())


_file_cache: ModelFileCache | None = None
_file_cache_guard = threading.Lock()


def file_cache() -> ModelFileCache:
    """The process's model file cache, in `settings.MODEL_CACHE_DIR`."""
    global _file_cache
    with _file_cache_guard:
        if _file_cache is None or _file_cache.directory != Path(settings.MODEL_CACHE_DIR):
            _file_cache = ModelFileCache(settings.MODEL_CACHE_DIR)
        return _file_cache


def store_once(name: str, content) -> str:
    """Save under a content-addressed name; an identical file already there is kept."""
    storage = model_storage()
    if storage.exists(name):
        return name
    return storage.save(name, content)


def storage_read_head(key: str, size: int) -> tuple[bytes, int]:
    """The first `size` bytes of an object in the model storage, and its full size, without
    downloading the rest. Raises `ModelValidationError` when it is missing or unreadable."""
    storage = model_storage()
    try:
        total = storage.size(key)
        bucket = getattr(storage, "bucket", None)  # S3: a ranged GET, not the whole object
        if bucket is not None:
            body = bucket.Object(key).get(Range=f"bytes=0-{size - 1}")["Body"]
            return body.read(), total
        with storage.open(key, "rb") as handle:
            return handle.read(size), total
    except Exception as exc:
        raise storage_error(key, exc) from None


def storage_fetch_key(key: str) -> tuple[Path, str, int]:
    """Copy an object of the model storage into the local cache; returns (path, sha256, size)."""
    try:
        with model_storage().open(key, "rb") as remote:
            return file_cache().add(remote, suffix=".download")
    except Exception as exc:
        raise storage_error(key, exc) from None


def storage_error(key: str, exc: Exception) -> ModelValidationError:
    """A storage failure in words: a missing object, or why it could not be read."""
    response = getattr(exc, "response", None) or {}  # botocore's errors carry the S3 code
    missing = response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound")
    if missing or isinstance(exc, FileNotFoundError):
        return ModelValidationError(f"No object named {key!r} in the model storage.")
    return ModelValidationError(f"Could not read {key!r} from the model storage: {exc}")
