"""Reads: projects and their active versions, as plain snapshots the serving path can hold."""

import random
import secrets
from dataclasses import dataclass, replace
from datetime import datetime

from django.db.models import Count, F, Q

from .inference.spec import ModelSpec, Variant
from .models import FeedbackExample, ModelVersion, Project, hash_token
from .origins import normalise


@dataclass(frozen=True)
class ProjectInfo:
    slug: str
    name: str
    description: str
    is_public: bool
    token_hash: str
    model: ModelSpec | None
    allowed_origins: tuple[str, ...] = ()
    updated_at: datetime | None = None
    candidate: ModelSpec | None = None  # a canary: answers `candidate_share` % of newcomers
    candidate_share: int = 0

    def token_matches(self, token: str | None) -> bool:
        """Public projects take anyone; private ones need the token whose hash they keep
        (none matches while a private project has no token set)."""
        if self.is_public:
            return True
        if not token or not self.token_hash:
            return False
        return secrets.compare_digest(hash_token(token).encode(), self.token_hash.encode())

    def assigned(self, *, draw=random.random) -> "ProjectInfo":
        """The project as one new connection or request sees it: its `model` is the candidate
        for `candidate_share` percent of draws, the version in service otherwise."""
        if self.candidate is not None and draw() * 100 < self.candidate_share:
            return replace(self, model=self.candidate)
        return self

    def following(self, version_id: int | None) -> "ProjectInfo":
        """The project as a connection on `version_id` sees it after a change: it keeps that
        version while it is the one in service or the candidate, and moves to the one in
        service otherwise."""
        if self.candidate is not None and version_id == self.candidate.version_id:
            return replace(self, model=self.candidate)
        return self

    def as_json(self) -> dict:
        return {
            "slug": self.slug,
            "name": self.name,
            "description": self.description,
            "model": self.model.meta() if self.model else None,
        }


def served_variant(version: ModelVersion) -> str:
    """The variant a version is served as: the one chosen for it (`serve_variant`) while its
    measures say it agrees with the float artifact (`eligible`), the float artifact otherwise."""
    chosen = version.serve_variant
    if chosen != Variant.FLOAT and version.variants.get(chosen, {}).get("eligible") is True:
        return chosen
    return Variant.FLOAT.value


def version_spec(version: ModelVersion, *, variant: str | None = None) -> ModelSpec:
    """The version as the serving path runs it: its artifact is the `variant`'s (by default
    the one it is served as, `served_variant`)."""
    variant = variant or served_variant(version)
    compiled_file, compiled_sha256 = version.compiled_file, version.compiled_sha256
    if variant != Variant.FLOAT:
        artifact = version.variants[variant]
        compiled_file, compiled_sha256 = artifact["file"], artifact["sha256"]
    return ModelSpec(
        version_id=version.pk,
        number=version.number,
        file_name=version.file.name,
        sha256=version.sha256,
        input_shape=tuple(version.input_shape),
        labels=tuple(version.labels),
        resize=version.resize,
        scale_min=version.scale_min,
        scale_max=version.scale_max,
        runtime=version.runtime,
        format=version.format,
        compiled_file=compiled_file,
        compiled_sha256=compiled_sha256,
    )


def same_artifact(a: ModelSpec | None, b: ModelSpec | None) -> bool:
    """Whether two snapshots run the same artifact: the same version served as the same
    variant (a variant chosen for the version in service changes the artifact, not the
    version)."""
    if a is None or b is None:
        return a is b
    return (a.version_id, a.compiled_sha256) == (b.version_id, b.compiled_sha256)


def project_info(project: Project) -> ProjectInfo:
    """A snapshot of the project with its version in service and its candidate (a candidate
    is one only while it is ready, not in service, and has a share)."""
    version = project.active_version
    candidate = project.candidate
    if (
        candidate is None
        or candidate.status != ModelVersion.Status.READY
        or candidate.pk == project.active_version_id
        or not project.candidate_share
    ):
        candidate = None
    return ProjectInfo(
        slug=project.slug,
        name=project.name,
        description=project.description,
        is_public=project.is_public,
        token_hash=project.token_hash,
        model=version_spec(version) if version else None,
        allowed_origins=tuple(normalise(origin) for origin in project.allowed_origins.split()),
        updated_at=project.updated_at,
        candidate=version_spec(candidate) if candidate else None,
        candidate_share=project.candidate_share if candidate else 0,
    )


def project_get_info(*, slug: str) -> ProjectInfo | None:
    project = (
        Project.objects.select_related("active_version", "candidate").filter(slug=slug).first()
    )
    return project_info(project) if project else None


def project_list_public() -> list[ProjectInfo]:
    projects = Project.objects.select_related("active_version", "candidate").filter(is_public=True)
    return [project_info(project) for project in projects]


@dataclass(frozen=True)
class ProjectCard:
    """What the gallery shows of one public project and its version in service."""

    slug: str
    name: str
    description: str
    version: int | None  # the number of the version in service; None: no model yet
    resize: str = ""
    labels: tuple[str, ...] = ()
    updated_at: datetime | None = None  # when the version in service went into service

    LABELS_SHOWN = 5

    @property
    def kind(self) -> str:
        """The input the model takes: `drawing` when it is fed drawings (cropped to their ink),
        `photo` otherwise; empty while the project has no model."""
        if self.version is None:
            return ""
        return "drawing" if self.resize == ModelVersion.Resize.FIT_INK else "photo"

    @property
    def labels_shown(self) -> tuple[str, ...]:
        return self.labels[: self.LABELS_SHOWN]

    @property
    def labels_more(self) -> int:
        return max(0, len(self.labels) - self.LABELS_SHOWN)


def project_gallery() -> list[ProjectCard]:
    """The public projects as gallery cards, in one query (only the columns a card shows)."""
    projects = (
        Project.objects.filter(is_public=True)
        .select_related("active_version")
        .only(
            "slug",
            "name",
            "description",
            "active_version__number",
            "active_version__resize",
            "active_version__labels",
            "active_version__created_at",
            "active_version__activated_at",
        )
    )
    cards = []
    for project in projects:
        version = project.active_version
        cards.append(
            ProjectCard(
                slug=project.slug,
                name=project.name,
                description=project.description,
                version=version.number if version else None,
                resize=version.resize if version else "",
                labels=tuple(version.labels) if version else (),
                # Versions activated before activated_at existed: their registration.
                updated_at=(version.activated_at or version.created_at) if version else None,
            )
        )
    return cards


def project_next_version_number(project: Project) -> int:
    latest = project.versions.order_by("-number").values_list("number", flat=True).first()
    return (latest or 0) + 1


class AmbiguousModelName(LookupError):
    """A name of the original API that matches the active model files of several projects."""


def project_find_by_model_name(*, name: str) -> ProjectInfo | None:
    """The project that a name of the original API means: a project slug, else the one project
    whose active version's file has that name (its storage key or the name it was uploaded
    under, i.e. the file name or the S3 key; in full or its last `/` part).

    None when nothing matches; raises AmbiguousModelName when several projects' files do.
    """
    project = project_get_info(slug=name)
    if project is not None:
        return project
    basename = name.rsplit("/", 1)[-1]
    # A superset (LIKE ignores case on SQLite): the exact comparison is made below.
    candidates = Project.objects.select_related("active_version", "candidate").filter(
        Q(active_version__file=name)
        | Q(active_version__original_name=name)
        | Q(active_version__file__endswith=f"/{basename}")
        | Q(active_version__original_name__endswith=f"/{basename}")
    )
    matches = []
    for candidate in candidates:
        version = candidate.active_version
        for value in (version.file.name, version.original_name):
            if value and name in (value, value.rsplit("/", 1)[-1]):
                matches.append(candidate)
                break
    if len(matches) > 1:
        raise AmbiguousModelName(
            f"The name {name!r} matches the models of several projects; "
            "use the project's slug instead."
        )
    return project_info(matches[0]) if matches else None


def _judged_feedback(slug: str):
    """Feedback that says what a version answered (`predicted`) and what was right (`label`)."""
    return FeedbackExample.objects.filter(project__slug=slug, version__isnull=False).exclude(
        predicted=""
    )


def feedback_accuracy(*, slug: str) -> dict[str, dict]:
    """Per version number (a string, as JSON keys are): how often its answer was the label
    people gave, `{"agreed": n, "total": m, "share": n / m}`."""
    rows = (
        _judged_feedback(slug)
        .values("version__number")
        .annotate(total=Count("id"), agreed=Count("id", filter=Q(predicted=F("label"))))
        .order_by("version__number")
    )
    return {
        str(row["version__number"]): {
            "agreed": row["agreed"],
            "total": row["total"],
            "share": round(row["agreed"] / row["total"], 4),
        }
        for row in rows
    }


def feedback_confusion(*, slug: str, version_number: int) -> list[tuple[str, str, int]]:
    """(label given, label predicted, count) for one version, the most frequent first."""
    rows = (
        _judged_feedback(slug)
        .filter(version__number=version_number)
        .values_list("label", "predicted")
        .annotate(count=Count("id"))
        .order_by("-count", "label", "predicted")
    )
    return list(rows)
