"""Registration as a job: pending versions, the job's outcome, activate-when-ready, leases and
the reaper, and the commands around them (in this process; the worker process end to end is
in test_e2e_worker.py)."""

import json
import time
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from predictions import services, tasks
from predictions.models import ModelVersion, Project, model_storage
from predictions.services import registration
from tests.support import COLOR_LABELS

pytestmark = pytest.mark.django_db

Status = ModelVersion.Status


@pytest.fixture
def project():
    return Project.objects.create(slug="colors", name="Colours")


def submit(project, path, *, labels=COLOR_LABELS, activate=False, queue=True):
    with open(path, "rb") as upload:
        source = services.version_source(upload=upload)
    return services.version_submit(
        project=project, source=source, labels=labels, activate=activate, queue=queue
    )


def run_job(version) -> ModelVersion:
    """What the worker does with the version's queued task."""
    task = DBTaskResult.objects.get(id=version.task_id)
    assert task.args_kwargs["args"] == [version.pk]
    tasks.check_version.call(*task.args_kwargs["args"])
    version.refresh_from_db()
    return version


def test_submitting_stores_the_file_and_a_pending_version_with_its_job(project, trained):
    version = submit(project, trained.colors)

    assert (version.number, version.status) == (1, Status.PENDING)
    assert version.format == "keras" and version.original_name == "colors.keras"
    assert version.validation_message == "Waiting for a worker to check it."
    assert version.runtime == "" and version.input_shape == []
    assert model_storage().exists(version.file.name)
    task = DBTaskResult.objects.get(id=version.task_id)
    assert task.status == "READY" and task.task_path == "predictions.tasks.check_version"


def test_the_job_checks_the_version_and_activates_it_when_asked(project, trained):
    version = submit(project, trained.colors, activate=True)
    project.refresh_from_db()
    assert project.activate_when_ready == version and project.active_version is None

    version = run_job(version)

    assert version.status == Status.READY
    assert (version.input_shape, version.output_shape) == ([16, 16, 3], [3])
    assert version.runtime == "litert" and version.compiled_file
    assert version.attempts == 1 and version.heartbeat_at is None
    project.refresh_from_db()
    assert project.active_version == version and project.activate_when_ready is None


@pytest.mark.parametrize("order", ["older first", "newer first"])
def test_the_latest_activate_when_ready_request_wins(project, trained, order):
    older = submit(project, trained.colors, activate=True)
    newer = submit(project, trained.colors, labels=["r", "g", "b"], activate=True)

    for version in (older, newer) if order == "older first" else (newer, older):
        assert run_job(version).status == Status.READY

    project.refresh_from_db()
    assert project.active_version == newer


def test_a_failed_check_says_why_and_the_version_in_service_keeps_serving(project, trained):
    good = submit(project, trained.colors, activate=True)
    run_job(good)
    bad = submit(project, trained.colors, labels=["a", "b", "c", "d"], activate=True)

    bad = run_job(bad)

    assert bad.status == Status.FAILED
    assert bad.validation_message == "The model has 3 outputs but 4 labels were given."
    project.refresh_from_db()
    assert project.active_version == good and project.activate_when_ready is None


def test_a_job_for_a_version_that_is_not_pending_does_nothing(project, trained):
    version = submit(project, trained.colors)
    ModelVersion.objects.filter(pk=version.pk).update(status=Status.CHECKING, attempts=1)

    assert run_job(version).status == Status.CHECKING
    assert version.attempts == 1


def test_refusals_before_anything_is_stored(project, trained, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a model")
    with pytest.raises(services.ModelValidationError, match=r"\.keras.*\.h5.*\.tflite"):
        submit(project, text)
    with pytest.raises(services.ModelValidationError, match="Labels must be distinct"):
        submit(project, trained.colors, labels=["red", "red", "blue"])
    assert not project.versions.exists()


# --- The lease and the reaper -----------------------------------------------------------------


def checking(version, *, attempts: int, seconds_ago: float, task_status="RUNNING"):
    """Make a version look taken by a worker whose last heartbeat was `seconds_ago`."""
    DBTaskResult.objects.filter(id=version.task_id).update(status=task_status)
    ModelVersion.objects.filter(pk=version.pk).update(
        status=Status.CHECKING,
        attempts=attempts,
        heartbeat_at=timezone.now() - timedelta(seconds=seconds_ago),
    )


def test_the_reaper_leaves_a_live_lease_alone(project, trained, settings):
    settings.REGISTRATION_LEASE_SECONDS = 60
    version = submit(project, trained.colors)
    checking(version, attempts=1, seconds_ago=10)

    assert services.registrations_reap() == 0
    version.refresh_from_db()
    assert version.status == Status.CHECKING


def test_the_reaper_queues_a_lapsed_job_again_then_fails_it_with_a_reason(
    project, trained, settings
):
    settings.REGISTRATION_LEASE_SECONDS = 5
    settings.REGISTRATION_MAX_ATTEMPTS = 2
    version = submit(project, trained.colors, activate=True)
    first_task = version.task_id
    checking(version, attempts=1, seconds_ago=30)

    assert services.registrations_reap() == 1

    version.refresh_from_db()
    assert version.status == Status.PENDING
    assert "stopped (attempt 1 of 2); queued again" in version.validation_message
    assert DBTaskResult.objects.get(id=first_task).status == "FAILED"
    assert version.task_id != first_task
    assert DBTaskResult.objects.get(id=version.task_id).status == "READY"

    checking(version, attempts=2, seconds_ago=30)
    assert services.registrations_reap() == 1

    version.refresh_from_db()
    assert version.status == Status.FAILED
    assert "stopped 2 times" in version.validation_message
    project.refresh_from_db()
    assert project.activate_when_ready is None


def test_the_reaper_queues_a_pending_version_whose_job_is_gone(project, trained, settings):
    settings.REGISTRATION_LEASE_SECONDS = 5
    version = submit(project, trained.colors, queue=False)
    ModelVersion.objects.filter(pk=version.pk).update(
        created_at=timezone.now() - timedelta(seconds=30)
    )

    assert services.registrations_reap() == 1
    version.refresh_from_db()
    assert DBTaskResult.objects.get(id=version.task_id).status == "READY"
    assert services.registrations_reap() == 0  # queued once


def test_an_outcome_from_a_job_that_lost_its_lease_is_dropped(project, trained):
    version = submit(project, trained.colors)
    checking(version, attempts=2, seconds_ago=0)

    registration._finish(version, 1, Status.FAILED, message="from a job that lost its lease")

    version.refresh_from_db()
    assert (version.status, version.attempts) == (Status.CHECKING, 2)


@pytest.mark.django_db(transaction=True)
def test_the_lease_is_renewed_while_the_check_runs(project, trained, settings):
    settings.REGISTRATION_LEASE_SECONDS = 0.3
    version = submit(project, trained.colors)
    checking(version, attempts=1, seconds_ago=100)

    with registration.Lease(version.pk, 1):
        time.sleep(0.5)

    version.refresh_from_db()
    assert timezone.now() - version.heartbeat_at < timedelta(seconds=1)


# --- Activation -----------------------------------------------------------------------------


def test_activating_a_pending_version_means_when_ready(project, trained):
    version = submit(project, trained.colors)

    assert services.version_activate(version=version) is False
    project.refresh_from_db()
    assert project.activate_when_ready == version and project.active_version is None
    run_job(version)
    project.refresh_from_db()
    assert project.active_version == version


def test_a_later_direct_activation_cancels_an_earlier_when_ready_request(project, trained):
    live = submit(project, trained.colors)
    run_job(live)
    waiting = submit(project, trained.colors, activate=True)

    assert services.version_activate(version=live) is True
    run_job(waiting)

    project.refresh_from_db()
    assert project.active_version == live


def test_a_failed_version_cannot_be_activated(project, trained):
    version = submit(project, trained.colors, labels=["a", "b"])
    run_job(version)
    with pytest.raises(services.ModelValidationError, match="failed its check"):
        services.version_activate(version=version)


# --- Commands -------------------------------------------------------------------------------


def test_register_model_no_wait_prints_the_number_and_queues_the_job(trained, tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("red\ngreen\nblue\n")
    out = StringIO()

    call_command(
        "register_model", "new-project", "--file", str(trained.colors),
        "--labels-file", str(labels), "--activate", "--no-wait", stdout=out,
    )  # fmt: skip

    assert out.getvalue().strip() == "1"
    version = ModelVersion.objects.get(project__slug="new-project")
    assert version.status == Status.PENDING and version.labels == COLOR_LABELS
    assert version.project.name == "new-project" and version.project.is_public
    assert DBTaskResult.objects.filter(id=version.task_id, status="READY").exists()


def test_register_model_waits_and_fails_in_one_line(trained, tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("a\nb\n")
    out = StringIO()

    with pytest.raises(CommandError, match="failed its check: The model has 3 outputs"):
        call_command(
            "register_model", "colors", "--file", str(trained.colors),
            "--labels-file", str(labels), stdout=out,
        )  # fmt: skip

    assert out.getvalue().strip() == "1"  # the version exists, failed, with its reason
    assert ModelVersion.objects.get().status == Status.FAILED


def test_show_versions_prints_one_json_object_a_line(project, trained):
    first = run_job(submit(project, trained.colors, activate=True))
    submit(project, trained.colors)
    out = StringIO()

    call_command("show_versions", "colors", stdout=out)

    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert lines[1] == {
        "version": 1,
        "status": "ready",
        "active": True,
        "runtime": "litert",
        "format": "keras",
        "message": first.validation_message,
    }
    assert lines[0] == {
        "version": 2,
        "status": "pending",
        "active": False,
        "runtime": "",
        "format": "keras",
        "message": "Waiting for a worker to check it.",
    }
    with pytest.raises(CommandError, match="No project named 'nope'"):
        call_command("show_versions", "nope")
