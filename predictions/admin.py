"""Admin: projects, model versions registered by upload or by S3 key (validated on save), and
the feedback examples people sent."""

import tempfile
import zipfile
from datetime import timedelta

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import FileResponse, Http404, HttpResponseRedirect, JsonResponse
from django.template.defaultfilters import filesizeformat
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.text import Truncator

from . import selectors, services, tasks, usage, usage_charts
from .formats import ACCEPTED_FORMATS_TEXT, ModelFormat
from .models import FeedbackExample, ModelVersion, Project, hash_token, model_storage

MESSAGE_CHARS = 90  # of a version's message in the version list


class ModelVersionAddForm(forms.ModelForm):
    """Register a version: upload a model file or name an object already in the bucket. Saving
    stores it as `pending` at once; the worker checks it."""

    upload = forms.FileField(
        required=False, label="Model file", help_text=f"{ACCEPTED_FORMATS_TEXT.capitalize()}."
    )
    s3_key = forms.CharField(
        required=False,
        label="S3 key",
        max_length=500,
        help_text="Or the key of a model object already in the model bucket.",
    )
    labels_text = forms.CharField(
        required=False,
        label="Labels",
        widget=forms.Textarea(attrs={"rows": 6}),
        help_text="One label a line, in the order of the model's outputs. "
        "Leave empty for a model whose raw outputs are the answer.",
    )
    activate = forms.BooleanField(
        required=False,
        initial=True,
        help_text="Put this version in service once its check passes.",
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
        cleaned["labels"] = [label for label in labels if label]
        try:
            services.labels_check(cleaned["labels"])
            # Cheap: the upload's format and config are vetted; nothing is loaded here.
            self.source = services.version_source(
                upload=upload,
                upload_name=upload.name if upload else "",
                s3_key=s3_key or None,
            )
        except services.ModelValidationError as exc:
            raise forms.ValidationError(f"The model was refused: {exc}") from None
        return cleaned


class ModelVersionChangeForm(forms.ModelForm):
    """A version's page: the one field that changes there is the variant it is served as (for
    staff with the activate permission), and only to one that agrees with the float version."""

    class Meta:
        model = ModelVersion
        fields = ["serve_variant"]

    def clean_serve_variant(self) -> str:
        variant = self.cleaned_data["serve_variant"]
        try:
            services.variant_check(self.instance, variant)
        except services.ModelValidationError as exc:
            raise forms.ValidationError(str(exc)) from None
        return variant


class VersionColumns:
    """Columns shared by the version list and the project's version table; status, message
    and "active" update in place while a check runs (predictions/admin_status.js)."""

    @admin.display(description="active")
    def is_active(self, version):
        return _live_cell(version, "active", _active_text(version))

    @admin.display(description="status", ordering="status")
    def status_cell(self, version):
        return _live_cell(version, "status", version.status)

    @admin.display(description="message")
    def message_cell(self, version):
        return _live_cell(version, "message", version.validation_message)

    @admin.display(description="message")
    def short_message_cell(self, version):
        """The message's start in the list (the whole text is its tooltip and on its page)."""
        return _live_cell(version, "message", version.validation_message, limit=MESSAGE_CHARS)

    @admin.display(description="score on stored feedback")
    def feedback_score_cell(self, version):
        return _score_text(version.feedback_score)

    @admin.display(description="runtime", ordering="runtime")
    def runtime_cell(self, version):
        return _live_cell(version, "runtime", version.runtime)

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
        "status_cell",
        "is_active",
        "format",
        "runtime_cell",
        "input_shape",
        "labels_count",
        "size",
        "sha256_prefix",
        "feedback_score_cell",
        "short_message_cell",
    ]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False


class ReapOnView:
    """Pages that show versions first take up checks whose worker died, so that a version
    shown `checking` has a live worker on it even while no worker runs to reap it."""

    def changelist_view(self, request, extra_context=None):
        services.registrations_reap()
        return super().changelist_view(request, extra_context)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        services.registrations_reap()
        return super().change_view(request, object_id, form_url, extra_context)


class ProjectForm(forms.ModelForm):
    """The project's fields, and a write-only token: typed once, kept as its hash."""

    token = forms.CharField(
        required=False,
        strip=True,
        label="New token",
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Leave empty to keep the current token. A project saved without one gets a "
        "generated token, shown once.",
    )

    class Meta:
        model = Project
        fields = [
            "slug", "name", "description", "is_public", "allowed_origins",
            "candidate", "candidate_share",
        ]  # fmt: skip

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if "candidate_share" in self.fields:  # left out: no share (forms posted by scripts)
            self.fields["candidate_share"].required = False
        if "candidate" in self.fields:  # only this project's ready versions may be candidates
            versions = ModelVersion.objects.filter(
                project_id=self.instance.pk, status=ModelVersion.Status.READY
            )
            self.fields["candidate"].queryset = versions.exclude(pk=self.instance.active_version_id)

    def clean_candidate_share(self) -> int:
        return self.cleaned_data.get("candidate_share") or 0


@admin.register(Project)
class ProjectAdmin(ReapOnView, admin.ModelAdmin):
    form = ProjectForm
    list_display = ["slug", "name", "is_public", "active_version", "canary_state", "demo_link"]
    list_select_related = ["active_version", "candidate"]
    prepopulated_fields = {"slug": ["name"]}
    readonly_fields = [
        "token_state",
        "canary",
        "accuracy",
        "active_version",
        "activate_when_ready",
        "demo_link",
        "created_at",
        "updated_at",
    ]
    inlines = [VersionInline]
    actions = [
        "rotate_tokens",
        "promote_candidate",
        "end_canary",
        "download_feedback",
        "download_reviewed_feedback",
    ]

    class Media:
        js = ["predictions/admin_status.js"]

    def get_readonly_fields(self, request, obj=None):
        """The canary's fields put a version in service for some: the activate permission."""
        if self.has_activate_permission(request):
            return self.readonly_fields
        return [*self.readonly_fields, "candidate", "candidate_share"]

    def has_activate_permission(self, request) -> bool:
        return request.user.has_perm(services.ACTIVATE_PERMISSION)

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        """A project's page also shows its usage over the last 7 days, per version
        (templates/admin/predictions/project/change_form.html); read only when the page is
        drawn, not on a save that redirects."""
        if obj is not None and obj.pk:
            now = timezone.now()
            since, until = usage.usage_window(now=now)
            window = usage.usage_series(project=obj, since=since, until=until)
            roles = {}
            if obj.candidate_id is not None:
                roles[obj.candidate.number] = "candidate"
            if obj.active_version_id is not None:
                roles[obj.active_version.number] = "in service"
            context["usage"] = usage_charts.usage_section(window, now=now, roles=roles)
        return super().render_change_form(request, context, add, change, form_url, obj)

    @admin.display(description="canary")
    def canary_state(self, project):
        if project.candidate_id is None:
            return "-"
        return f"v{project.candidate.number} at {project.candidate_share}%"

    @admin.display(description="canary: the versions side by side")
    def canary(self, project):
        """The version in service and the candidate: their traffic share, frames answered in
        the last hour and day, and their accuracy on feedback."""
        if not project.pk or project.active_version_id is None:
            return "-"
        versions = [(project.active_version, 100 - project.candidate_share, "in service")]
        if project.candidate_id is not None:
            versions.append((project.candidate, project.candidate_share, "candidate"))
        accuracy = selectors.feedback_accuracy(slug=project.slug)
        now = timezone.now()
        hour = usage.usage_by_version(project=project, since=now - timedelta(hours=1))
        day = usage.usage_by_version(project=project, since=now - timedelta(days=1))
        rows = []
        for version, share, role in versions:
            judged = accuracy.get(str(version.number))
            rows.append(
                (
                    f"v{version.number}",
                    role,
                    f"{share}%",
                    hour.get(version.number, {}).get("answered", 0),
                    day.get(version.number, {}).get("answered", 0),
                    f"{judged['share']:.0%} ({judged['agreed']} of {judged['total']})"
                    if judged
                    else "no feedback yet",
                )
            )
        return format_html(
            '<table class="canary"><tr><th>version</th><th>role</th><th>share of new '
            "traffic</th><th>frames, last hour</th><th>last day</th><th>accuracy on feedback"
            "</th></tr>{}</table>",
            format_html_join("", "<tr>" + "<td>{}</td>" * 6 + "</tr>", rows),
        )

    @admin.display(description="token")
    def token_state(self, project):
        if project.token_hash:
            return "Set (only its hash is kept). Lost it? Use the action “Rotate the token”."
        return "None yet: one is made when the project is saved."

    @admin.display(description="accuracy on feedback")
    def accuracy(self, project):
        """Each version's share of feedback that agreed with its answer, and the active
        version's confusions (label given, label predicted)."""
        if not project.pk:
            return "-"
        shares = selectors.feedback_accuracy(slug=project.slug)
        if not shares:
            return "No feedback that names a version's answer yet."
        rows = format_html_join(
            "",
            "<tr><td>v{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            ((v, s["agreed"], s["total"], f"{s['share']:.0%}") for v, s in shares.items()),
        )
        table = format_html(
            '<table class="accuracy"><tr><th>version</th><th>agreed</th><th>of</th>'
            "<th>share</th></tr>{}</table>",
            rows,
        )
        active = project.active_version
        if active is None:
            return table
        confusions = [
            row
            for row in selectors.feedback_confusion(slug=project.slug, version_number=active.number)
            if row[0] != row[1]
        ]
        if not confusions:
            return table
        wrong = format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td></tr>", confusions[:20])
        return format_html(
            '{}<p>v{} answered wrongly:</p><table class="confusion"><tr><th>given</th>'
            "<th>predicted</th><th>times</th></tr>{}</table>",
            table,
            active.number,
            wrong,
        )

    @admin.display(description="demo")
    def demo_link(self, project):
        if not project.pk:
            return "-"
        # Never with the token: links end up in access logs and browser histories (the demo
        # page of a private project asks for it).
        url = reverse("project-demo", args=[project.slug])
        return format_html('<a href="{}">try it</a>', url)

    def save_model(self, request, obj, form, change):
        """Save through the service, so open sockets whose token or origin no longer pass are
        closed; a project without a token gets one, shown this once."""
        typed = form.cleaned_data.get("token")
        if typed:
            obj.token_hash = hash_token(typed)
        new_token = None if obj.token_hash else obj.rotate_token()
        previous_slug = form.initial.get("slug") if change else None
        services.project_save(project=obj, previous_slug=previous_slug)
        if new_token:
            self._show_token_once(request, obj, new_token)

    @admin.action(
        description="Rotate the token of the selected projects (closes their private sockets)",
        permissions=["change"],
    )
    def rotate_tokens(self, request, queryset):
        for project in queryset:
            token = services.project_rotate_token(project=project)
            self._show_token_once(request, project, token)

    @admin.action(
        description="Promote the candidate (put it in service; ends the canary)",
        permissions=["activate"],
    )
    def promote_candidate(self, request, queryset):
        self._each_canary(request, queryset, services.canary_promote, "now serves v{}")

    @admin.action(
        description="End the canary (its connections go back to the version in service)",
        permissions=["activate"],
    )
    def end_canary(self, request, queryset):
        self._each_canary(request, queryset, services.canary_end, "no longer tries v{}")

    def _each_canary(self, request, queryset, change, done: str) -> None:
        for project in queryset.select_related("candidate"):
            if project.candidate is None:
                self.message_user(request, f"{project.slug} has no candidate.", messages.ERROR)
                continue
            number = project.candidate.number
            change(project=project, actor=request.user)
            self.message_user(request, f"{project.slug} {done.format(number)}.", messages.SUCCESS)

    def has_feedback_permission(self, request) -> bool:
        return request.user.has_perm("predictions.view_feedbackexample")

    @admin.action(description="Download the project's feedback as a zip", permissions=["feedback"])
    def download_feedback(self, request, queryset):
        return self._feedback_zip(request, queryset, reviewed_only=False)

    @admin.action(
        description="Download the project's reviewed feedback as a zip", permissions=["feedback"]
    )
    def download_reviewed_feedback(self, request, queryset):
        return self._feedback_zip(request, queryset, reviewed_only=True)

    def _feedback_zip(self, request, queryset, *, reviewed_only: bool):
        """The layout `export_feedback` writes (`<label>/<sha256>.<ext>`, `manifest.csv`)."""
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one project.", messages.ERROR)
            return None
        project = queryset.get()
        # On disk, not in memory: a project may hold thousands of images.
        archive = tempfile.TemporaryFile()
        with zipfile.ZipFile(archive, "w") as target:
            services.feedback_export(project=project, target=target, reviewed_only=reviewed_only)
        archive.seek(0)
        suffix = "-reviewed" if reviewed_only else ""
        return FileResponse(
            archive, as_attachment=True, filename=f"{project.slug}-feedback{suffix}.zip"
        )

    def _show_token_once(self, request, project, token: str) -> None:
        self.message_user(
            request,
            f"The token of “{project.slug}” is {token} — copy it now: only its hash is kept, "
            "so it is not shown again. Clients send it as ?token= or 'Authorization: Bearer'.",
            messages.WARNING,
        )


@admin.register(ModelVersion)
class ModelVersionAdmin(ReapOnView, VersionColumns, admin.ModelAdmin):
    list_display = [
        "__str__",
        "status_cell",
        "is_active",
        "format",
        "runtime_cell",
        "source",
        "input_shape",
        "labels_count",
        "size",
        "sha256_prefix",
        "short_message_cell",
        "created_at",
    ]
    list_filter = ["project", "status", "format"]
    list_select_related = ["project"]  # every row's name and "active" cell read its project

    class Media:
        js = ["predictions/admin_status.js"]

    actions = ["activate_version", "revalidate_versions", "score_versions"]
    readonly_fields = [
        "project",
        "number",
        "status_cell",
        "is_active",
        "message_cell",
        "feedback_score_cell",
        "file",
        "source",
        "original_name",
        "format",
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
        "variants_table",
        "attempts",
        "created_at",
    ]

    def get_form(self, request, obj=None, change=False, **kwargs):
        kwargs["form"] = ModelVersionAddForm if obj is None else ModelVersionChangeForm
        form = super().get_form(request, obj, change=change, **kwargs)
        if obj is None and not self.has_activate_permission(request):
            # A declared field stays in the form class whatever `fields` says: drop it, so a
            # posted `activate` from a user without the permission is ignored.
            form.base_fields.pop("activate", None)
        return form

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return []
        if self.has_activate_permission(request):  # the served variant: as activating is
            return self.readonly_fields
        return [*self.readonly_fields, "serve_variant"]

    def get_fields(self, request, obj=None):
        if obj is None:
            fields = [
                "project", "upload", "s3_key", "labels_text", "resize", "scale_min", "scale_max",
            ]  # fmt: skip
            return fields + (["activate"] if self.has_activate_permission(request) else [])
        fields = list(self.readonly_fields)
        fields.insert(fields.index("variants_table") + 1, "serve_variant")
        return fields

    def has_activate_permission(self, request) -> bool:
        return request.user.has_perm(services.ACTIVATE_PERMISSION)

    def save_form(self, request, form, change):
        if change:
            return super().save_form(request, form, change)
        data = form.cleaned_data
        return services.version_submit(
            project=data["project"],
            source=form.source,
            labels=data["labels"],
            activate=data.get("activate", False),
            resize=data["resize"],
            scale_min=data["scale_min"],
            scale_max=data["scale_max"],
            actor=request.user,
        )

    def save_model(self, request, obj, form, change):
        # A new version was saved by `save_form` through the service. On a version's page the
        # one field that changes is its served variant, written alone (a check may be running).
        if change and "serve_variant" in form.changed_data:
            services.version_serve_variant(
                version=obj, variant=obj.serve_variant, actor=request.user
            )

    def save_related(self, request, form, formsets, change):
        # A new version never went through `form.save()`, so the form has no `save_m2m`;
        # a version has no many-to-many fields or inlines to save anyway.
        if change:
            super().save_related(request, form, formsets, change)

    def response_add(self, request, obj, post_url_continue=None):
        obj.project.refresh_from_db()  # the service set its activate_when_ready
        then = ", then puts it in service" if _active_text(obj) == "when ready" else ""
        self.message_user(
            request,
            f"{obj} is stored and pending: the worker checks it{then}. "
            "Its status below updates by itself.",
            messages.SUCCESS,
        )
        return HttpResponseRedirect(reverse("admin:predictions_modelversion_changelist"))

    def get_urls(self):
        status = path(
            "status/",
            self.admin_site.admin_view(self.status_view),
            name="predictions_modelversion_status",
        )
        return [status, *super().get_urls()]

    def status_view(self, request):
        """`{"<id>": {"status", "message", "active", "runtime"}}` for `?ids=1,2`: the live
        cells' source."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        services.registrations_reap()
        ids = [int(i) for i in request.GET.get("ids", "").split(",") if i.isdigit()][:200]
        versions = ModelVersion.objects.select_related("project").filter(pk__in=ids)
        return JsonResponse(
            {
                str(v.pk): {
                    "status": v.status,
                    "message": v.validation_message,
                    "active": _active_text(v),
                    "runtime": v.runtime,
                }
                for v in versions
            }
        )

    @admin.display(description="variants")
    def variants_table(self, version):
        return _variants_table(version)

    @admin.action(
        description="Activate the selected version (when it is ready)", permissions=["activate"]
    )
    def activate_version(self, request, queryset):
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one version to activate.", messages.ERROR)
            return
        version = queryset.get()
        try:
            live = services.version_activate(version=version, actor=request.user)
        except services.ModelValidationError as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return
        if live:
            self.message_user(request, f"{version} is now in service.", messages.SUCCESS)
        else:
            self.message_user(
                request, f"{version} is {version.status}: it goes into service when it is ready."
            )

    @admin.action(description="Check the selected versions again", permissions=["change"])
    def revalidate_versions(self, request, queryset):
        for version in queryset:
            services.version_recheck(version=version)
        self.message_user(request, f"Queued {queryset.count()} check(s) for the worker.")

    @admin.action(description="Score on stored feedback again", permissions=["change"])
    def score_versions(self, request, queryset):
        ready = queryset.filter(status=ModelVersion.Status.READY)
        for version in ready:
            tasks.score_version.enqueue(version.pk)
        message = f"Queued {len(ready)} ready version(s) for the worker to score."
        if left := queryset.count() - len(ready):
            message += f" {left} not ready, left out."
        self.message_user(request, message)


def _active_text(version: ModelVersion) -> str:
    project = version.project
    if project.active_version_id == version.pk:
        return "in service"
    if project.activate_when_ready_id == version.pk:
        return "when ready"
    return ""


def _score_text(score: dict) -> str:
    """A version's score on stored feedback in words, beside the version then in service's."""
    if not score:
        return "Not scored yet."
    if "error" in score:
        return f"Scoring failed: {score['error']}"
    if "skipped" in score:
        return f"Not scored: {score['skipped']}"
    examples = score["examples"]
    text = f"{score['share']:.1%} ({score['agreed']} of {examples} examples)"
    if score["active_version"] is not None:
        text += (
            f"; v{score['active_version']}, then in service: {score['active_share']:.1%} "
            f"({score['active_agreed']} of {examples})"
        )
    if score["unreadable"]:
        text += f"; {score['unreadable']} unreadable example(s) left out"
    return text


def _variants_table(version: ModelVersion):
    """Each variant's size, speed and agreement with the float artifact, and which one serves."""
    variants = version.variants
    if not variants:
        return "Not measured yet (measured when a check passes)."
    float_ = ModelVersion.Variant.FLOAT.value
    served = selectors.served_variant(version)
    reference = variants.get(float_, {})
    rows = []
    for variant in ModelVersion.Variant.values:
        entry = variants.get(variant)
        if entry is None:
            continue
        if "size_bytes" not in entry:  # not made: why
            rows.append(format_html('<td>{}</td><td colspan="5">{}</td>', variant, entry["error"]))
            continue
        size = filesizeformat(entry["size_bytes"])
        if variant != float_ and reference.get("size_bytes"):
            size += f" ({entry['size_bytes'] / reference['size_bytes']:.2f}x)"
        cells = (
            variant,
            size,
            f"{entry['ms_per_frame']:.3g}" if "ms_per_frame" in entry else "-",
            _agreement_text(entry) if variant != float_ else "(the reference)",
            "yes" if variant == float_ or entry.get("eligible") else "no",
            _served_text(version, variant, served),
        )
        rows.append(format_html_join("", "<td>{}</td>", ((cell,) for cell in cells)))
    table = format_html(
        "<table><thead><tr><th>variant</th><th>size</th><th>ms per frame</th>"
        "<th>top-1 agreement with float</th><th>eligible</th><th>served</th></tr></thead>"
        "<tbody>{}</tbody></table>",
        format_html_join("", "<tr>{}</tr>", ((row,) for row in rows)),
    )
    if "error" in variants:
        table += format_html("<p>{}</p>", variants["error"])
    if version.format == ModelFormat.TFLITE:
        table += format_html("<p>{}</p>", "Smaller variants are made from Keras and HDF5 files.")
    return table


def _agreement_text(entry: dict) -> str:
    if entry.get("agreement") is None:
        return entry.get("skipped", "not measured")
    on = "stored feedback examples" if entry["on"] == "feedback" else "generated parity inputs"
    return f"{entry['agreement']:.1%} of {entry['examples']} {on}"


def _served_text(version: ModelVersion, variant: str, served: str) -> str:
    if variant == served:
        return "served"
    if variant == version.serve_variant:
        return "chosen, but not eligible: the float artifact serves"
    return ""


def _live_cell(version: ModelVersion, field: str, text: str, *, limit: int = 0):
    """A cell that predictions/admin_status.js refreshes while the version is being checked
    (`limit`: show at most that many characters, the whole text as the tooltip)."""
    url = reverse("admin:predictions_modelversion_status")
    shown = Truncator(text).chars(limit) if limit else text
    return format_html(
        '<span data-version="{}" data-field="{}" data-status-url="{}" data-limit="{}" '
        'title="{}">{}</span>',
        version.pk,
        field,
        url,
        limit,
        text if limit else "",
        shown,
    )


IMAGE_TYPES = {
    "png": "image/png",
    "jpg": "image/jpeg",
    "webp": "image/webp",
    "bmp": "image/bmp",
    "gif": "image/gif",
}


@admin.register(FeedbackExample)
class FeedbackExampleAdmin(admin.ModelAdmin):
    """Examples anyone may have sent to a public project: staff look at them, mark them
    reviewed (the export can take those only) or delete them."""

    list_display = [
        "thumbnail",
        "project",
        "label",
        "predicted",
        "version",
        "source",
        "reviewed",
        "created_at",
    ]
    list_filter = ["project", "label", "reviewed", "source"]
    list_select_related = ["project", "version"]
    actions = ["mark_reviewed"]
    readonly_fields = [
        "large_image",
        "project",
        "label",
        "predicted",
        "version",
        "source",
        "sha256",
        "storage_name",
        "image_format",
        "created_at",
    ]
    fields = [*readonly_fields, "reviewed"]

    def has_add_permission(self, request):
        return False  # examples come from people's feedback, never from the admin

    @admin.display(description="image")
    def thumbnail(self, example):
        return self._img(example, 64)

    @admin.display(description="image")
    def large_image(self, example):
        return self._img(example, 256)

    def _img(self, example, size: int):
        url = reverse("admin:predictions_feedbackexample_image", args=[example.pk])
        style = f"max-width:{size}px;max-height:{size}px;image-rendering:pixelated"
        return format_html('<img src="{}" alt="" style="{}" loading="lazy">', url, style)

    def get_urls(self):
        image = path(
            "<int:pk>/image/",
            self.admin_site.admin_view(self.image_view),
            name="predictions_feedbackexample_image",
        )
        return [image, *super().get_urls()]

    def image_view(self, request, pk):
        """An example's stored image, for staff only (it is not public in the storage)."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        example = FeedbackExample.objects.filter(pk=pk).first()
        if example is None:
            raise Http404("No such example.")
        response = FileResponse(
            model_storage().open(example.storage_name, "rb"),
            content_type=IMAGE_TYPES.get(example.image_format, "application/octet-stream"),
        )
        response["X-Content-Type-Options"] = "nosniff"
        response["Cache-Control"] = "private, max-age=3600"
        return response

    @admin.action(description="Mark the selected examples reviewed", permissions=["change"])
    def mark_reviewed(self, request, queryset):
        count = queryset.update(reviewed=True)
        self.message_user(request, f"Marked {count} example(s) reviewed.", messages.SUCCESS)

    def delete_model(self, request, obj):
        services.feedback_delete(examples=FeedbackExample.objects.filter(pk=obj.pk))

    def delete_queryset(self, request, queryset):
        services.feedback_delete(examples=queryset)
