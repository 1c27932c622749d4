"""Activations made by another process reach this process's connections, also without Redis.

With Redis every process shares the channel layer, and whoever activates a version (the admin
of any web process, the worker) announces it to all. The in-memory layer (`make run`) reaches
only its own process, so a web process on it watches the database instead: every
`MODEL_SWAP_POLL_SECONDS` it compares each project's active version and canary (and the variant
each is served as) with the last it saw and announces the changes on its own layer.
"""

import asyncio
import logging

from channels.db import database_sync_to_async
from channels.layers import InMemoryChannelLayer, get_channel_layer
from django.conf import settings

from .models import Project
from .services import project_group_name

logger = logging.getLogger(__name__)

_watcher: asyncio.Task | None = None


def watch_activations() -> None:
    """Start the process's watcher (once, on the running loop) when the layer is in-memory."""
    global _watcher
    if not isinstance(get_channel_layer(), InMemoryChannelLayer):
        return
    if _watcher is None or _watcher.done():
        _watcher = asyncio.get_running_loop().create_task(_watch())


def _active_versions() -> dict[str, tuple]:
    """Each project's version in service and its canary (candidate, share), and the variant
    each of the two is served as."""
    rows = Project.objects.values_list(
        "slug",
        "active_version_id",
        "candidate_id",
        "candidate_share",
        "active_version__serve_variant",
        "candidate__serve_variant",
    )
    return {slug: tuple(versions) for slug, *versions in rows}


async def _watch() -> None:
    layer = get_channel_layer()
    seen = await database_sync_to_async(_active_versions)()
    while True:
        await asyncio.sleep(settings.MODEL_SWAP_POLL_SECONDS)
        try:
            current = await database_sync_to_async(_active_versions)()
        except Exception:  # The database is away for a moment: look again next round.
            logger.exception("could not read the active versions")
            continue
        for slug, versions in current.items():
            if slug in seen and seen[slug] != versions:
                await layer.group_send(
                    project_group_name(slug), {"type": "model.changed", "version_id": versions[0]}
                )
        seen = current
