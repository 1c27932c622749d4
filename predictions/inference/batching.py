"""Dynamic batching: frames from many connections share one `predict(batch)` call."""

import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import NamedTuple

import numpy as np


class BatcherClosed(RuntimeError):
    """The batcher's model was unloaded: nothing more runs on it."""


class BatcherFull(Exception):
    """The batcher's queue already holds `max_queue` inputs."""


class QueuedInput(NamedTuple):
    model_input: np.ndarray
    future: Future  # resolves to the input's row of its batch's output


class Batcher:
    """Dynamic batching for one loaded model, shared by every connection of the process.

    One worker thread takes the first queued input, then more until it has `max_batch_size`
    or `max_wait_ms` have passed since the first (0: only what is already queued). Inputs of
    different shapes or dtypes taken together run as separate batches, one per shape, so one
    malformed input fails on its own instead of with its neighbours. With no wait, `run_now`
    lets a caller run a lone input on its own thread while the model is idle. At most
    `max_queue` inputs wait (0: no bound); `submit` raises `BatcherFull` beyond.
    """

    def __init__(
        self,
        predict: Callable[[np.ndarray], np.ndarray],
        *,
        max_batch_size: int,
        max_wait_ms: float,
        max_queue: int = 0,
        name: str = "model",
    ):
        if max_batch_size < 1 or max_wait_ms < 0:
            raise ValueError("max_batch_size must be at least 1 and max_wait_ms at least 0.")
        self.name = name
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000
        self.max_queue = max_queue
        self._predict = predict
        self._pending: deque[QueuedInput] = deque()
        self._condition = threading.Condition()
        self._closed = False
        self._worker_busy = False  # the worker is running a batch
        self._inline_busy = False  # a caller is running an input in run_now()
        self._batches_run = 0
        self._frames_run = 0
        self._thread = threading.Thread(target=self._work, name=f"batcher-{name}", daemon=True)
        self._thread.start()

    @property
    def batches_run(self) -> int:
        """How many times `predict` has been called."""
        return self._batches_run

    @property
    def frames_run(self) -> int:
        """How many inputs have been sent to `predict`."""
        return self._frames_run

    @property
    def queued(self) -> int:
        """How many inputs wait for the worker (cancelled ones until it skips them)."""
        with self._condition:
            return len(self._pending)

    def full(self) -> bool:
        """Whether `submit` would raise `BatcherFull` now."""
        with self._condition:
            return not self._has_room()

    def submit(self, model_input: np.ndarray) -> Future:
        """Queue one example; the future resolves to its row of the batch's output. Raises
        `BatcherFull` when `max_queue` inputs wait already, `BatcherClosed` once closed."""
        future: Future = Future()
        with self._condition:
            if self._closed:
                raise BatcherClosed(
                    f"The batcher for {self.name} is closed: the model was unloaded."
                )
            if not self._has_room():
                raise BatcherFull(f"{len(self._pending)} inputs wait for the model already.")
            self._pending.append(QueuedInput(np.asarray(model_input), future))
            self._condition.notify()
        return future

    def _has_room(self) -> bool:
        """Called holding the condition's lock."""
        if self.max_queue <= 0 or len(self._pending) < self.max_queue:
            return True
        # Inputs whose clients went away make room: the worker would skip them anyway.
        self._pending = deque(item for item in self._pending if not item.future.cancelled())
        return len(self._pending) < self.max_queue

    def run_now(self, model_input: np.ndarray) -> np.ndarray | None:
        """Run one input on the calling thread, when nothing is queued or running and batches
        do not wait for company (`max_wait_ms` 0): a lone frame skips the hop to the worker.
        None when the input must be submitted instead."""
        if self.max_wait > 0:
            return None
        with self._condition:
            if self._closed or self._pending or self._worker_busy or self._inline_busy:
                return None
            self._inline_busy = True
        try:
            return self._predict_rows(np.asarray(model_input)[None])[0]
        finally:
            with self._condition:
                self._inline_busy = False
                self._condition.notify_all()

    def close(self) -> None:
        """Stop the worker, failing queued futures; a batch already running finishes first."""
        with self._condition:
            self._closed = True
            queued = list(self._pending)
            self._pending.clear()
            self._condition.notify_all()
            while self._inline_busy:  # the model stays usable until run_now() returns
                self._condition.wait()
        _fail(queued, BatcherClosed("the model was unloaded"))
        # A future's done-callback runs on the worker and may close the batcher itself.
        if threading.current_thread() is not self._thread:
            self._thread.join()

    def _work(self) -> None:
        while (items := self._take()) is not None:
            try:
                # Marking them running here is what makes a later cancel() fail, so none is lost.
                items = [item for item in items if item.future.set_running_or_notify_cancel()]
                groups: dict[tuple, list[QueuedInput]] = {}
                for item in items:
                    key = (item.model_input.shape, item.model_input.dtype)
                    groups.setdefault(key, []).append(item)
                for group in groups.values():
                    self._run(group)
            finally:
                with self._condition:
                    self._worker_busy = False

    def _take(self) -> list[QueuedInput] | None:
        """Wait for the first input (and for run_now() to finish), then gather a batch; None
        once closed."""
        with self._condition:
            while (not self._pending or self._inline_busy) and not self._closed:
                self._condition.wait()
            if self._closed:
                return None
            self._worker_busy = True
            deadline = time.monotonic() + self.max_wait
            items = [self._pending.popleft()]
            while len(items) < self.max_batch_size and not self._closed:
                if self._pending:
                    items.append(self._pending.popleft())
                elif (remaining := deadline - time.monotonic()) > 0:
                    self._condition.wait(remaining)
                else:
                    break
            if not self._closed:
                return items
            self._worker_busy = False
        _fail(items, BatcherClosed("the model was unloaded"))
        return None

    def _predict_rows(self, batch: np.ndarray) -> np.ndarray:
        """`predict` on a batch, checked to give one output row per input."""
        self._batches_run += 1
        self._frames_run += len(batch)
        output = np.asarray(self._predict(batch))
        rows = output.shape[0] if output.ndim else 0
        if rows != len(batch):
            raise RuntimeError(
                f"The model returned {rows} output rows for a batch of {len(batch)} inputs."
            )
        return output

    def _run(self, group: list[QueuedInput]) -> None:
        try:
            output = self._predict_rows(np.stack([item.model_input for item in group]))
        except Exception as exc:
            for item in group:
                item.future.set_exception(exc)
            return
        for i, item in enumerate(group):
            item.future.set_result(output[i])


def _fail(items: list[QueuedInput], exc: Exception) -> None:
    for item in items:
        if item.future.set_running_or_notify_cancel():
            item.future.set_exception(exc)
