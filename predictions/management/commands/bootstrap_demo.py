"""`bootstrap_demo`: create the `digits` demo project when it is missing; idempotent."""

import tempfile
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from predictions import services
from predictions.models import ModelVersion, Project

SLUG = "digits"


class Command(BaseCommand):
    help = "Train the digits demo model (scikit-learn's bundled data) and register it, if missing."

    def handle(self, *args, **options):
        project = Project.objects.filter(slug=SLUG).first()
        if project is not None and project.active_version_id:
            self.stdout.write(
                f"The {SLUG} demo is in place (version {project.active_version.number})."
            )
            return
        from predictions.demo import DIGIT_LABELS, train_digits_model

        if project is None:
            project = Project.objects.create(
                slug=SLUG,
                name="Handwritten digits",
                description="Draw a digit (0-9). A small CNN trained on scikit-learn's 8x8 digits.",
            )
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "digits.keras"
            accuracy = train_digits_model(path)
            self.stdout.write(f"Trained the digits model: held-out accuracy {accuracy:.3f}")
            try:
                # Checked here (a child process), as `register_model` does without --no-wait.
                with open(path, "rb") as upload:
                    version = services.version_register(
                        project=project,
                        upload=upload,
                        labels=DIGIT_LABELS,
                        activate=True,
                        resize=ModelVersion.Resize.FIT_INK,
                        scale_min=0.0,
                        scale_max=16.0,
                    )
            except services.ModelValidationError as exc:
                raise CommandError(f"The demo model did not validate: {exc}") from None
        self.stdout.write(f"Registered and activated {version}.")
