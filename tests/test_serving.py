"""The compiled serving path: LiteRT parity, the Keras fallback, the model cache, batching."""

import threading
from pathlib import Path

import numpy as np
import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from modelserver.asgi import application
from predictions import selectors, services, serving
from predictions.checking import child, conversion
from predictions.formats import ModelFormat
from predictions.inference.cache import ModelCache
from predictions.inference.runtime import KerasRuntime, LiteRTRuntime
from predictions.models import ModelVersion, Project
from predictions.storage import file_cache
from tests.support import COLOR_LABELS, encode, solid_image


def register(slug, path, *, labels=COLOR_LABELS):
    project, _ = Project.objects.get_or_create(slug=slug, defaults={"name": slug})
    with open(path, "rb") as upload:
        return services.version_register(
            project=project, upload=upload, labels=labels, activate=True
        )


def compiled_path(version) -> str:
    return str(
        file_cache().fetch(
            name=version.compiled_file, sha256=version.compiled_sha256, suffix=".tflite"
        )
    )


@pytest.mark.django_db
def test_litert_agrees_with_keras(trained):
    version = register("colors", trained.colors)
    assert version.runtime == "litert"
    batch = np.random.default_rng(3).uniform(0, 1, (6, 16, 16, 3)).astype(np.float32)

    expected = KerasRuntime(str(trained.colors)).predict(batch)
    actual = LiteRTRuntime(compiled_path(version)).predict(batch)

    assert actual.shape == expected.shape == (6, 3)
    np.testing.assert_allclose(actual, expected, atol=conversion.PARITY_ATOL)
    assert (actual.argmax(1) == expected.argmax(1)).all()


def test_a_model_that_does_not_convert_fails_naming_the_op_and_layer(trained, tmp_path):
    """CategoryEncoding counts with DenseBincount, a TensorFlow op LiteRT has no builtin for:
    the web process serves LiteRT only, so the version fails in words."""
    report = child.check_model(trained.needs_tf_ops, tmp_path, model_format=ModelFormat.KERAS)

    assert not report["ok"]
    assert "did not convert to LiteRT" in report["error"]
    assert "DenseBincount" in report["error"] and "category_encoding" in report["error"]
    assert not list(tmp_path.glob("*.tflite"))


def test_a_conversion_that_runs_out_of_memory_fails_the_check(trained, tmp_path, monkeypatch):
    """Out of memory is not "does not convert": with more memory it would, so the version
    fails in words, like any model that does not convert."""

    def convert_runs_out(*args, **kwargs):
        raise RuntimeError("std::bad_alloc")

    monkeypatch.setattr(conversion, "convert_saved_model", convert_runs_out)
    report = child.check_model(trained.colors, tmp_path, model_format=ModelFormat.KERAS)

    assert not report["ok"]
    assert "ran out of memory while converting it to LiteRT" in report["error"]
    assert "MODEL_CHECK_MEMORY_BYTES" in report["error"]


@pytest.mark.django_db(transaction=True)
async def test_a_version_on_keras_is_never_loaded_in_the_web_process(trained):
    """Versions registered before serving became LiteRT-only may still say `keras`."""
    version = await database_sync_to_async(register)("fallback", trained.colors)
    await ModelVersion.objects.filter(pk=version.pk).aupdate(
        runtime=ModelVersion.Runtime.KERAS, compiled_file="", compiled_sha256=""
    )
    project = await database_sync_to_async(selectors.project_get_info)(slug="fallback")

    reply = await serving.answer_binary(
        encode(solid_image("blue"), "PNG"), frame_id=0, project=project, received=0.0
    )

    assert reply["code"] == "model_unavailable"
    assert "did not convert to LiteRT" in reply["message"]
    assert not serving.model_cache().is_loaded(project.model)


@pytest.mark.django_db
def test_the_cache_unloads_the_least_recently_used_past_its_budget(trained, digits_model_path):
    colors = register("colors", trained.colors)
    digits = register("digits", digits_model_path, labels=[str(d) for d in range(10)])
    colors_spec, digits_spec = selectors.version_spec(colors), selectors.version_spec(digits)
    budget = Path(compiled_path(digits)).stat().st_size  # room for one compiled model only
    cache = ModelCache(
        budget_bytes=budget, load=serving.load_runtime, max_batch_size=4, max_wait_ms=0
    )

    first = cache.get(colors_spec)
    cache.get(digits_spec)

    assert cache.loaded_keys() == [digits_spec.compiled_sha256]
    with pytest.raises(RuntimeError, match="closed"):
        first.batcher.submit(np.zeros((16, 16, 3), np.float32))
    cache.clear()


@pytest.mark.django_db
def test_concurrent_first_requests_share_one_load(trained):
    spec = selectors.version_spec(register("colors", trained.colors))
    loads = []

    def counting_load(spec):
        loads.append(spec.version_id)
        return serving.load_runtime(spec)

    cache = ModelCache(budget_bytes=10**9, load=counting_load, max_batch_size=4, max_wait_ms=0)
    results = []
    threads = [threading.Thread(target=lambda: results.append(cache.get(spec))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert loads == [spec.version_id]
    assert len({id(result) for result in results}) == 1
    cache.clear()


@pytest.mark.django_db(transaction=True)
async def test_frames_from_many_connections_share_batches(trained, settings, monkeypatch):
    settings.MAX_PENDING_FRAMES = 16
    # A batch window long enough that frames of different connections surely meet in it.
    cache = ModelCache(
        budget_bytes=10**9, load=serving.load_runtime, max_batch_size=8, max_wait_ms=20
    )
    monkeypatch.setattr(serving, "_model_cache", cache)
    version = await database_sync_to_async(register)("colors", trained.colors)
    sockets = [WebsocketCommunicator(application, "/ws/projects/colors/") for _ in range(4)]
    for socket in sockets:
        assert (await socket.connect(timeout=30))[0]
        await socket.receive_json_from(timeout=30)
    project = await database_sync_to_async(selectors.project_get_info)(slug="colors")
    loaded = serving.model_cache().get(project.model)
    before_batches, before_frames = loaded.batcher.batches_run, loaded.batcher.frames_run

    frame = encode(solid_image("green", (320, 240)), "JPEG")
    for _ in range(8):
        for socket in sockets:
            await socket.send_to(bytes_data=frame)
    replies = [await socket.receive_json_from(timeout=30) for socket in sockets for _ in range(8)]
    for socket in sockets:
        await socket.disconnect()

    assert all(reply["labels"][0]["label"] == "green" for reply in replies)
    assert all(reply["model_version"] == version.number for reply in replies)
    frames = loaded.batcher.frames_run - before_frames
    batches = loaded.batcher.batches_run - before_batches
    assert frames == 32
    assert batches < frames  # some batches held frames of several connections
    cache.clear()
