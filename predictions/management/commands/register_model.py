"""`register_model SLUG (--file PATH | --s3-key KEY) [--labels-file FILE] [--name NAME]
[--activate] [--no-wait]`."""

from django.core.management.base import BaseCommand, CommandError

from predictions import services
from predictions.formats import ACCEPTED_FORMATS_TEXT
from predictions.inference.errors import one_line
from predictions.models import ModelVersion, Project


class Command(BaseCommand):
    help = (
        f"Register a model ({ACCEPTED_FORMATS_TEXT}; a local file, or a key in the model bucket) "
        "as the project's next version and print its number. Creates the project if needed. "
        "Checks it here and waits, or with --no-wait queues the check for the worker."
    )

    def add_arguments(self, parser):
        parser.add_argument("slug", help="The project's slug.")
        source = parser.add_mutually_exclusive_group(required=True)
        source.add_argument("--file", help="A local model file to upload to the model storage.")
        source.add_argument("--s3-key", help="The key of a model object already in the bucket.")
        parser.add_argument("--labels-file", help="One label a line, in output order.")
        parser.add_argument("--name", help="The project's name, when it is created.")
        parser.add_argument(
            "--activate", action="store_true", help="Put the version in service once it is ready."
        )
        parser.add_argument(
            "--no-wait",
            action="store_true",
            help="Queue the check for the worker and return at once (the version is pending).",
        )
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

    def handle(self, *args, slug, file, s3_key, labels_file, name, activate, no_wait, **options):
        labels = _read_labels(labels_file) if labels_file else []
        try:
            services.labels_check(labels)
            if file:
                with open(file, "rb") as upload:
                    source = services.version_source(upload=upload, upload_name=file)
            else:
                source = services.version_source(s3_key=s3_key)
            project, _ = Project.objects.get_or_create(slug=slug, defaults={"name": name or slug})
            version = services.version_submit(
                project=project,
                source=source,
                labels=labels,
                activate=activate,
                queue=no_wait,
                resize=options["resize"],
                scale_min=options["scale"][0],
                scale_max=options["scale"][1],
            )
        except OSError as exc:
            raise CommandError(f"Cannot read {file}: {exc.strerror}.") from None
        except services.ModelValidationError as exc:
            raise CommandError(f"The model was refused: {one_line(exc)}") from None
        self.stdout.write(str(version.number))
        if no_wait:
            return
        version = services.version_check(version=version)
        if version.status != ModelVersion.Status.READY:
            raise CommandError(
                f"Version {version.number} failed its check: {one_line(version.validation_message)}"
            )


def _read_labels(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8") as handle:
            return [line.strip() for line in handle if line.strip()]
    except OSError as exc:
        raise CommandError(f"Cannot read the labels file {path}: {exc.strerror}.") from None
