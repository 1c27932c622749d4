"""Reads: projects and their active versions, as plain snapshots the serving path can hold."""

import secrets
from dataclasses import dataclass
from datetime import datetime

from .inference.spec import ModelSpec
from .models import ModelVersion, Project
from .origins import normalise


@dataclass(frozen=True)
class ProjectInfo:
    slug: str
    name: str
    description: str
    is_public: bool
    token: str
    model: ModelSpec | None
    allowed_origins: tuple[str, ...] = ()
    updated_at: datetime | None = None

    def token_matches(self, token: str | None) -> bool:
        """Public projects take anyone; private ones need their exact token."""
        if self.is_public:
            return True
        return bool(token) and secrets.compare_digest(token.encode(), self.token.encode())

    def as_json(self) -> dict:
        return {
            "slug": self.slug,
            "name": self.name,
            "description": self.description,
            "model": self.model.meta() if self.model else None,
        }


def version_spec(version: ModelVersion) -> ModelSpec:
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
        compiled_file=version.compiled_file,
        compiled_sha256=version.compiled_sha256,
    )


def project_info(project: Project) -> ProjectInfo:
    version = project.active_version
    return ProjectInfo(
        slug=project.slug,
        name=project.name,
        description=project.description,
        is_public=project.is_public,
        token=project.token,
        model=version_spec(version) if version else None,
        allowed_origins=tuple(normalise(origin) for origin in project.allowed_origins.split()),
        updated_at=project.updated_at,
    )


def project_get_info(*, slug: str) -> ProjectInfo | None:
    project = Project.objects.select_related("active_version").filter(slug=slug).first()
    return project_info(project) if project else None


def project_list_public() -> list[ProjectInfo]:
    projects = Project.objects.select_related("active_version").filter(is_public=True)
    return [project_info(project) for project in projects]


def project_next_version_number(project: Project) -> int:
    latest = project.versions.order_by("-number").values_list("number", flat=True).first()
    return (latest or 0) + 1
