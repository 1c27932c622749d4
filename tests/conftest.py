"""Shared fixtures: models trained once per session, a real S3 server, the CI no-skip rule."""

import os
from pathlib import Path

import pytest

from tests import support

# --- CI runs against every real service: a skipped test there is a failure. -------------------

_skipped: list[str] = []


def pytest_runtest_logreport(report):
    if report.skipped:
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session, exitstatus):
    if os.environ.get("CI") == "true" and _skipped and exitstatus == 0:
        session.exitstatus = 1


def pytest_terminal_summary(terminalreporter):
    from tests.browser import SCREENSHOT_DIR

    if SCREENSHOT_DIR.exists():
        terminalreporter.write_line(f"Browser screenshots: {SCREENSHOT_DIR}")
    if os.environ.get("CI") == "true" and _skipped:
        terminalreporter.write_line(
            f"CI=true: {len(_skipped)} test(s) skipped, which fails the run: {', '.join(_skipped)}",
            red=True,
        )


# --- Local folders for model files, per test. -------------------------------------------------


@pytest.fixture(scope="session")
def model_cache_dir(tmp_path_factory):
    """One download cache for the session: it is keyed by content, and it keeps each file's
    check-and-compile report, so a model file is compiled once per session."""
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture(autouse=True)
def model_folders(settings, tmp_path, model_cache_dir):
    """Each test gets its own model storage folder."""
    settings.MODEL_CACHE_DIR = model_cache_dir
    settings.STORAGES = {
        **settings.STORAGES,
        "models": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path / "model-storage")},
        },
    }
    return tmp_path


# --- Models trained once per session. ---------------------------------------------------------


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> support.TrainedModels:
    """Small Keras models trained for the tests (TensorFlow is imported here, once)."""
    return support.train_test_models(tmp_path_factory.mktemp("trained-models"))


@pytest.fixture(scope="session")
def digits_model_path(tmp_path_factory) -> Path:
    """The bundled demo's digits model, trained as `bootstrap_demo` trains it."""
    from predictions.demo import train_digits_model

    path = tmp_path_factory.mktemp("digits") / "digits.keras"
    train_digits_model(path)
    return path


# --- A real S3-compatible server (SeaweedFS) for the whole session. ---------------------------


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    server = support.SeaweedS3(tmp_path_factory.mktemp("seaweedfs"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3_bucket(s3_server):
    return s3_server.create_bucket()


@pytest.fixture
def s3_storage(settings, s3_server, s3_bucket):
    """Point the model storage at the session's bucket on the S3 server."""
    bucket = s3_bucket
    settings.AWS_STORAGE_BUCKET_NAME = bucket.name
    settings.AWS_S3_ENDPOINT_URL = s3_server.endpoint
    settings.AWS_ACCESS_KEY_ID = "test"
    settings.AWS_SECRET_ACCESS_KEY = "test"
    settings.AWS_S3_REGION_NAME = "us-east-1"
    settings.STORAGES = {
        **settings.STORAGES,
        "models": {"BACKEND": "storages.backends.s3.S3Storage"},
    }
    return bucket
