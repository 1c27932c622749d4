"""Usage per project, version and minute: counted in each process's memory, added into
`UsageMinute` rows by a background thread.

Recording (`record_answer`, `record_error`) touches memory only, under a lock, so the event
loop and the inference threads never wait on the database. The process's flush thread, started
on the first record, adds the counts into the rows every `USAGE_FLUSH_SECONDS`, once more at
exit, and prunes rows older than `USAGE_KEEP_DAYS` at most once an hour. Latency is counted in
fixed buckets, so the rows of every process add up. Reads for the admin: `usage_by_version`
(totals per version since a moment) and `usage_series` (per version, hour and day in a window,
for the charts of `usage_charts.py`).
"""

import atexit
import logging
import math
import threading
import time
from bisect import bisect_left
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import IntegerField, Sum
from django.db.models.fields.json import KT
from django.db.models.functions import Cast, TruncHour
from django.utils import timezone

from .inference.errors import HTTP_STATUS
from .models import Project, UsageMinute

logger = logging.getLogger(__name__)

# Upper bounds of the latency buckets, in ms (a frame's total time falls in the first bucket
# whose bound it does not pass). Rows keep one count per bucket: change the bounds only with
# the rows.
LATENCY_BUCKETS_MS = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, math.inf)
MAX_PENDING_KEYS = 10_000  # (project, version, minute) keys a process holds between flushes
PRUNE_EVERY_SECONDS = 3600.0
STOP_TIMEOUT_SECONDS = 10.0  # at exit, within the 30 s a dyno has after SIGTERM

Key = tuple[str, int, int]  # project slug, version number (0: none), minute since the epoch


@dataclass
class UsageCounts:
    """One key's counts: frames answered, errors by code, answered frames per latency bucket."""

    answered: int = 0
    errors: Counter = field(default_factory=Counter)
    latency: list[int] = field(default_factory=lambda: [0] * len(LATENCY_BUCKETS_MS))

    def add(self, other: "UsageCounts") -> None:
        self.answered += other.answered
        self.errors.update(other.errors)
        self.latency = add_buckets(self.latency, other.latency)

    @property
    def records(self) -> int:
        return self.answered + sum(self.errors.values())


class UsageAccumulator:
    """A process's counts by (project slug, version number, minute) until they are flushed.
    At most `max_keys` keys wait: records for a new key past that are dropped and counted in
    `dropped` (the database being away for long must not grow the process)."""

    def __init__(self, *, max_keys: int = MAX_PENDING_KEYS):
        self.max_keys = max_keys
        self.dropped = 0
        self._dropped_reported = 0
        self._pending: dict[Key, UsageCounts] = {}
        self._lock = threading.Lock()
        self._flushing = threading.Lock()  # one flush at a time (the thread's, the exit's)

    def record_answer(
        self, slug: str, version_number: int, total_ms: float, *, at: float | None = None
    ) -> None:
        """Count a frame answered with a prediction in `total_ms` (`at`: epoch seconds, now)."""
        bucket = bisect_left(LATENCY_BUCKETS_MS, total_ms)
        with self._lock:
            counts = self._counts((slug, version_number, _minute(at)))
            if counts is not None:
                counts.answered += 1
                counts.latency[bucket] += 1

    def record_error(
        self, slug: str, version_number: int, code: str, *, at: float | None = None
    ) -> None:
        """Count a frame answered with the error `code`."""
        with self._lock:
            counts = self._counts((slug, version_number, _minute(at)))
            if counts is not None:
                counts.errors[code] += 1

    def _counts(self, key: Key) -> UsageCounts | None:
        counts = self._pending.get(key)
        if counts is None:
            if len(self._pending) >= self.max_keys:
                self.dropped += 1
                return None
            counts = self._pending[key] = UsageCounts()
        return counts

    def flush(self) -> int:
        """Add the pending counts into their `UsageMinute` rows, one transaction per row (the
        row locked while its counts are added); counts of projects deleted since are dropped.
        On a database error the counts not yet written stay pending for the next flush (within
        `max_keys`) and it is logged. Returns the rows written. Blocks: never on the event
        loop."""
        with self._flushing:
            with self._lock:
                pending, self._pending = self._pending, {}
                dropped = self.dropped - self._dropped_reported
                self._dropped_reported = self.dropped
            if dropped:
                logger.warning("usage: %d frame(s) went uncounted: too many keys waiting", dropped)
            items = list(pending.items())
            if not items:
                return 0
            done = written = 0
            try:
                ids = dict(
                    Project.objects.filter(slug__in={key[0] for key, _ in items}).values_list(
                        "slug", "id"
                    )
                )
                for key, counts in items:
                    if key[0] in ids:
                        _add_to_row(ids[key[0]], key, counts)
                        written += 1
                    done += 1
            except DatabaseError:
                logger.exception(
                    "usage: could not write %d minute(s) of counts; kept for the next flush",
                    len(items) - done,
                )
                self._keep(items[done:])
            return written

    def _keep(self, items: list[tuple[Key, UsageCounts]]) -> None:
        with self._lock:
            for key, counts in items:
                if key in self._pending:
                    self._pending[key].add(counts)
                elif len(self._pending) < self.max_keys:
                    self._pending[key] = counts
                else:
                    self.dropped += counts.records


def _minute(at: float | None) -> int:
    return int((time.time() if at is None else at) // 60)


def _add_to_row(project_id: int, key: Key, counts: UsageCounts) -> None:
    _, version_number, minute = key
    with transaction.atomic():
        row, created = UsageMinute.objects.select_for_update().get_or_create(
            project_id=project_id,
            version_number=version_number,
            minute=datetime.fromtimestamp(minute * 60, tz=UTC),
            defaults={
                "answered": counts.answered,
                "errors": dict(counts.errors),
                "latency_buckets": counts.latency,
            },
        )
        if not created:  # another flush (of this process or another) made it: add to it
            row.answered += counts.answered
            row.errors = dict(Counter(row.errors) + counts.errors)
            row.latency_buckets = add_buckets(row.latency_buckets, counts.latency)
            row.save(update_fields=["answered", "errors", "latency_buckets"])


def add_buckets(first: list[int], second: list[int]) -> list[int]:
    """Two lists of bucket counts added up (a shorter one counts as zeros)."""
    size = max(len(first), len(second))
    return [
        (first[i] if i < len(first) else 0) + (second[i] if i < len(second) else 0)
        for i in range(size)
    ]


def usage_prune(*, now: datetime | None = None) -> int:
    """Delete the rows older than `USAGE_KEEP_DAYS`; returns how many went."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.USAGE_KEEP_DAYS)
    deleted, _ = UsageMinute.objects.filter(minute__lt=cutoff).delete()
    return deleted


# --- Reads -------------------------------------------------------------------------------------


def latency_quantile(buckets: list[int], q: float) -> float | None:
    """The `q` quantile (0 < q <= 1) of the latencies counted in `buckets`, in ms, interpolated
    within its bucket as Prometheus's histogram_quantile does (past the last finite bound: that
    bound). None when nothing was counted."""
    total = sum(buckets)
    if not total:
        return None
    rank = q * total
    seen = 0
    for index, count in enumerate(buckets):
        if count and seen + count >= rank:
            lower = LATENCY_BUCKETS_MS[index - 1] if index else 0.0
            upper = LATENCY_BUCKETS_MS[index]
            if math.isinf(upper):
                return float(lower)
            return lower + (upper - lower) * (rank - seen) / count
        seen += count
    return None


def usage_by_version(*, project: Project, since: datetime) -> dict[int, dict]:
    """A project's usage from `since` on, per version number (0: answered with no version):
    `{"answered": n, "errors": {code: n}, "latency_buckets": [...], "p50_ms": x, "p95_ms": y}`
    (the percentiles estimated from the buckets; None with nothing answered)."""
    totals: dict[int, UsageCounts] = {}
    rows = UsageMinute.objects.filter(project=project, minute__gte=since).values_list(
        "version_number", "answered", "errors", "latency_buckets"
    )
    for number, answered, errors, buckets in rows.iterator():
        totals.setdefault(number, UsageCounts()).add(
            UsageCounts(answered=answered, errors=Counter(errors), latency=list(buckets))
        )
    return {
        number: {
            "answered": counts.answered,
            "errors": dict(counts.errors),
            "latency_buckets": counts.latency,
            "p50_ms": latency_quantile(counts.latency, 0.5),
            "p95_ms": latency_quantile(counts.latency, 0.95),
        }
        for number, counts in sorted(totals.items())
    }


HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
# The codes `usage_series` sums per period: the contract's table, which every error a frame is
# answered with comes from (summed in the database, so each code is named there).
ERROR_CODES = tuple(HTTP_STATUS)


@dataclass
class UsagePeriod(UsageCounts):
    """The counts of one period (an hour, a day, a whole window) that starts at `start`."""

    start: datetime | None = None

    @property
    def error_total(self) -> int:
        return sum(self.errors.values())

    @property
    def p50_ms(self) -> float | None:
        return latency_quantile(self.latency, 0.5)

    @property
    def p95_ms(self) -> float | None:
        return latency_quantile(self.latency, 0.95)


@dataclass
class UsageSeries:
    """One version's usage in a window (`version_number` None: every version's): a period per
    hour and per UTC day of the window, and the whole window."""

    version_number: int | None
    hours: list[UsagePeriod]
    days: list[UsagePeriod]
    total: UsagePeriod

    @classmethod
    def empty(cls, version_number: int | None, *, since: datetime, until: datetime):
        first_hour = _floor(since, HOUR)
        first_day = _floor(since, DAY)
        return cls(
            version_number=version_number,
            hours=[UsagePeriod(start=start) for start in _starts(first_hour, until, HOUR)],
            days=[UsagePeriod(start=start) for start in _starts(first_day, until, DAY)],
            total=UsagePeriod(start=since),
        )

    def add(self, hour: datetime, counts: UsageCounts) -> None:
        """Add one hour's counts (`hour`: an hour's start within the window)."""
        self.hours[(hour - self.hours[0].start) // HOUR].add(counts)
        self.days[(hour - self.days[0].start) // DAY].add(counts)
        self.total.add(counts)


@dataclass
class UsageWindow:
    """A project's usage from `since` to `until`: every version's, and each version's that
    has any rows in the window (by number; 0: frames answered with no version)."""

    since: datetime
    until: datetime
    project: UsageSeries
    versions: dict[int, UsageSeries]


def usage_window(*, days: int = 7, now: datetime | None = None) -> tuple[datetime, datetime]:
    """(since, until) of the last `days` whole UTC days, today included: two UTC midnights."""
    today = _floor((now or timezone.now()).astimezone(UTC), DAY)
    return today + DAY - days * DAY, today + DAY


def usage_series(*, project: Project, since: datetime, until: datetime) -> UsageWindow:
    """A project's usage from `since` (included) to `until` (excluded) per hour and UTC day,
    per version and for every version, with p50/p95 per period from the latency buckets.

    One query: the database groups the minute rows by version and hour and sums the frames,
    each latency bucket and each error code; what comes back is at most one row per version
    and hour (168 a version over 7 days), added up here into days and totals."""
    sums = {"answered": Sum("answered")}
    for index in range(len(LATENCY_BUCKETS_MS)):
        sums[f"bucket_{index}"] = Sum(Cast(KT(f"latency_buckets__{index}"), IntegerField()))
    for code in ERROR_CODES:
        sums[f"error_{code}"] = Sum(Cast(KT(f"errors__{code}"), IntegerField()))
    grouped = (
        UsageMinute.objects.filter(project=project, minute__gte=since, minute__lt=until)
        .annotate(hour=TruncHour("minute", tzinfo=UTC))
        .values("version_number", "hour")
        .annotate(**sums)
        .order_by("version_number", "hour")
    )
    window = UsageWindow(
        since=since,
        until=until,
        project=UsageSeries.empty(None, since=since, until=until),
        versions={},
    )
    for row in grouped:
        counts = UsageCounts(
            answered=row["answered"] or 0,
            errors=Counter(
                {code: row[f"error_{code}"] for code in ERROR_CODES if row[f"error_{code}"]}
            ),
            latency=[row[f"bucket_{index}"] or 0 for index in range(len(LATENCY_BUCKETS_MS))],
        )
        number = row["version_number"]
        if number not in window.versions:
            window.versions[number] = UsageSeries.empty(number, since=since, until=until)
        window.versions[number].add(row["hour"], counts)
        window.project.add(row["hour"], counts)
    return window


def _floor(moment: datetime, step: timedelta) -> datetime:
    """`moment` rounded down to a whole `step` (an hour, a day) since the epoch, in UTC."""
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return epoch + (moment - epoch) // step * step


def _starts(first: datetime, until: datetime, step: timedelta) -> list[datetime]:
    return [first + i * step for i in range(math.ceil((until - first) / step))]


# --- The process's accumulator and its flush thread --------------------------------------------


class UsageFlusher:
    """A daemon thread that flushes an accumulator every `interval` seconds and prunes old rows
    at most once an hour, closing its database connection after each round."""

    def __init__(self, accumulator: UsageAccumulator, *, interval: float):
        self.accumulator = accumulator
        self.interval = interval
        self._stop = threading.Event()
        self._next_prune = 0.0
        self._thread = threading.Thread(target=self._run, name="usage-flush", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread (waiting for a flush under way), then flush what is left here."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=STOP_TIMEOUT_SECONDS)
        if self._thread.is_alive():  # stuck on the database: exit without its counts
            logger.warning("usage: a flush is still under way; the counts since are not kept")
            return
        self.flush_once()

    def flush_once(self) -> None:
        try:
            self.accumulator.flush()
            if time.monotonic() >= self._next_prune:
                usage_prune()
                self._next_prune = time.monotonic() + PRUNE_EVERY_SECONDS
        except Exception:  # the thread must live on: the next round tries again
            logger.exception("usage: flush or prune failed")
        finally:
            connection.close()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.flush_once()


_accumulator = UsageAccumulator()
_flusher: UsageFlusher | None = None
_flusher_started = False
_flusher_guard = threading.Lock()


def record_answer(slug: str, version_number: int, total_ms: float) -> None:
    """Count a frame of `slug` answered by `version_number` (0: none) in `total_ms`. Memory
    only: safe on the event loop and in any thread."""
    _accumulator.record_answer(slug, version_number, total_ms)
    _start_flusher()


def record_error(slug: str, version_number: int, code: str) -> None:
    """Count a frame of `slug` answered with the error `code`. Memory only."""
    _accumulator.record_error(slug, version_number, code)
    _start_flusher()


def flush() -> int:
    """Flush the process's counts now (blocks: never on the event loop); see
    `UsageAccumulator.flush`."""
    return _accumulator.flush()


def _start_flusher() -> None:
    """Start the process's flush thread on its first record (so commands and the worker,
    which record nothing, never start one). `USAGE_FLUSH_SECONDS` 0: no thread, no flush at
    exit; counts wait for a `flush()` call."""
    global _flusher, _flusher_started
    if _flusher_started:  # the hot path: one read
        return
    with _flusher_guard:
        if _flusher_started:
            return
        _flusher_started = True
        if settings.USAGE_FLUSH_SECONDS > 0:
            _flusher = UsageFlusher(_accumulator, interval=settings.USAGE_FLUSH_SECONDS)
            _flusher.start()


@atexit.register
def _flush_at_exit() -> None:
    """At exit (daphne's SIGTERM shutdown ends here too): the counts since the last flush."""
    if _flusher is not None:
        _flusher.stop()
