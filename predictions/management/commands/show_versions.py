"""`show_versions SLUG`: one JSON object a line per version, newest first."""

import json

from django.core.management.base import BaseCommand, CommandError

from predictions.models import Project
from predictions.services import registrations_reap


class Command(BaseCommand):
    help = 'Print each version of a project as {"version", "status", "active", ...}, one a line.'

    def add_arguments(self, parser):
        parser.add_argument("slug", help="The project's slug.")

    def handle(self, *args, slug, **options):
        project = Project.objects.filter(slug=slug).first()
        if project is None:
            raise CommandError(f"No project named {slug!r}.")
        registrations_reap()  # a check whose worker died is not shown as `checking`
        for version in project.versions.order_by("-number"):
            line = {
                "version": version.number,
                "status": version.status,
                "active": version.pk == project.active_version_id,
                "runtime": version.runtime if version.status == version.Status.READY else "",
                "format": version.format,
                "message": version.validation_message,
            }
            self.stdout.write(json.dumps(line))
