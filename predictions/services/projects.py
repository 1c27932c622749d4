"""Writes on projects, and what their open connections hear about them.

Every process's connections to a project are in its channel-layer group: an activation is
announced there as `model.changed`, a saved project as `project.changed` (each connection
checks its token and origin again, and closes with 4403 when they no longer pass).
"""

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

from ..models import Project

logger = logging.getLogger(__name__)


def project_group_name(slug: str) -> str:
    """The channel-layer group of a project's connections (every process joins it)."""
    return f"project.{slug}"


def project_save(*, project: Project, previous_slug: str | None = None) -> None:
    """Save a project and, once committed, have its open connections check their access again
    (also those under its previous slug, which now finds no project)."""
    slugs = {project.slug, previous_slug or project.slug}
    with transaction.atomic():
        project.save()
        for slug in slugs:
            transaction.on_commit(lambda slug=slug: announce_project_change(slug))


def project_rotate_token(*, project: Project) -> str:
    """Give a project a new token, close the sockets opened with the old one, and return the
    new token: the caller shows it once (only its hash is kept)."""
    token = project.rotate_token()
    project_save(project=project)
    logger.info("rotated the token of %s", project.slug)
    return token


def announce_model_change(slug: str, version_id: int | None) -> None:
    _announce(slug, {"type": "model.changed", "version_id": version_id})


def announce_project_change(slug: str) -> None:
    _announce(slug, {"type": "project.changed"})


def _announce(slug: str, message: dict) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(project_group_name(slug), message)
    except Exception:  # The change is recorded; a layer outage must not fail the write.
        logger.exception("could not announce %s to %s", message["type"], slug)
