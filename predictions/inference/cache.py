"""The process's loaded models: each version's file is downloaded once and loaded once."""

import logging
import threading
import time
from collections import OrderedDict

from .errors import ModelUnavailable
from .runtime import KerasRuntime
from .spec import ModelSpec

logger = logging.getLogger(__name__)


class ModelCache:
    """Loaded runtimes keyed by file sha256, least recently used unloaded past `capacity`.

    Concurrent first requests for one model wait on the same load instead of loading twice.
    """

    def __init__(self, *, capacity: int, fetch_file, load=KerasRuntime):
        self.capacity = max(1, capacity)
        self._fetch_file = fetch_file
        self._load = load
        self._loaded: OrderedDict[str, object] = OrderedDict()
        self._guard = threading.Lock()
        self._load_locks: dict[str, threading.Lock] = {}

    def get(self, spec: ModelSpec):
        """The runtime for a version, loading it on first use; raises `ModelUnavailable`."""
        key = spec.sha256
        with self._guard:
            if key in self._loaded:
                self._loaded.move_to_end(key)
                return self._loaded[key]
            load_lock = self._load_locks.setdefault(key, threading.Lock())
        with load_lock:
            with self._guard:
                if key in self._loaded:
                    return self._loaded[key]
            runtime = self._load_runtime(spec)
            with self._guard:
                self._loaded[key] = runtime
                while len(self._loaded) > self.capacity:
                    evicted, _ = self._loaded.popitem(last=False)
                    logger.info("unloaded model %s (cache holds %d)", evicted[:12], self.capacity)
            return runtime

    def loaded_keys(self) -> list[str]:
        with self._guard:
            return list(self._loaded)

    def _load_runtime(self, spec: ModelSpec):
        path = self._fetch_file(name=spec.file_name, sha256=spec.sha256)
        started = time.perf_counter()
        try:
            runtime = self._load(str(path))
        except Exception as exc:
            logger.exception("could not load model version %s", spec.version_id)
            raise ModelUnavailable(f"The model could not be loaded: {exc}") from None
        logger.info(
            "loaded model version %s (%s) in %.0f ms",
            spec.version_id,
            spec.sha256[:12],
            (time.perf_counter() - started) * 1000,
        )
        return runtime
