"""Admin: projects, and model versions registered by upload or by S3 key, validated on save."""

from django import forms
from django.contrib import admin, messages
from django.template.defaultfilters import filesizeformat
from django.urls import reverse
from django.utils.html import format_html

from . import services
from .models import ModelVersion, Project


class ModelVersionAddForm(forms.ModelForm):
    """Register a version: upload a `.keras` file or name an object already in the bucket."""

    upload = forms.FileField(
        required=False, label="Model file", help_text="A Keras 3 `.keras` file."
    )
    s3_key = forms.CharField(
        required=False,
        label="S3 key",
        max_length=500,
        help_text="Or the key of a `.keras` object already in the model bucket.",
    )
    labels_text = forms.CharField(
        required=False,
        label="Labels",
        widget=forms.Textarea(attrs={"rows": 6}),
        help_text="One label a line, in the order of the model's outputs. "
        "Leave empty for a model whose raw outputs are the answer.",
    )
    activate = forms.BooleanField(
        required=False, initial=True, help_text="Put this version in service once it validates."
    )

    class Meta:
        model = ModelVersion
        fields = ["project", "resize", "scale_min", "scale_max"]

    def clean(self):
        cleaned = super().clean()
        if self.errors:
            return cleaned
        upload, s3_key = cleaned.get("upload"), cleaned.get("s3_key", "").strip()
        if bool(upload) == bool(s3_key):
            raise forms.ValidationError("Upload a model file or give an S3 key (one of the two).")
        labels = [line.strip() for line in cleaned.get("labels_text", "").splitlines()]
        labels = [label for label in labels if label]
        try:
            self.prepared = services.version_prepare(
                upload=upload,
                s3_key=s3_key or None,
                labels=labels,
                resize=cleaned["resize"],
                scale_min=cleaned["scale_min"],
                scale_max=cleaned["scale_max"],
            )
        except services.ModelValidationError as exc:
            raise forms.ValidationError(f"The model did not validate: {exc}") from None
        return cleaned


class VersionColumns:
    """Columns shared by the version list and the project's version table."""

    @admin.display(boolean=True, description="active")
    def is_active(self, version):
        return version.project.active_version_id == version.pk

    @admin.display(description="labels")
    def labels_count(self, version):
        return len(version.labels)

    @admin.display(description="size", ordering="size_bytes")
    def size(self, version):
        return filesizeformat(version.size_bytes)

    @admin.display(description="sha256")
    def sha256_prefix(self, version):
        return version.sha256[:12]


class VersionInline(VersionColumns, admin.TabularInline):
    model = ModelVersion
    extra = 0
    can_delete = False
    show_change_link = True
    fields = [
        "number",
        "status",
        "is_active",
        "runtime",
        "input_shape",
        "labels_count",
        "size",
        "sha256_prefix",
        "validation_message",
    ]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "is_public", "active_version", "demo_link"]
    prepopulated_fields = {"slug": ["name"]}
    readonly_fields = ["active_version", "demo_link", "created_at", "updated_at"]
    inlines = [VersionInline]

    @admin.display(description="demo")
    def demo_link(self, project):
        if not project.pk:
            return "-"
        url = reverse("project-demo", args=[project.slug])
        if not project.is_public:
            url += f"?token={project.token}"
        return format_html('<a href="{}">try it</a>', url)


@admin.register(ModelVersion)
class ModelVersionAdmin(VersionColumns, admin.ModelAdmin):
    list_display = [
        "__str__",
        "status",
        "is_active",
        "runtime",
        "source",
        "input_shape",
        "labels_count",
        "size",
        "sha256_prefix",
        "created_at",
    ]
    list_filter = ["project", "status"]
    actions = ["activate_version", "revalidate_versions"]
    readonly_fields = [
        "project",
        "number",
        "file",
        "source",
        "labels",
        "sha256",
        "size_bytes",
        "input_shape",
        "output_shape",
        "resize",
        "scale_min",
        "scale_max",
        "runtime",
        "compiled_file",
        "compiled_sha256",
        "status",
        "validation_message",
        "created_at",
    ]

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = ModelVersionAddForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_readonly_fields(self, request, obj=None):
        return self.readonly_fields if obj else []

    def get_fields(self, request, obj=None):
        if obj is None:
            return [
                "project",
                "upload",
                "s3_key",
                "labels_text",
                "resize",
                "scale_min",
                "scale_max",
                "activate",
            ]
        return self.readonly_fields

    def save_form(self, request, form, change):
        if change:
            return super().save_form(request, form, change)
        data = form.cleaned_data
        return services.version_create(
            project=data["project"], prepared=form.prepared, activate=data["activate"]
        )

    def save_model(self, request, obj, form, change):
        if change:  # A new version was saved by `save_form` through the service.
            super().save_model(request, obj, form, change)

    def save_related(self, request, form, formsets, change):
        # A new version never went through `form.save()`, so the form has no `save_m2m`;
        # a version has no many-to-many fields or inlines to save anyway.
        if change:
            super().save_related(request, form, formsets, change)

    @admin.action(description="Activate the selected version")
    def activate_version(self, request, queryset):
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one version to activate.", messages.ERROR)
            return
        version = queryset.get()
        try:
            services.version_activate(version=version)
        except services.ModelValidationError as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return
        self.message_user(request, f"{version} is now in service.", messages.SUCCESS)

    @admin.action(description="Validate the selected versions again")
    def revalidate_versions(self, request, queryset):
        for version in queryset:
            if services.version_revalidate(version=version):
                self.message_user(request, f"{version}: {version.validation_message}")
            else:
                self.message_user(
                    request, f"{version}: {version.validation_message}", messages.ERROR
                )
