"""The jobs the worker runs (django-tasks, stored by django-tasks-db in the database)."""

from django_tasks import task

from .models import ModelVersion


@task()
def check_version(version_id: int) -> str:
    """Check a pending version's file and record the outcome; returns the version's status."""
    from .services import version_check

    version = ModelVersion.objects.filter(pk=version_id).first()
    if version is None:
        return "deleted"
    return version_check(version=version).status


@task()
def score_version(version_id: int) -> dict:
    """Score a ready version on its project's stored feedback again; returns the score ({} for
    a version deleted or no longer ready)."""
    from .services.scoring import version_score

    version = ModelVersion.objects.filter(pk=version_id, status=ModelVersion.Status.READY).first()
    if version is None:
        return {}
    return version_score(version=version)
