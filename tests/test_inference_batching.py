"""Dynamic batching of `predict` calls across threads (no Django DB, no TF)."""

import itertools
import threading
import time
from concurrent.futures import CancelledError

import numpy as np
import pytest

from predictions.inference.batching import Batcher, BatcherClosed, BatcherFull

TIMEOUT = 10  # Seconds; only reached when something hangs.
_names = itertools.count()


def example(value: float, *, size: int = 2) -> np.ndarray:
    """One H x W x C input whose output row (the sum of its pixels) is `value * size * size`."""
    return np.full((size, size, 1), value, dtype=np.float32)


class RecordingPredict:
    """Sums each example's pixels and records every batch; `gate` holds calls until it is set."""

    def __init__(self, *, delay: float = 0.0, gated: bool = False, fail_on: float | None = None):
        self.delay = delay
        self.fail_on = fail_on
        self.batches: list[np.ndarray] = []
        self.started = threading.Event()
        self.gate = threading.Event()
        if not gated:
            self.gate.set()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.batches.append(batch.copy())
        self.started.set()
        assert self.gate.wait(TIMEOUT)
        time.sleep(self.delay)
        if self.fail_on is not None and (batch == self.fail_on).any():
            raise ValueError(f"cannot predict on {self.fail_on}")
        return batch.sum(axis=(1, 2, 3))[:, None]

    @property
    def sizes(self) -> list[int]:
        return [len(batch) for batch in self.batches]

    def hold_first_batch(self, batcher: Batcher) -> None:
        """Occupy the worker with one running batch, so what is submitted next stays queued."""
        self.first = batcher.submit(example(-1))
        assert self.started.wait(TIMEOUT)


@pytest.fixture
def make_batcher():
    made: list[Batcher] = []

    def make(predict, **options) -> Batcher:
        options = {"max_batch_size": 8, "max_wait_ms": 5, "name": f"test-{next(_names)}", **options}
        made.append(Batcher(predict, **options))
        return made[-1]

    yield make
    for batcher in made:
        batcher.close()


def batcher_threads(name: str) -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == f"batcher-{name}"]


def test_a_single_submit_resolves_with_its_row(make_batcher):
    predict = RecordingPredict()
    batcher = make_batcher(predict)

    result = batcher.submit(example(3)).result(TIMEOUT)

    np.testing.assert_array_equal(result, [12.0])
    assert predict.sizes == [1]
    assert (batcher.batches_run, batcher.frames_run) == (1, 1)
    assert len(batcher_threads(batcher.name)) == 1
    assert batcher_threads(batcher.name)[0].daemon


def test_rows_follow_the_order_of_submission(make_batcher):
    predict = RecordingPredict(gated=True)
    batcher = make_batcher(predict)
    predict.hold_first_batch(batcher)

    futures = [batcher.submit(example(value)) for value in (1, 2, 3, 4)]
    predict.gate.set()

    assert [future.result(TIMEOUT)[0] for future in futures] == [4.0, 8.0, 12.0, 16.0]
    assert predict.sizes == [1, 4]
    np.testing.assert_array_equal(predict.batches[1][:, 0, 0, 0], [1, 2, 3, 4])
    assert (batcher.batches_run, batcher.frames_run) == (2, 5)


def test_concurrent_submits_form_bounded_batches(make_batcher):
    predict = RecordingPredict(delay=0.02)
    batcher = make_batcher(predict, max_batch_size=8, max_wait_ms=5)
    start = threading.Barrier(8)
    submitted: dict[int, object] = {}

    def client(first: int) -> None:
        start.wait(TIMEOUT)
        for value in range(first, first + 4):
            submitted[value] = batcher.submit(example(value))

    clients = [threading.Thread(target=client, args=(n * 4,)) for n in range(8)]
    for thread in clients:
        thread.start()
    for thread in clients:
        thread.join(TIMEOUT)

    assert sorted(submitted) == list(range(32))
    for value, future in submitted.items():
        np.testing.assert_array_equal(future.result(TIMEOUT), [value * 4.0])
    assert sum(predict.sizes) == 32
    assert max(predict.sizes) > 1
    assert max(predict.sizes) <= 8


def test_max_wait_gathers_a_submit_that_comes_shortly_after(make_batcher):
    # The brief's case is 50 ms apart 10 ms; a wider window keeps it steady on a busy machine.
    predict = RecordingPredict()
    batcher = make_batcher(predict, max_wait_ms=250)

    first = batcher.submit(example(1))
    time.sleep(0.01)
    second = batcher.submit(example(2))

    assert (first.result(TIMEOUT)[0], second.result(TIMEOUT)[0]) == (4.0, 8.0)
    assert predict.sizes == [2]


def test_a_lone_submit_waits_out_max_wait(make_batcher):
    batcher = make_batcher(RecordingPredict(), max_wait_ms=150)

    started = time.monotonic()
    batcher.submit(example(1)).result(TIMEOUT)

    assert time.monotonic() - started >= 0.14


def test_a_full_batch_does_not_wait(make_batcher):
    predict = RecordingPredict()
    batcher = make_batcher(predict, max_batch_size=2, max_wait_ms=5_000)

    started = time.monotonic()
    futures = [batcher.submit(example(value)) for value in (1, 2)]
    [future.result(TIMEOUT) for future in futures]

    assert time.monotonic() - started < 2.5
    assert predict.sizes == [2]


def test_max_wait_zero_does_not_delay_a_lone_submit(make_batcher):
    batcher = make_batcher(RecordingPredict(), max_wait_ms=0)
    elapsed = []
    for value in range(5):
        started = time.monotonic()
        batcher.submit(example(value)).result(TIMEOUT)
        elapsed.append(time.monotonic() - started)

    # The fastest of a few, so one scheduling hiccup on a shared machine does not fail it.
    assert min(elapsed) < 0.05


def test_max_wait_zero_still_batches_what_is_already_queued(make_batcher):
    predict = RecordingPredict(gated=True)
    batcher = make_batcher(predict, max_wait_ms=0)
    predict.hold_first_batch(batcher)

    futures = [batcher.submit(example(value)) for value in (1, 2, 3)]
    predict.gate.set()

    assert [future.result(TIMEOUT)[0] for future in futures] == [4.0, 8.0, 12.0]
    assert predict.sizes == [1, 3]


def test_a_failing_predict_fails_its_batch_and_the_worker_goes_on(make_batcher):
    predict = RecordingPredict(gated=True, fail_on=13)
    batcher = make_batcher(predict)
    predict.hold_first_batch(batcher)

    failing = [batcher.submit(example(13)), batcher.submit(example(1))]
    predict.gate.set()

    for future in failing:
        with pytest.raises(ValueError, match="cannot predict on 13"):
            future.result(TIMEOUT)
    np.testing.assert_array_equal(batcher.submit(example(2)).result(TIMEOUT), [8.0])
    assert predict.sizes == [1, 2, 1]


def test_a_wrong_number_of_output_rows_fails_the_batch(make_batcher):
    batcher = make_batcher(lambda batch: np.zeros((len(batch) + 1, 1)))

    with pytest.raises(RuntimeError, match=r"returned 2 output rows for a batch of 1 input"):
        batcher.submit(example(1)).result(TIMEOUT)


def test_inputs_of_different_shapes_run_as_separate_batches(make_batcher):
    predict = RecordingPredict(gated=True)
    batcher = make_batcher(predict)
    predict.hold_first_batch(batcher)

    small_1 = batcher.submit(example(1))
    large = batcher.submit(example(1, size=3))
    small_2 = batcher.submit(example(2))
    predict.gate.set()

    assert [small_1.result(TIMEOUT)[0], small_2.result(TIMEOUT)[0]] == [4.0, 8.0]
    assert large.result(TIMEOUT)[0] == 9.0
    assert predict.sizes == [1, 2, 1]
    assert [batch.shape[1:] for batch in predict.batches[1:]] == [(2, 2, 1), (3, 3, 1)]


def test_a_cancelled_future_is_skipped(make_batcher):
    predict = RecordingPredict(gated=True)
    batcher = make_batcher(predict)
    predict.hold_first_batch(batcher)

    cancelled = batcher.submit(example(7))
    kept = batcher.submit(example(2))
    assert cancelled.cancel()
    predict.gate.set()

    np.testing.assert_array_equal(kept.result(TIMEOUT), [8.0])
    with pytest.raises(CancelledError):
        cancelled.result(TIMEOUT)
    assert predict.sizes == [1, 1]
    assert 7 not in predict.batches[1]


def test_close_fails_queued_futures_and_stops_the_worker(make_batcher):
    predict = RecordingPredict(gated=True)
    batcher = make_batcher(predict)
    predict.hold_first_batch(batcher)
    queued = [batcher.submit(example(value)) for value in (1, 2)]

    # The running batch holds the worker, so close() waits for it in its own thread.
    closer = threading.Thread(target=batcher.close)
    closer.start()
    for future in queued:
        with pytest.raises(BatcherClosed, match="the model was unloaded"):
            future.result(TIMEOUT)
    with pytest.raises(BatcherClosed, match="closed"):
        batcher.submit(example(3))

    predict.gate.set()
    closer.join(TIMEOUT)
    assert not closer.is_alive()
    np.testing.assert_array_equal(predict.first.result(TIMEOUT), [-4.0])
    assert batcher_threads(batcher.name) == []
    batcher.close()  # A second close does nothing.
    assert predict.sizes == [1]


def test_close_fails_a_batch_still_being_gathered(make_batcher):
    predict = RecordingPredict()
    batcher = make_batcher(predict, max_wait_ms=5_000)
    future = batcher.submit(example(1))
    time.sleep(0.05)  # Let the worker take it and start waiting for more.

    started = time.monotonic()
    batcher.close()

    assert time.monotonic() - started < 2.5
    with pytest.raises(BatcherClosed, match="the model was unloaded"):
        future.result(TIMEOUT)
    assert predict.sizes == []
    assert batcher_threads(batcher.name) == []


def test_close_from_a_done_callback_does_not_deadlock(make_batcher):
    predict = RecordingPredict(gated=True)
    batcher = make_batcher(predict)
    future = batcher.submit(example(1))
    assert predict.started.wait(TIMEOUT)
    closed_on: list[str] = []

    def close_from_callback(_) -> None:
        batcher.close()  # Raises if it tries to join its own thread.
        closed_on.append(threading.current_thread().name)

    # Added while the batch runs, so the callback runs on the worker thread.
    future.add_done_callback(close_from_callback)
    predict.gate.set()

    np.testing.assert_array_equal(future.result(TIMEOUT), [4.0])
    deadline = time.monotonic() + TIMEOUT
    while (batcher_threads(batcher.name) or not closed_on) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert closed_on == [f"batcher-{batcher.name}"]
    assert batcher_threads(batcher.name) == []
    with pytest.raises(BatcherClosed):
        batcher.submit(example(2))


# --- The bounded queue -------------------------------------------------------------------------


def test_a_full_queue_refuses_more_inputs_until_the_worker_takes_them(make_batcher):
    predict = RecordingPredict(gated=True)
    batcher = make_batcher(predict, max_queue=2)
    predict.hold_first_batch(batcher)  # running: no longer queued

    queued = [batcher.submit(example(value)) for value in (1, 2)]
    assert batcher.full() and batcher.queued == 2
    with pytest.raises(BatcherFull, match="2 inputs wait"):
        batcher.submit(example(3))
    predict.gate.set()

    assert [future.result(TIMEOUT)[0] for future in queued] == [4.0, 8.0]
    assert not batcher.full()
    assert batcher.submit(example(3)).result(TIMEOUT)[0] == 12.0
    assert predict.sizes == [1, 2, 1]  # the refused input never reached the model


def test_inputs_whose_clients_left_make_room_in_a_full_queue(make_batcher):
    predict = RecordingPredict(gated=True)
    batcher = make_batcher(predict, max_queue=2)
    predict.hold_first_batch(batcher)

    left, kept = batcher.submit(example(7)), batcher.submit(example(1))
    assert left.cancel()
    assert not batcher.full()
    later = batcher.submit(example(2))
    assert batcher.queued == 2
    predict.gate.set()

    assert (kept.result(TIMEOUT)[0], later.result(TIMEOUT)[0]) == (4.0, 8.0)
    assert predict.sizes == [1, 2]
    assert 7 not in predict.batches[1]


def test_no_bound_by_default(make_batcher):
    predict = RecordingPredict(gated=True)
    batcher = make_batcher(predict)
    predict.hold_first_batch(batcher)

    futures = [batcher.submit(example(1)) for _ in range(100)]
    assert not batcher.full()
    predict.gate.set()
    assert all(future.result(TIMEOUT)[0] == 4.0 for future in futures)


def test_a_closed_batcher_refuses_with_its_own_exception(make_batcher):
    batcher = make_batcher(RecordingPredict(), max_queue=1)
    batcher.close()
    with pytest.raises(BatcherClosed, match="the model was unloaded"):
        batcher.submit(example(1))


# --- run_now: a lone input on the caller's thread -------------------------------------------


def test_run_now_runs_a_lone_input_on_the_callers_thread(make_batcher):
    threads = []
    predict = RecordingPredict()
    batcher = make_batcher(
        lambda batch: threads.append(threading.current_thread()) or predict(batch), max_wait_ms=0
    )

    np.testing.assert_array_equal(batcher.run_now(example(3)), [12.0])
    assert threads == [threading.current_thread()]
    assert (batcher.batches_run, batcher.frames_run) == (1, 1)


def test_run_now_declines_when_batches_wait_for_company(make_batcher):
    predict = RecordingPredict()
    batcher = make_batcher(predict, max_wait_ms=5)
    assert batcher.run_now(example(1)) is None
    assert predict.sizes == []


def test_run_now_declines_while_the_worker_runs_or_inputs_are_queued(make_batcher):
    predict = RecordingPredict(gated=True)
    batcher = make_batcher(predict, max_wait_ms=0)
    predict.hold_first_batch(batcher)
    assert batcher.run_now(example(1)) is None  # the worker is busy
    queued = batcher.submit(example(2))
    predict.gate.set()
    assert queued.result(TIMEOUT)[0] == 8.0
    assert predict.sizes == [1, 1]


def test_the_worker_waits_for_run_now_and_predict_never_runs_twice_at_once(make_batcher):
    running, overlaps = [0], []
    gate = threading.Event()

    def predict(batch):
        running[0] += 1
        overlaps.append(running[0])
        if batch[0, 0, 0, 0] == 1:
            assert gate.wait(TIMEOUT)  # hold the run_now() call
        running[0] -= 1
        return batch.sum(axis=(1, 2, 3))[:, None]

    batcher = make_batcher(predict, max_wait_ms=0)
    inline = []
    caller = threading.Thread(target=lambda: inline.append(batcher.run_now(example(1))))
    caller.start()
    deadline = time.monotonic() + TIMEOUT
    while not overlaps and time.monotonic() < deadline:
        time.sleep(0.005)
    assert batcher.run_now(example(2)) is None  # one at a time
    queued = batcher.submit(example(3))
    time.sleep(0.05)
    assert not queued.done()  # the worker waits for the run_now() call
    gate.set()
    caller.join(TIMEOUT)

    assert queued.result(TIMEOUT)[0] == 12.0
    assert inline[0][0] == 4.0
    assert max(overlaps) == 1


def test_close_waits_for_a_run_now_call_to_finish(make_batcher):
    predict = RecordingPredict(gated=True)
    batcher = make_batcher(predict, max_wait_ms=0)
    inline = []
    caller = threading.Thread(target=lambda: inline.append(batcher.run_now(example(1))))
    caller.start()
    assert predict.started.wait(TIMEOUT)
    closer = threading.Thread(target=batcher.close)
    closer.start()
    time.sleep(0.05)
    assert closer.is_alive()  # the model must stay usable while it runs
    predict.gate.set()
    closer.join(TIMEOUT)
    caller.join(TIMEOUT)
    assert not closer.is_alive() and inline[0][0] == 4.0
    assert batcher.run_now(example(1)) is None  # closed


def test_run_now_raises_what_predict_raises_and_frees_the_model(make_batcher):
    predict = RecordingPredict(fail_on=7)
    batcher = make_batcher(predict, max_wait_ms=0)
    with pytest.raises(ValueError, match="cannot predict on 7"):
        batcher.run_now(example(7))
    np.testing.assert_array_equal(batcher.submit(example(1)).result(TIMEOUT), [4.0])


def test_invalid_options_are_refused():
    with pytest.raises(ValueError, match="max_batch_size"):
        Batcher(lambda batch: batch, max_batch_size=0, max_wait_ms=5)
    with pytest.raises(ValueError, match="max_wait_ms"):
        Batcher(lambda batch: batch, max_batch_size=1, max_wait_ms=-1)
