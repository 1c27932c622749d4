"""Projects and the model versions registered for them."""

import hashlib
import secrets
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.core.files.storage import storages
from django.core.validators import MaxValueValidator
from django.db import models

from .formats import ModelFormat
from .inference import spec


def model_storage():
    """The storage that holds model files: S3 when configured, a local folder otherwise."""
    return storages["models"]


def validate_origins(value: str) -> None:
    """One `scheme://host[:port]` a line, http or https, nothing after the host."""
    for line in value.split():
        parsed = urlsplit(line)
        if (
            parsed.scheme not in ("http", "https")
            or not parsed.netloc
            or parsed.path not in ("", "/")
        ):
            raise ValidationError(
                f"{line!r} is not a web origin: write it as https://host or https://host:port."
            )


def new_project_token() -> str:
    return secrets.token_urlsafe(24)


def hash_token(token: str) -> str:
    """A token's SHA-256, hex: what the database keeps. Tokens are 192 random bits, so a plain
    hash is enough (no salt or stretching: nothing to guess)."""
    return hashlib.sha256(token.encode()).hexdigest()


class Project(models.Model):
    slug = models.SlugField(unique=True)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    is_public = models.BooleanField(
        default=True,
        help_text="Public projects answer anyone; the others ask for their token.",
    )
    token_hash = models.CharField(
        max_length=64,
        blank=True,
        editable=False,
        help_text="SHA-256 of the token clients of a private project send (?token= or "
        "'Authorization: Bearer'); the token itself is shown once, when set.",
    )
    allowed_origins = models.TextField(
        blank=True,
        validators=[validate_origins],
        help_text="Web origins whose pages may open this project's WebSocket besides this "
        "server's own, one a line, e.g. https://app.example.com",
    )
    active_version = models.ForeignKey(
        "ModelVersion",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The version in service.",
    )
    activate_when_ready = models.ForeignKey(
        "ModelVersion",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The version to put in service once its check passes (the latest request).",
    )
    candidate = models.ForeignKey(
        "ModelVersion",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="A ready version that answers a share of the traffic beside the one in "
        "service (a canary): each new connection and each HTTP request is given it by that "
        "share and keeps it.",
    )
    candidate_share = models.PositiveSmallIntegerField(
        default=0,
        validators=[MaxValueValidator(100)],
        help_text="The candidate's share of new connections and requests, in percent (0-100).",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.name or self.slug

    def clean(self):
        """A candidate is another ready version of this project, given a share of traffic."""
        candidate = self.candidate
        if candidate is None:
            if self.candidate_share:
                raise ValidationError(
                    {"candidate_share": "Choose a candidate version, or set the share to 0."}
                )
            return
        if candidate.project_id != self.pk:
            raise ValidationError({"candidate": "The candidate must be a version of this project."})
        if candidate.status != ModelVersion.Status.READY:
            raise ValidationError(
                {"candidate": f"Version {candidate.number} is not ready ({candidate.status})."}
            )
        if candidate.pk == self.active_version_id:
            raise ValidationError(
                {"candidate": f"Version {candidate.number} is in service already."}
            )

    def rotate_token(self) -> str:
        """Give the project a new token (saved by the caller) and return it: the only time
        it is seen, since only its hash is kept."""
        token = new_project_token()
        self.token_hash = hash_token(token)
        return token


class ModelVersion(models.Model):
    class Source(models.TextChoices):
        UPLOAD = "upload", "uploaded file"
        S3_KEY = "s3_key", "existing object in the bucket"

    class Status(models.TextChoices):
        PENDING = "pending", "pending (waiting for a worker)"
        CHECKING = "checking", "checking"
        READY = "ready", "ready"
        FAILED = "failed", "failed"

    # Shared with the serving path, which reads them off a ModelSpec.
    Runtime = spec.Runtime
    Resize = spec.Resize
    Variant = spec.Variant

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    file = models.FileField(storage=model_storage, max_length=500)
    source = models.CharField(max_length=10, choices=Source.choices, default=Source.UPLOAD)
    original_name = models.CharField(
        max_length=500, blank=True, help_text="The file name as uploaded, or the S3 key."
    )
    format = models.CharField(
        max_length=10, choices=[(f.value, f.value) for f in ModelFormat], default=ModelFormat.KERAS
    )
    labels = models.JSONField(default=list, blank=True)
    sha256 = models.CharField(max_length=64, blank=True)
    size_bytes = models.BigIntegerField(default=0)
    input_shape = models.JSONField(
        default=list, blank=True, help_text="[height, width, channels], read from the model."
    )
    output_shape = models.JSONField(default=list)
    resize = models.CharField(max_length=10, choices=Resize.choices, default=Resize.STRETCH)
    scale_min = models.FloatField(default=0.0, help_text="Value the darkest pixel maps to.")
    scale_max = models.FloatField(default=1.0, help_text="Value the brightest pixel maps to.")
    runtime = models.CharField(max_length=10, choices=Runtime.choices, blank=True)
    compiled_file = models.CharField(
        max_length=500, blank=True, help_text="The LiteRT artifact in the model storage."
    )
    compiled_sha256 = models.CharField(max_length=64, blank=True)
    # Smaller LiteRT variants made by the check beside the float artifact, measured by the
    # registration job (services/variants.py): {"float": {"size_bytes", "ms_per_frame"},
    # "int8": {"file", "sha256", "size_bytes", "ms_per_frame", "agreement", "examples", "on",
    # "eligible"} or {"error"}, "float16": ...}.
    variants = models.JSONField(default=dict, blank=True)
    serve_variant = models.CharField(
        max_length=10,
        choices=Variant.choices,
        default=Variant.FLOAT,
        verbose_name="served variant",
        help_text="The artifact this version is served as. A smaller variant may be chosen only "
        "while its top-1 agrees with the float version's often enough (VARIANT_MIN_AGREEMENT).",
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    validation_message = models.TextField(blank=True)
    # The registration job: its task, how often a worker took it up, and the lease a worker
    # renews while it checks (a version `checking` past its lease has lost its worker).
    task_id = models.CharField(max_length=64, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    # Set by the registration job once the version is ready, when the project has enough
    # feedback: how it and the version then in service do on the same stored examples.
    feedback_score = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    activated_at = models.DateTimeField(
        null=True, blank=True, help_text="When it last went into service."
    )

    class Meta:
        ordering = ["project", "-number"]
        permissions = [("can_activate", "Can put a model version in service")]
        constraints = [
            models.UniqueConstraint(fields=["project", "number"], name="unique_version_number"),
        ]

    def __str__(self) -> str:
        return f"{self.project.slug} v{self.number}"


class FeedbackExample(models.Model):
    """An image someone labelled (a correction or a confirmation), kept in the model storage
    under `feedback/<slug>/<label>/<sha256>.<ext>`: one row and one file per image and label."""

    class Source(models.TextChoices):
        PAGE = "page", "demo page or WebSocket"
        API = "api", "HTTP API"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="feedback")
    label = models.CharField(max_length=200)
    predicted = models.CharField(max_length=200, blank=True)
    version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="feedback"
    )
    sha256 = models.CharField(max_length=64)
    storage_name = models.CharField(max_length=500, help_text="The file in the model storage.")
    image_format = models.CharField(max_length=10, help_text="The file's extension: png, jpg, ...")
    source = models.CharField(max_length=10, choices=Source.choices)
    reviewed = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "sha256", "label"], name="unique_feedback_example"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.project.slug}: {self.label} ({self.sha256[:12]})"


class UsageMinute(models.Model):
    """What one project's version answered in one minute, added up over every process: frames
    answered, errors by code, and latency as counts in fixed buckets (so rows of several
    processes add up). Version 0: frames answered with no version (no model in service)."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="usage")
    version_number = models.PositiveIntegerField(default=0)
    minute = models.DateTimeField()
    answered = models.PositiveIntegerField(default=0)
    errors = models.JSONField(default=dict, help_text="Error code -> count.")
    latency_buckets = models.JSONField(
        default=list, help_text="Counts of answered frames per latency bucket (see usage.py)."
    )

    class Meta:
        ordering = ["-minute"]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "version_number", "minute"], name="unique_usage_minute"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.project.slug} v{self.version_number} {self.minute:%Y-%m-%d %H:%M}"
