"""Per-key request budgets (token buckets) held in this process."""

import math
import threading
import time

from django.conf import settings

# Keys held at most: past this, keys whose bucket has refilled are forgotten.
MAX_KEYS = 10_000


class RateLimiter:
    """`per_minute` requests a key, refilled evenly; a burst of up to `per_minute` at once."""

    def __init__(self, per_minute: int, *, clock=time.monotonic):
        self.per_minute = per_minute
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, when)

    def take(self, key: str) -> float:
        """Take one request for `key`: 0 when allowed, else the seconds until one would be."""
        rate = self.per_minute / 60
        now = self._clock()
        with self._lock:
            tokens, when = self._buckets.get(key, (self.per_minute, now))
            tokens = min(self.per_minute, tokens + (now - when) * rate)
            if tokens < 1:
                self._buckets[key] = (tokens, now)
                return (1 - tokens) / rate if rate else math.inf
            self._buckets[key] = (tokens - 1, now)
            if len(self._buckets) > MAX_KEYS:
                self._forget_full(now, rate)
            return 0.0

    def _forget_full(self, now: float, rate: float) -> None:
        full = [
            key
            for key, (tokens, when) in self._buckets.items()
            if tokens + (now - when) * rate >= self.per_minute
        ]
        for key in full:
            del self._buckets[key]


_feedback_limiters: dict[int, RateLimiter] = {}
_feedback_guard = threading.Lock()


def feedback_limiter() -> RateLimiter:
    """The process's budget of feedback per client address, `FEEDBACK_PER_MINUTE`: HTTP
    requests and WebSocket feedback frames together (one limiter per value of the setting:
    only tests vary it)."""
    per_minute = settings.FEEDBACK_PER_MINUTE
    with _feedback_guard:
        if per_minute not in _feedback_limiters:
            _feedback_limiters[per_minute] = RateLimiter(per_minute)
        return _feedback_limiters[per_minute]


def address_busy_message(wait: float) -> str:
    return (
        f"This address sent more than {settings.FEEDBACK_PER_MINUTE} feedback requests in a "
        f"minute; send this one again in {max(1, math.ceil(wait))} s."
    )
