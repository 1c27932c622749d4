"""On SIGTERM (a deploy, a dyno restart), close every open WebSocket cleanly before daphne
stops, so clients see a close frame and reconnect, instead of a dropped socket (1006).

The code is 1000: 1001 "going away" would say it better, but autobahn (under daphne) lets a
server send only 1000 or 3000-4999.

daphne's reactor owns SIGTERM; the first connection wraps its handler: close every tracked
consumer (within CLOSE_TIMEOUT_S), then hand over to daphne's own shutdown.
"""

import asyncio
import logging
import os
import signal
import weakref

logger = logging.getLogger(__name__)

CLOSE_CODE = 1000
CLOSE_TIMEOUT_S = 5.0
_open: "weakref.WeakSet" = weakref.WeakSet()
_installed = False
_closing: set = set()  # keeps the closing task referenced until it ends


def track(consumer) -> None:
    """Remember an accepted consumer, and take over SIGTERM once, under a running daphne."""
    _open.add(consumer)
    _install()


def forget(consumer) -> None:
    """A consumer whose connection has closed."""
    _open.discard(consumer)


def _install() -> None:
    global _installed
    if _installed:
        return
    from twisted.internet import reactor

    if not reactor.running:  # Not under daphne (tests with a communicator, say).
        return
    _installed = True
    loop = asyncio.get_running_loop()
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum, frame):
        _closing.add(loop.create_task(_close_all_then(previous, signum, frame)))

    signal.signal(signal.SIGTERM, on_sigterm)


async def _close_all_then(previous, signum, frame) -> None:
    consumers = list(_open)
    logger.info("SIGTERM: closing %d WebSocket(s) with %d", len(consumers), CLOSE_CODE)
    if consumers:
        closes = [asyncio.ensure_future(consumer.close(code=CLOSE_CODE)) for consumer in consumers]
        await asyncio.wait(closes, timeout=CLOSE_TIMEOUT_S)
        await asyncio.sleep(0.3)  # let daphne write the close frames out
    if callable(previous):
        previous(signum, frame)
    else:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
