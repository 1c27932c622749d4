"""`register_model SLUG (--file PATH | --s3-key KEY) [--labels-file FILE] [--name NAME] [--activate]`."""

from django.core.management.base import BaseCommand, CommandError

from predictions import services
from predictions.models import ModelVersion, Project


class Command(BaseCommand):
    help = (
        "Validate a .keras model (a local file, or a key in the model bucket) and register it as "
        "the project's next version; prints the version number. Creates the project if needed."
    )

    def add_arguments(self, parser):
        parser.add_argument("slug", help="The project's slug.")
        source = parser.add_mutually_exclusive_group(required=True)
        source.add_argument("--file", help="A local .keras file to upload to the model storage.")
        source.add_argument("--s3-key", help="The key of a .keras object already in the bucket.")
        parser.add_argument("--labels-file", help="One label a line, in output order.")
        parser.add_argument("--name", help="The project's name, when it is created.")
        parser.add_argument("--activate", action="store_true", help="Put the version in service.")
        parser.add_argument(
            "--resize",
            choices=ModelVersion.Resize.values,
            default=ModelVersion.Resize.STRETCH,
            help="How images meet the input size: stretch (default) or fit_ink (drawings).",
        )
        parser.add_argument(
            "--scale",
            nargs=2,
            type=float,
            metavar=("MIN", "MAX"),
            default=(0.0, 1.0),
            help="The range pixel values are scaled to (default 0 1).",
        )

    def handle(
        self, *args, slug, file, s3_key, labels_file, name, activate, resize, scale, **options
    ):
        labels = _read_labels(labels_file) if labels_file else []
        project = Project.objects.filter(slug=slug).first()
        preprocessing = {"resize": resize, "scale_min": scale[0], "scale_max": scale[1]}
        try:
            if file:
                with open(file, "rb") as upload:
                    prepared = services.version_prepare(
                        upload=upload, labels=labels, **preprocessing
                    )
            else:
                prepared = services.version_prepare(s3_key=s3_key, labels=labels, **preprocessing)
        except OSError as exc:
            raise CommandError(f"Cannot read {file}: {exc.strerror}.") from None
        except services.ModelValidationError as exc:
            raise CommandError(f"The model did not validate: {exc}") from None
        if project is None:
            project = Project.objects.create(slug=slug, name=name or slug)
        version = services.version_create(project=project, prepared=prepared, activate=activate)
        self.stdout.write(str(version.number))


def _read_labels(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8") as handle:
            return [line.strip() for line in handle if line.strip()]
    except OSError as exc:
        raise CommandError(f"Cannot read the labels file {path}: {exc.strerror}.") from None
