"""`score_version SLUG NUMBER`: score a ready version on its project's stored feedback."""

import json

from django.core.management.base import BaseCommand, CommandError

from predictions.models import ModelVersion, Project
from predictions.services.scoring import version_score


class Command(BaseCommand):
    help = (
        "Score a ready version on the project's stored feedback beside the version in service, "
        "keep the score on the version and print it as one JSON line."
    )

    def add_arguments(self, parser):
        parser.add_argument("slug", help="The project's slug.")
        parser.add_argument("number", type=int, help="The version's number.")

    def handle(self, *args, slug, number, **options):
        if not Project.objects.filter(slug=slug).exists():
            raise CommandError(f"No project named {slug!r}.")
        version = ModelVersion.objects.filter(project__slug=slug, number=number).first()
        if version is None:
            raise CommandError(f"The project {slug!r} has no version {number}.")
        if version.status != ModelVersion.Status.READY:
            raise CommandError(
                f"Version {number} is {version.status}: only a ready version is scored."
            )
        score = version_score(version=version)
        self.stdout.write(json.dumps(score))
        if "error" in score:
            raise CommandError(f"Scoring failed: {score['error']}")
