"""`export_feedback SLUG DIR [--reviewed]`: a project's feedback as an image dataset."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from predictions.models import Project
from predictions.services import feedback_export


class Command(BaseCommand):
    help = "Write a project's feedback examples as DIR/<label>/<sha256>.<ext> and DIR/manifest.csv."

    def add_arguments(self, parser):
        parser.add_argument("slug", help="The project's slug.")
        parser.add_argument("directory", help="Where to write the examples (made if missing).")
        parser.add_argument(
            "--reviewed", action="store_true", help="Only examples staff marked reviewed."
        )

    def handle(self, *args, slug, directory, reviewed, **options):
        project = Project.objects.filter(slug=slug).first()
        if project is None:
            raise CommandError(f"No project named {slug!r}.")
        count = feedback_export(project=project, target=Path(directory), reviewed_only=reviewed)
        self.stdout.write(f"Wrote {count} examples and manifest.csv to {directory}")
