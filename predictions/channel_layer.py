"""A Redis channel layer that outlives a Redis restart.

channels_redis raises out of `receive()` when Redis goes away, which ends every consumer of
the process (their sockets close with 1011), and a restarted Redis has forgotten the groups.
Here a consumer's `receive()` waits and retries instead (backoff up to RETRY_MAX_S), and once
Redis answers again it puts the channel back in the groups it had joined, so model swaps reach
every process again without clients reconnecting.
"""

import asyncio
import logging
from collections import defaultdict

from channels_redis.core import RedisChannelLayer
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

logger = logging.getLogger(__name__)

RETRY_FIRST_S = 0.5
RETRY_MAX_S = 10.0
REDIS_GONE = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)


class ResilientRedisChannelLayer(RedisChannelLayer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._groups_of: defaultdict[str, set[str]] = defaultdict(set)

    async def group_add(self, group, channel):
        self._groups_of[channel].add(group)
        await super().group_add(group, channel)

    async def group_discard(self, group, channel):
        self._groups_of[channel].discard(group)
        if not self._groups_of[channel]:
            del self._groups_of[channel]
        await super().group_discard(group, channel)

    async def receive(self, channel):
        delay = RETRY_FIRST_S
        lost = False
        while True:
            try:
                if lost:
                    for group in list(self._groups_of.get(channel, ())):
                        await super().group_add(group, channel)
                    logger.info("Redis is back: %s rejoined its groups", channel)
                return await super().receive(channel)
            except REDIS_GONE as exc:
                if not lost:
                    logger.warning("Redis unreachable (%s); retrying", exc)
                lost = True
                await asyncio.sleep(delay)
                delay = min(RETRY_MAX_S, delay * 2)
