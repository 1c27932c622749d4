"""A canary: a candidate version answers a share of a project's new connections and requests
beside the version in service, until it is promoted or the canary is ended.

Connections keep the version they were given; a change reaches them through the project's
group (`model_changed` to those whose version no longer serves, see `ProjectInfo.following`).
"""

import logging

from django.db import transaction

from ..inference.errors import ModelValidationError
from ..models import Project
from .projects import project_save
from .versions import require_activate_permission, version_activate

logger = logging.getLogger(__name__)


def canary_promote(*, project: Project, actor=None) -> None:
    """Put the candidate in service (an activation like any other: the connections on the
    version that served before hear `model_changed`) and end the canary."""
    require_activate_permission(actor)
    if project.candidate is None:
        raise ModelValidationError(f"{project} has no candidate version to promote.")
    version_activate(version=project.candidate, actor=actor)
    logger.info("promoted the candidate of %s", project.slug)


def canary_end(*, project: Project, actor=None) -> None:
    """Stop giving the candidate traffic; its connections move back to the version in service
    and hear `model_changed`."""
    require_activate_permission(actor)
    with transaction.atomic():
        project.candidate = None
        project.candidate_share = 0
        project_save(project=project)
    logger.info("ended the canary of %s", project.slug)
