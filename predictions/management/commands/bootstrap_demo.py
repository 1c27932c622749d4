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

        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "digits.keras"
            accuracy = train_digits_model(path)
            self.stdout.write(f"Trained the digits model: held-out accuracy {accuracy:.3f}")
            try:
                with open(path, "rb") as upload:
                    prepared = services.version_prepare(
                        upload=upload,
                        labels=DIGIT_LABELS,
                        resize=ModelVersion.Resize.FIT_INK,
                        scale_min=0.0,
                        scale_max=16.0,
                    )
            except services.ModelValidationError as exc:
                raise CommandError(f"The demo model did not validate: {exc}") from None
        if project is None:
            project = Project.objects.create(
                slug=SLUG,
                name="Handwritten digits",
                description="Draw a digit (0-9). A small CNN trained on scikit-learn's 8x8 digits.",
            )
        version = services.version_create(project=project, prepared=prepared, activate=True)
        self.stdout.write(f"Registered and activated {version}.")
