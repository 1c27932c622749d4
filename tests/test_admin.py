"""The Django admin as an operator uses it: adding versions, the actions, the project pages."""

import html
import re
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from predictions import services, tasks
from predictions.models import ModelVersion, Project, hash_token, model_storage
from predictions.storage import file_cache
from tests.support import COLOR_LABELS, register, staff_client

pytestmark = pytest.mark.django_db

VERSION_ADD = "/admin/predictions/modelversion/add/"
VERSION_LIST = "/admin/predictions/modelversion/"
PROJECT_LIST = "/admin/predictions/project/"
REFUSED = "The model was refused"
ONE_OF_TWO = "Upload a model file or give an S3 key (one of the two)."


@pytest.fixture
def project():
    return Project.objects.create(slug="colors", name="Colours")


def run_job(version) -> ModelVersion:
    """What the worker does with a version's queued job."""
    version.refresh_from_db()
    task = DBTaskResult.objects.get(id=version.task_id, status="READY")
    tasks.check_version.call(*task.args_kwargs["args"])
    version.refresh_from_db()
    return version


def add_version(client, project, *, upload=None, s3_key="", labels="red\ngreen\nblue", **extra):
    """POST the add form the way the browser does (multipart; an unticked box is absent)."""
    data = {
        "project": project.pk,
        "s3_key": s3_key,
        "labels_text": labels,
        "resize": ModelVersion.Resize.STRETCH,
        "scale_min": "0",
        "scale_max": "1",
        "activate": "on",
        **extra,
    }
    if upload is None:
        return client.post(VERSION_ADD, data)
    with open(upload, "rb") as handle:
        return client.post(VERSION_ADD, {**data, "upload": handle})


def form_errors(response) -> list[str]:
    """The add form's non-field errors, as the page shows them."""
    assert response.status_code == 200, "expected the form to be shown again"
    errors = list(response.context["adminform"].form.non_field_errors())
    for error in errors:
        assert html.escape(error) in response.content.decode()
    return errors


def select_action(client, action, *versions, follow=True):
    return client.post(
        VERSION_LIST,
        {"action": action, "_selected_action": [v.pk for v in versions], "index": 0},
        follow=follow,
    )


# --- Adding a version ------------------------------------------------------------------------


def test_add_form_shows_the_registration_fields(admin_client):
    response = admin_client.get(VERSION_ADD)

    assert response.status_code == 200
    form = response.context["adminform"].form
    for field in ("project", "upload", "s3_key", "labels_text", "resize", "scale_min"):
        assert field in form.fields
        assert f'name="{field}"' in response.content.decode()
    for field in ("scale_max", "activate"):
        assert f'name="{field}"' in response.content.decode()
    assert 'enctype="multipart/form-data"' in response.content.decode()
    # The computed metadata is not typed in by hand.
    assert "sha256" not in form.fields
    assert "input_shape" not in form.fields


def test_add_by_upload_stores_a_pending_version_and_the_job_activates_it(
    admin_client, project, trained
):
    response = add_version(admin_client, project, upload=trained.colors)

    assert response.status_code == 302, response.content.decode()[:2000]
    version = ModelVersion.objects.get()
    assert (version.project, version.number, version.labels) == (project, 1, COLOR_LABELS)
    assert version.status == ModelVersion.Status.PENDING
    assert version.source == ModelVersion.Source.UPLOAD
    assert version.size_bytes == trained.colors.stat().st_size
    assert model_storage().exists(version.file.name)
    project.refresh_from_db()
    assert project.active_version is None and project.activate_when_ready == version
    listing = admin_client.get(response.url).content.decode()
    assert (
        "Colors v1 is stored and pending: the worker checks it, then puts it in service." in listing
    )
    assert f'data-version="{version.pk}" data-field="status"' in listing

    version = run_job(version)

    assert version.status == ModelVersion.Status.READY
    assert (version.input_shape, version.output_shape) == ([16, 16, 3], [3])
    project.refresh_from_db()
    assert project.active_version == version
    page = admin_client.get(f"/admin/predictions/modelversion/{version.pk}/change/")
    assert page.status_code == 200
    text = page.content.decode()
    assert "Loaded with Keras (safe mode): input 16x16x3" in text
    assert html.escape(version.validation_message) in text
    assert version.sha256 in text and "in service" in text


def test_add_without_activate_leaves_the_active_version(admin_client, project, trained):
    first = register(project, trained.colors)

    response = add_version(admin_client, project, upload=trained.colors, activate="")

    assert response.status_code == 302
    second = run_job(project.versions.get(number=2))
    assert second.status == ModelVersion.Status.READY
    project.refresh_from_db()
    assert project.active_version == first


def test_add_by_s3_key(admin_client, trained, s3_storage):
    # A project of its own: the session's bucket may hold other tests' `projects/colors/...`.
    project = Project.objects.create(slug="from-bucket", name="From the bucket")
    s3_storage.put("trained-elsewhere/colors.keras", trained.colors)

    response = add_version(admin_client, project, s3_key="trained-elsewhere/colors.keras")

    assert response.status_code == 302, response.content.decode()[:2000]
    version = ModelVersion.objects.get()
    assert version.file.name == "trained-elsewhere/colors.keras"
    assert version.original_name == "trained-elsewhere/colors.keras"
    assert (version.source, version.format) == (ModelVersion.Source.S3_KEY, "keras")
    assert version.size_bytes == trained.colors.stat().st_size
    assert version.sha256 == ""  # hashed when the worker fetches it

    version = run_job(version)

    assert version.input_shape == [16, 16, 3] and len(version.sha256) == 64
    project.refresh_from_db()
    assert project.active_version == version
    # The source was not copied: only its LiteRT artifact was added beside it.
    keys = [
        item["Key"]
        for item in s3_storage.client.list_objects_v2(Bucket=s3_storage.name).get("Contents", [])
    ]
    assert f"projects/from-bucket/{version.sha256}.keras" not in keys
    assert {"trained-elsewhere/colors.keras", version.compiled_file} <= set(keys)


def test_the_status_view_feeds_the_live_cells(admin_client, project, trained):
    ready = register(project, trained.colors)
    add_version(admin_client, project, upload=trained.colors)
    pending = project.versions.get(number=2)

    response = admin_client.get(
        f"{VERSION_LIST}status/?ids={ready.pk},{pending.pk},nonsense,999999"
    )

    assert response.json() == {
        str(ready.pk): {
            "status": "ready",
            "message": ready.validation_message,
            "active": "in service",
            "runtime": "litert",
        },
        str(pending.pk): {
            "status": "pending",
            "message": "Waiting for a worker to check it.",
            "active": "when ready",
            "runtime": "",
        },
    }
    page = admin_client.get(f"{PROJECT_LIST}{project.pk}/change/").content.decode()
    assert "predictions/admin_status.js" in page


def test_the_status_view_is_for_staff_only(client, project):
    response = client.get(f"{VERSION_LIST}status/?ids=1")
    assert response.status_code == 302 and "/admin/login/" in response.url


def test_a_model_that_fails_its_check_is_failed_with_the_reason(admin_client, project, trained):
    good = register(project, trained.colors)

    add_version(admin_client, project, upload=trained.two_inputs, labels="")
    add_version(admin_client, project, upload=trained.colors, labels="red\ngreen")

    two_inputs, two_labels = (
        run_job(v) for v in project.versions.filter(number__gt=1).order_by("number")
    )
    assert two_labels.validation_message == "The model has 3 outputs but 2 labels were given."
    assert "takes 2 inputs" in two_inputs.validation_message
    assert {two_inputs.status, two_labels.status} == {ModelVersion.Status.FAILED}
    project.refresh_from_db()
    assert project.active_version == good and project.activate_when_ready is None


# --- Validation failures are form errors -------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "labels", "reason"),
    [
        ("lambda_model", "", "`Lambda` layer"),
        ("not_a_model", "", "lacks config.json"),
        ("colors", "red\nred\nblue", "Labels must be distinct"),
    ],
)
def test_a_file_refused_on_sight_is_a_form_error_and_changes_nothing(
    admin_client, project, trained, model, labels, reason
):
    good = register(project, trained.colors)

    response = add_version(admin_client, project, upload=getattr(trained, model), labels=labels)

    [error] = form_errors(response)
    assert error.startswith(REFUSED)
    assert reason in error
    assert list(project.versions.all()) == [good]
    project.refresh_from_db()
    assert project.active_version == good


def test_neither_upload_nor_key_is_a_form_error(admin_client, project):
    response = add_version(admin_client, project)

    assert form_errors(response) == [ONE_OF_TWO]
    assert not ModelVersion.objects.exists()


def test_both_upload_and_key_is_a_form_error(admin_client, project, trained):
    response = add_version(admin_client, project, upload=trained.colors, s3_key="colors.keras")

    assert form_errors(response) == [ONE_OF_TWO]
    assert not ModelVersion.objects.exists()


def test_a_missing_s3_key_is_named_in_the_error(admin_client, project, s3_storage):
    response = add_version(admin_client, project, s3_key="nowhere/nope.keras")

    [error] = form_errors(response)
    assert error.startswith(REFUSED)
    assert "No object named 'nowhere/nope.keras'" in error
    assert not ModelVersion.objects.exists()


def test_a_missing_project_is_a_field_error(admin_client, trained):
    with open(trained.colors, "rb") as handle:
        response = admin_client.post(
            VERSION_ADD,
            {"upload": handle, "resize": "stretch", "scale_min": "0", "scale_max": "1"},
        )

    assert response.status_code == 200
    assert "project" in response.context["adminform"].form.errors
    assert not ModelVersion.objects.exists()


# --- Actions on the version list ---------------------------------------------------------------


def test_changelist_lists_versions_and_marks_the_active_one(admin_client, project, trained):
    version = register(project, trained.colors)

    response = admin_client.get(VERSION_LIST)

    assert response.status_code == 200
    text = response.content.decode()
    assert "colors v1" in text
    assert version.sha256[:12] in text
    assert 'value="activate_version"' in text
    assert 'value="revalidate_versions"' in text


def test_activate_action_puts_the_version_in_service(admin_client, project, trained):
    first = register(project, trained.colors)
    second = register(project, trained.colors, activate=False)
    project.refresh_from_db()
    assert project.active_version == first

    response = select_action(admin_client, "activate_version", second)

    assert response.status_code == 200
    # The admin shows messages with a capital first letter.
    assert "Colors v2 is now in service." in response.content.decode()
    project.refresh_from_db()
    assert project.active_version == second


def test_activate_action_refuses_two_versions(admin_client, project, trained):
    first = register(project, trained.colors)
    second = register(project, trained.colors, activate=False)

    response = select_action(admin_client, "activate_version", first, second)

    assert response.status_code == 200
    assert "Select exactly one version to activate." in response.content.decode()
    project.refresh_from_db()
    assert project.active_version == first


def test_activate_action_refuses_a_failed_version(admin_client, project, trained):
    first = register(project, trained.colors)
    second = register(project, trained.colors, activate=False)
    ModelVersion.objects.filter(pk=second.pk).update(
        status=ModelVersion.Status.FAILED, validation_message="broken on purpose"
    )

    response = select_action(admin_client, "activate_version", second)

    assert response.status_code == 200
    text = response.content.decode()
    assert "failed its check and cannot be activated: broken on purpose" in text
    project.refresh_from_db()
    assert project.active_version == first


def test_revalidate_action_keeps_a_good_version_ready(admin_client, project, trained):
    version = register(project, trained.colors)
    # A stale record: the action must check the file again and write the result.
    ModelVersion.objects.filter(pk=version.pk).update(
        status=ModelVersion.Status.FAILED, validation_message="stale"
    )

    response = select_action(admin_client, "revalidate_versions", version)

    assert response.status_code == 200
    assert "Queued 1 check(s) for the worker." in response.content.decode()
    version.refresh_from_db()
    assert version.status == ModelVersion.Status.PENDING
    version = run_job(version)
    assert version.status == ModelVersion.Status.READY
    assert version.validation_message.startswith("Loaded with Keras (safe mode)")


def test_revalidate_action_marks_a_changed_file_failed(admin_client, project, trained):
    version = register(project, trained.colors)
    with model_storage().open(version.file.name, "wb") as handle:
        handle.write(trained.two_inputs.read_bytes())
    (file_cache().directory / f"{version.sha256}.keras").unlink()

    select_action(admin_client, "revalidate_versions", version)

    version = run_job(version)
    assert version.status == ModelVersion.Status.FAILED
    assert "does not match its registered sha256" in version.validation_message
    listing = admin_client.get(VERSION_LIST).content.decode()
    assert "does not match its registered sha256" in listing


# --- Project pages -----------------------------------------------------------------------------


def test_project_changelist_links_to_the_demo(admin_client, project, trained):
    register(project, trained.colors)
    secret = Project(slug="secret", name="Secret", is_public=False)
    token = secret.rotate_token()
    secret.save()

    response = admin_client.get(PROJECT_LIST)

    assert response.status_code == 200
    text = response.content.decode()
    assert '<a href="/projects/colors/">try it</a>' in text
    assert '<a href="/projects/secret/">try it</a>' in text
    assert token not in text and secret.token_hash not in text
    assert "colors v1" in text  # the active version column


def test_project_change_page_shows_the_versions_table(admin_client, project, trained):
    first = register(project, trained.colors)
    second = register(project, trained.colors, activate=False)

    response = admin_client.get(f"{PROJECT_LIST}{project.pk}/change/")

    assert response.status_code == 200
    text = response.content.decode()
    inline = response.context["inline_admin_formsets"]
    assert len(inline) == 1
    assert [form.original for form in inline[0]] == [second, first]
    assert 'id="versions-group"' in text
    assert first.sha256[:12] in text
    for version in (first, second):
        assert f"/admin/predictions/modelversion/{version.pk}/change/" in text
    # The table can neither add nor delete versions.
    assert not inline[0].has_add_permission
    assert not inline[0].formset.can_delete
    assert 'name="versions-MAX_NUM_FORMS" value="0"' in text
    assert "versions-0-DELETE" not in text


def test_project_add_page_renders(admin_client):
    response = admin_client.get(f"{PROJECT_LIST}add/")

    assert response.status_code == 200
    assert 'name="slug"' in response.content.decode()


def test_showing_versions_takes_up_a_check_whose_worker_died(
    admin_client, project, trained, settings
):
    settings.REGISTRATION_LEASE_SECONDS = 5
    add_version(admin_client, project, upload=trained.colors)
    version = ModelVersion.objects.get()
    ModelVersion.objects.filter(pk=version.pk).update(
        status=ModelVersion.Status.CHECKING,
        attempts=1,
        heartbeat_at=timezone.now() - timedelta(seconds=60),
    )

    text = admin_client.get(VERSION_LIST).content.decode()

    version.refresh_from_db()
    assert version.status == ModelVersion.Status.PENDING
    assert "stopped (attempt 1 of 2); queued again" in version.validation_message
    assert f'data-version="{version.pk}" data-field="status" ' in text
    assert "checking" not in re.findall(r'data-field="status"[^>]*>(\w+)<', text)


# --- Least privilege -------------------------------------------------------------------------


def test_view_only_staff_cannot_activate_or_recheck(client, project, trained):
    first = register(project, trained.colors)
    second = register(project, trained.colors, activate=False)
    viewer = staff_client(client, "view_modelversion", "view_project")

    listing = viewer.get(VERSION_LIST).content.decode()
    assert 'value="activate_version"' not in listing
    assert 'value="revalidate_versions"' not in listing
    for action in ("activate_version", "revalidate_versions"):
        response = select_action(viewer, action, second)
        assert response.status_code == 200  # the admin answers with a page, not a 403

    project.refresh_from_db()
    second.refresh_from_db()
    assert project.active_version == first
    assert second.status == ModelVersion.Status.READY


def test_adding_versions_does_not_include_putting_them_in_service(client, project, trained):
    first = register(project, trained.colors)
    adder = staff_client(client, "add_modelversion", "view_modelversion", "view_project")

    form = adder.get(VERSION_ADD).content.decode()
    assert 'name="activate"' not in form
    response = add_version(adder, project, upload=trained.colors)  # posts activate=on anyway

    assert response.status_code == 302
    project.refresh_from_db()
    assert project.active_version == first and project.activate_when_ready is None
    with pytest.raises(PermissionDenied):
        services.version_activate(version=project.versions.get(number=2), actor=adder_user())


def adder_user():
    return User.objects.get(username="staff")


def test_the_activate_permission_is_enough_to_activate(client, project, trained):
    register(project, trained.colors)
    second = register(project, trained.colors, activate=False)
    activator = staff_client(client, "view_modelversion", "can_activate")

    response = select_action(activator, "activate_version", second)

    assert "Colors v2 is now in service." in response.content.decode()
    project.refresh_from_db()
    assert project.active_version == second


# --- Tokens ------------------------------------------------------------------------------------


def shown_token(text: str, slug: str) -> str:
    return re.search(rf"The token of “{slug}” is ([\w-]+) —", text).group(1)


def test_a_new_project_gets_a_token_shown_once(admin_client):
    response = admin_client.post(
        f"{PROJECT_LIST}add/",
        {
            "slug": "vault",
            "name": "Vault",
            "description": "",
            "allowed_origins": "",
            "versions-TOTAL_FORMS": "0",
            "versions-INITIAL_FORMS": "0",
        },
        follow=True,
    )

    token = shown_token(response.content.decode(), "vault")
    project = Project.objects.get(slug="vault")
    assert project.token_hash == hash_token(token)
    again = admin_client.get(f"{PROJECT_LIST}{project.pk}/change/").content.decode()
    assert token not in again and "only its hash is kept" in again


def test_rotating_a_token_needs_the_change_permission(client, project):
    before = project.rotate_token()
    project.save()
    viewer = staff_client(client, "view_project")

    listing = viewer.get(PROJECT_LIST).content.decode()
    assert 'value="rotate_tokens"' not in listing
    response = viewer.post(
        PROJECT_LIST, {"action": "rotate_tokens", "_selected_action": [project.pk]}
    )

    assert response.status_code == 200  # a page, not a 403, and nothing rotated
    project.refresh_from_db()
    assert project.token_hash == hash_token(before)


def test_rotating_a_token_replaces_the_hash_and_shows_the_new_token(admin_client, project):
    before = project.rotate_token()
    project.save()

    response = admin_client.post(
        PROJECT_LIST, {"action": "rotate_tokens", "_selected_action": [project.pk]}, follow=True
    )

    token = shown_token(response.content.decode(), project.slug)
    project.refresh_from_db()
    assert token != before and project.token_hash == hash_token(token)


def test_a_token_typed_in_the_form_is_kept_as_its_hash_and_never_shown(admin_client, project):
    before = project.token_hash
    change = f"{PROJECT_LIST}{project.pk}/change/"

    response = admin_client.post(
        change,
        {
            "slug": project.slug,
            "name": project.name,
            "description": "",
            "allowed_origins": "",
            "token": "typed-token-0123456789",
            "versions-TOTAL_FORMS": "0",
            "versions-INITIAL_FORMS": "0",
        },
        follow=True,
    )

    project.refresh_from_db()
    assert project.token_hash == hash_token("typed-token-0123456789") != before
    assert "typed-token-0123456789" not in response.content.decode()
    assert "typed-token-0123456789" not in admin_client.get(change).content.decode()
