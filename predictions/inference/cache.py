"""The process's loaded models: each version's file is downloaded once and loaded once."""

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .batching import Batcher
from .errors import ModelUnavailable
from .spec import ModelSpec, Runtime

logger = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """A runtime, warmed up, behind the batcher that every connection of the process shares."""

    key: str
    runtime: object
    batcher: Batcher
    size_bytes: int  # what the cache charges for it: the artifact's size on disk

    def close(self) -> None:
        self.batcher.close()


class ModelCache:
    """Loaded models keyed by artifact sha256; least recently used ones are unloaded once the
    loaded artifacts' sizes add up to more than `budget_bytes` (the newest always stays).

    Concurrent first requests for one model wait on the same load instead of loading twice.
    A failed load (storage unreachable, say) is retried with exponential backoff, from
    RETRY_FIRST_S to RETRY_MAX_S; frames in between get `model_unavailable` at once.
    """

    RETRY_FIRST_S = 1.0
    RETRY_MAX_S = 30.0

    def __init__(
        self,
        *,
        budget_bytes: int,
        load: Callable[[ModelSpec], tuple[object, int]],
        max_batch_size: int,
        max_wait_ms: float,
        max_queue: int = 0,
    ):
        self.budget_bytes = budget_bytes
        self._load = load
        self._max_batch_size = max_batch_size
        self._max_wait_ms = max_wait_ms
        self._max_queue = max_queue  # inputs each model's batcher lets wait (0: no bound)
        self._loaded: OrderedDict[str, LoadedModel] = OrderedDict()
        self._guard = threading.Lock()
        self._load_locks: dict[str, threading.Lock] = {}
        self._retry_at: dict[str, tuple[float, float]] = {}  # key -> (monotonic time, delay)

    @staticmethod
    def key(spec: ModelSpec) -> str:
        """Loaded models are keyed by the artifact they run."""
        return spec.compiled_sha256 if spec.runtime == Runtime.LITERT else spec.sha256

    def is_loaded(self, spec: ModelSpec) -> bool:
        with self._guard:
            return self.key(spec) in self._loaded

    def get(self, spec: ModelSpec) -> LoadedModel:
        """The loaded model for a version, loading it on first use; raises `ModelUnavailable`."""
        key = self.key(spec)
        with self._guard:
            if key in self._loaded:
                self._loaded.move_to_end(key)
                return self._loaded[key]
            load_lock = self._load_locks.setdefault(key, threading.Lock())
        with load_lock:
            with self._guard:
                if key in self._loaded:
                    return self._loaded[key]
            self._wait_for_retry(key)
            try:
                loaded = self._load_and_warm(key, spec)
            except ModelUnavailable:
                self._schedule_retry(key)
                raise
            with self._guard:
                self._retry_at.pop(key, None)
                self._loaded[key] = loaded
                evicted = self._evict()
            for model in evicted:
                model.close()
            return loaded

    def loaded_keys(self) -> list[str]:
        with self._guard:
            return list(self._loaded)

    def clear(self) -> None:
        with self._guard:
            models, self._loaded = list(self._loaded.values()), OrderedDict()
        for model in models:
            model.close()

    def _wait_for_retry(self, key: str) -> None:
        retry_at, _ = self._retry_at.get(key, (0.0, 0.0))
        remaining = retry_at - time.monotonic()
        if remaining > 0:
            raise ModelUnavailable(
                f"The model could not be loaded just now; the server retries in {remaining:.0f} s."
            )

    def _schedule_retry(self, key: str) -> None:
        _, delay = self._retry_at.get(key, (0.0, 0.0))
        delay = min(self.RETRY_MAX_S, delay * 2 if delay else self.RETRY_FIRST_S)
        self._retry_at[key] = (time.monotonic() + delay, delay)

    def _evict(self) -> list[LoadedModel]:
        evicted = []
        while len(self._loaded) > 1 and self._used() > self.budget_bytes:
            _, model = self._loaded.popitem(last=False)
            evicted.append(model)
            logger.info(
                "unloaded model %s to stay within %d bytes", model.key[:12], self.budget_bytes
            )
        return evicted

    def _used(self) -> int:
        return sum(model.size_bytes for model in self._loaded.values())

    def _load_and_warm(self, key: str, spec: ModelSpec) -> LoadedModel:
        started = time.perf_counter()
        try:
            runtime, size_bytes = self._load(spec)
            # Warm-up: the first call allocates buffers; no client frame should pay for it.
            runtime.predict(np.zeros((1, *spec.input_shape), dtype=np.float32))
        except ModelUnavailable:
            raise
        except Exception as exc:
            logger.exception("could not load model version %s", spec.version_id)
            raise ModelUnavailable(f"The model could not be loaded: {exc}") from None
        logger.info(
            "loaded model version %s (%s, %s) in %.0f ms",
            spec.version_id,
            runtime.name,
            key[:12],
            (time.perf_counter() - started) * 1000,
        )
        batcher = Batcher(
            runtime.predict,
            max_batch_size=self._max_batch_size,
            max_wait_ms=self._max_wait_ms,
            max_queue=self._max_queue,
            name=f"v{spec.version_id}",
        )
        return LoadedModel(key, runtime, batcher, size_bytes)
