"""Registering, validating and activating versions, with the model files in a real S3 server."""

import hashlib

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from predictions import selectors, services
from predictions.models import ModelVersion, Project, model_storage
from predictions.storage import file_cache
from tests.support import COLOR_LABELS, register

pytestmark = pytest.mark.django_db


@pytest.fixture
def project():
    return Project.objects.create(slug="colors", name="Colours")


def test_upload_goes_to_s3_and_records_metadata(project, trained, s3_storage):
    version = register(project, trained.colors, activate=True)

    assert version.number == 1
    assert version.source == ModelVersion.Source.UPLOAD
    assert version.input_shape == [16, 16, 3]
    assert version.output_shape == [3]
    assert version.labels == COLOR_LABELS
    assert len(version.sha256) == 64
    assert version.size_bytes == trained.colors.stat().st_size
    assert "safe mode" in version.validation_message
    assert (version.status, version.format, version.original_name) == (
        "ready",
        "keras",
        "colors.keras",
    )
    assert "Compiled to LiteRT" in version.validation_message
    stored = s3_storage.client.head_object(Bucket=s3_storage.name, Key=version.file.name)
    assert stored["ContentLength"] == version.size_bytes
    # The LiteRT artifact sits beside the source, keyed by the source's hash.
    assert version.runtime == "litert"
    assert version.compiled_file == f"compiled/{version.sha256}.tflite"
    compiled = s3_storage.client.get_object(Bucket=s3_storage.name, Key=version.compiled_file)
    assert hashlib.sha256(compiled["Body"].read()).hexdigest() == version.compiled_sha256
    project.refresh_from_db()
    assert project.active_version == version


def test_register_by_existing_s3_key(project, trained, s3_storage):
    s3_storage.put("trained-elsewhere/colors.keras", trained.colors)

    version = services.version_register(
        project=project, s3_key="trained-elsewhere/colors.keras", labels=COLOR_LABELS
    )

    assert version.source == ModelVersion.Source.S3_KEY
    assert version.file.name == "trained-elsewhere/colors.keras"
    assert version.input_shape == [16, 16, 3]
    # Not activated: nothing is in service yet.
    project.refresh_from_db()
    assert project.active_version is None


def test_missing_s3_key_is_refused_in_words(project, s3_storage):
    with pytest.raises(services.ModelValidationError, match=r"No object named 'nope\.keras'"):
        services.version_register(project=project, s3_key="nope.keras", labels=[])
    assert not project.versions.exists()


def test_version_numbers_count_up(project, trained):
    first = register(project, trained.colors)
    second = register(project, trained.colors)
    assert (first.number, second.number) == (1, 2)
    # The same bytes are stored once.
    assert first.file.name == second.file.name


@pytest.mark.parametrize(
    ("model", "labels", "message"),
    [("lambda_model", [], "`Lambda` layer"), ("not_a_model", [], "lacks config.json")],
)
def test_files_refused_on_sight_store_nothing(project, trained, model, labels, message):
    good = register(project, trained.colors, activate=True)

    with pytest.raises(services.ModelValidationError, match=message):
        register(project, getattr(trained, model), labels=labels, activate=True)

    project.refresh_from_db()
    assert project.active_version == good
    assert list(project.versions.all()) == [good]


@pytest.mark.parametrize(
    ("model", "labels", "message"),
    [("two_inputs", [], "takes 2 inputs"), ("colors", ["only", "two"], "3 outputs but 2 labels")],
)
def test_models_that_fail_their_check_stay_failed_and_the_active_one_stays(
    project, trained, model, labels, message
):
    good = register(project, trained.colors, activate=True)

    with pytest.raises(services.ModelValidationError, match=message):
        register(project, getattr(trained, model), labels=labels, activate=True)

    project.refresh_from_db()
    assert project.active_version == good and project.activate_when_ready is None
    failed = project.versions.get(number=2)
    assert failed.status == ModelVersion.Status.FAILED
    assert message in failed.validation_message


def test_truncated_archive_is_refused(project, trained, tmp_path):
    truncated = tmp_path / "truncated.keras"
    truncated.write_bytes(trained.colors.read_bytes()[:2000])
    with pytest.raises(services.ModelValidationError, match=r"damaged|not a `\.keras` archive"):
        register(project, truncated)


def test_activation_is_announced_on_the_channel_layer(
    project, trained, django_capture_on_commit_callbacks
):
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(services.project_group_name("colors"), channel)
    with django_capture_on_commit_callbacks(execute=True):
        version = register(project, trained.colors, activate=True)

    message = async_to_sync(layer.receive)(channel)
    assert message == {"type": "model.changed", "version_id": version.pk}


def test_revalidation_marks_a_changed_file_failed_and_refuses_activation(project, trained):
    version = register(project, trained.colors)
    with model_storage().open(version.file.name, "wb") as handle:
        handle.write(trained.two_inputs.read_bytes())
    # Drop the local copy so the check reads the storage again.
    (file_cache().directory / f"{version.sha256}.keras").unlink()

    services.version_recheck(version=version)
    version = services.version_check(version=version)
    assert version.status == ModelVersion.Status.FAILED
    assert "does not match its registered sha256" in version.validation_message
    with pytest.raises(services.ModelValidationError, match="cannot be activated"):
        services.version_activate(version=version)


def test_selectors_snapshot_the_active_version(project, trained):
    version = register(project, trained.colors, activate=True)
    info = selectors.project_get_info(slug="colors")
    assert info.model.meta() == {"version": 1, "input_shape": [16, 16, 3], "labels": COLOR_LABELS}
    assert info.model.sha256 == version.sha256
    assert selectors.project_get_info(slug="missing") is None
