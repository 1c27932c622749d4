"""Faults: the model storage going away and coming back, a download cut half-way."""

import io

import numpy as np
import pytest

from predictions import selectors, services, serving
from predictions.inference.cache import ModelCache
from predictions.inference.errors import ModelUnavailable, ModelValidationError
from predictions.models import Project
from predictions.storage import file_cache
from tests import support
from tests.support import COLOR_LABELS


@pytest.fixture
def own_s3(tmp_path_factory, settings):
    """A SeaweedFS of this test's own, so that it can be stopped and started again."""
    server = support.SeaweedS3(tmp_path_factory.mktemp("own-seaweedfs"))
    server.start()
    bucket = server.create_bucket()
    settings.AWS_STORAGE_BUCKET_NAME = bucket.name
    settings.AWS_S3_ENDPOINT_URL = server.endpoint
    settings.AWS_ACCESS_KEY_ID = settings.AWS_SECRET_ACCESS_KEY = "test"
    settings.AWS_S3_REGION_NAME = "us-east-1"
    settings.STORAGES = {
        **settings.STORAGES,
        "models": {"BACKEND": "storages.backends.s3.S3Storage"},
    }
    yield server
    server.stop()


@pytest.mark.django_db
def test_storage_outage_is_model_unavailable_then_recovers_by_itself(
    trained, own_s3, monkeypatch, tmp_path, settings
):
    project = Project.objects.create(slug="colors", name="Colours")
    with open(trained.colors, "rb") as upload:
        version = services.version_register(project=project, upload=upload, labels=COLOR_LABELS)
    spec = selectors.version_spec(version)
    # A fresh local cache: the server must fetch the artifact from S3.
    settings.MODEL_CACHE_DIR = tmp_path / "fresh-cache"
    monkeypatch.setattr(ModelCache, "RETRY_FIRST_S", 0.5)
    cache = ModelCache(
        budget_bytes=10**9, load=serving.load_runtime, max_batch_size=4, max_wait_ms=0
    )

    own_s3.stop()
    with pytest.raises(ModelUnavailable, match="cannot be fetched"):
        cache.get(spec)
    with pytest.raises(ModelUnavailable, match="retries in"):
        cache.get(spec)  # backing off: no new attempt
    assert not any(file_cache().directory.glob("*.tflite"))
    assert not any(file_cache().directory.glob("*.part"))

    own_s3.start(base=own_s3.base)
    loaded = support.wait_for(
        lambda: _get_or_none(cache, spec), timeout=60, what="the model after S3 came back"
    )
    output = loaded.batcher.submit(np.ones((16, 16, 3), np.float32)).result(timeout=30)
    assert output.shape == (3,)
    cache.clear()


def _get_or_none(cache, spec):
    try:
        return cache.get(spec)
    except ModelUnavailable:
        return None


class CutStream(io.RawIOBase):
    """A download that breaks after `limit` bytes: a fault a real server will not produce on
    demand, so this stream stands in for the connection."""

    def __init__(self, data: bytes, limit: int):
        self.data, self.limit, self.position = data, limit, 0

    def read(self, size=-1):
        if self.position >= self.limit:
            raise ConnectionResetError("connection reset by peer")
        chunk = self.data[
            self.position : min(self.limit, self.position + (size if size > 0 else 1 << 20))
        ]
        self.position += len(chunk)
        return chunk


def test_a_download_cut_half_way_leaves_nothing_at_the_cache_path(trained, tmp_path):
    cache = type(file_cache())(tmp_path / "cache")
    data = trained.colors.read_bytes()
    with pytest.raises(ConnectionResetError):
        cache.add(CutStream(data, len(data) // 2))
    assert list((tmp_path / "cache").iterdir()) == []


@pytest.mark.django_db
def test_the_check_runs_within_its_memory_and_time_limits(trained, settings):
    """A model check that needs more memory than it may have is stopped and refused in words;
    the version in service stays."""
    project = Project.objects.create(slug="colors", name="Colours")
    with open(trained.colors, "rb") as upload:
        good = services.version_register(
            project=project, upload=upload, labels=COLOR_LABELS, activate=True
        )
    settings.MODEL_CHECK_MEMORY_BYTES = 300 * 1024**2  # TensorFlow alone needs more
    settings.MODEL_CHECK_TIMEOUT = 20
    with open(trained.colors, "rb") as upload, pytest.raises(ModelValidationError) as refused:
        # Another input range: a new check, not the cached report of the first one.
        services.version_register(
            project=project, upload=upload, labels=COLOR_LABELS, scale_min=0.0, scale_max=2.0
        )
    message = str(refused.value)
    assert "The model check ran out of memory (limit 300 MB)" in message
    project.refresh_from_db()
    assert project.active_version == good


def test_a_check_child_dies_with_its_worker(trained, tmp_path):
    """A worker killed mid-check (SIGKILL: the OOM killer, a dyno's end) takes its child along,
    instead of leaving an orphan holding the model in memory."""
    import subprocess
    import sys
    from pathlib import Path

    worker_script = (
        "from pathlib import Path\n"
        "from predictions.checking.sandbox import run_child\n"
        f"run_child(Path({str(trained.colors)!r}), Path({str(tmp_path)!r}), model_format='keras',"
        " scale=(0.0, 1.0), timeout=120, memory_bytes=4 << 30, max_unpacked_bytes=1 << 30)\n"
    )
    worker = subprocess.Popen([sys.executable, "-c", worker_script], cwd=support.PROJECT_DIR)

    def child_pid():
        for task in Path(f"/proc/{worker.pid}/task").glob("*"):
            children = (task / "children").read_text().split()
            if children:
                return int(children[0])
        return None

    try:
        pid = support.wait_for(child_pid, timeout=30, what="the check's child")
    finally:
        worker.kill()
        worker.wait()

    def gone():
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        return state in ("Z", "X")  # a zombie waiting for init to reap it is dead

    support.wait_for(gone, timeout=10, what="the orphaned child's end")


@pytest.mark.parametrize(
    ("returncode", "stderr", "words"),
    [
        (-9, "", "ran out of memory (limit 2048 MB) (it was killed by SIGKILL)"),
        (-11, "", "ran out of memory (limit 2048 MB) (it was killed by SIGSEGV)"),
        (-6, "terminate called after throwing an instance of 'std::bad_alloc'", "out of memory"),
        (1, "Traceback (most recent call last):\nMemoryError", "ran out of memory (limit 2048"),
        (-6, "Fatal Python error: Aborted", "crashed (SIGABRT): Fatal Python error: Aborted"),
        (1, "Traceback (most recent call last):\nValueError: odd", "failed: ValueError: odd"),
    ],
)
def test_a_child_that_ends_without_a_report_is_explained_in_words(returncode, stderr, words):
    from predictions.checking.sandbox import child_failure

    assert words in child_failure(returncode, stderr, 2048 * 1024**2)


@pytest.mark.django_db
def test_a_stored_file_that_changed_is_not_served(trained, settings, tmp_path):
    """The registered sha256 is checked after every download."""
    from predictions.models import model_storage

    project = Project.objects.create(slug="colors", name="Colours")
    with open(trained.colors, "rb") as upload:
        version = services.version_register(project=project, upload=upload, labels=COLOR_LABELS)
    storage = model_storage()
    storage.delete(version.compiled_file)
    storage.save(version.compiled_file, io.BytesIO(b"not the registered artifact"))
    settings.MODEL_CACHE_DIR = tmp_path / "fresh-cache"
    cache = ModelCache(
        budget_bytes=10**9, load=serving.load_runtime, max_batch_size=4, max_wait_ms=0
    )

    with pytest.raises(ModelUnavailable, match="does not match its registered sha256"):
        cache.get(selectors.version_spec(version))
    assert not any((tmp_path / "fresh-cache").glob("*.tflite"))
