"""A version's smaller variants (int8 and float16 weights): made by the check's child beside the
float artifact, stored and measured by the registration job, chosen in the admin only when they
agree with the float version, and then served, also to connections already open.

Through the real parts: the child converts the colours test model (once a session: its report
is kept in the session's model cache, so every later registration of the file reuses it), the
job stores the artifacts in the test's model storage and measures them with LiteRT.
"""

import asyncio
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from modelserver.asgi import application
from predictions import selectors, services, serving, swaps
from predictions.checking import child, conversion, launcher
from predictions.checking.sandbox import checked_report
from predictions.inference.frames import Frame
from predictions.inference.pipeline import prepare_frame
from predictions.inference.runtime import LiteRTRuntime
from predictions.models import FeedbackExample, ModelVersion, Project, model_storage
from predictions.storage import file_cache
from tests import support
from tests.support import COLOR_LABELS, encode, solid_image

pytestmark = pytest.mark.django_db(transaction=True)

PREDICT = "/api/projects/colors/predict"
TIMEOUT = 30
SMALLER = ("int8", "float16")


def version_page(version: ModelVersion) -> str:
    return f"/admin/predictions/modelversion/{version.pk}/change/"


@pytest.fixture
def project(trained):
    """The colours project with version 1 in service (feedback is taken for a version)."""
    project = Project.objects.create(slug="colors", name="Colours")
    support.register(project, trained.colors)
    return Project.objects.select_related("active_version").get(pk=project.pk)


def store_examples(project, count: int) -> list[FeedbackExample]:
    """`count` labelled images of mixed colours, kept as feedback keeps them."""
    rng = np.random.default_rng(3)
    kept = []
    for i in range(count):
        rgb = tuple(int(c) for c in rng.integers(0, 256, 3))
        kept.append(
            services.feedback_save(
                project=project,
                image_bytes=encode(solid_image(rgb, size=(20 + i, 16)), "PNG"),
                label=COLOR_LABELS[int(np.argmax(rgb))],
                source=FeedbackExample.Source.API,
            )
        )
    return kept


def stored_sha256(name: str) -> str:
    with model_storage().open(name, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def stored_runtime(name: str, sha256: str) -> LiteRTRuntime:
    """A stored artifact, fetched (hash-checked) and loaded."""
    return LiteRTRuntime(str(file_cache().fetch(name=name, sha256=sha256, suffix=".tflite")))


def test_the_check_makes_the_variants_and_the_job_stores_and_measures_them(
    project, trained, settings
):
    store_examples(project, 5)  # fewer than FEEDBACK_SCORE_MIN_EXAMPLES: the parity set decides

    version = support.register(project, trained.colors, activate=False)

    variants = version.variants
    assert set(variants) == {"float", *SMALLER}
    assert variants["float"]["size_bytes"] == model_storage().size(version.compiled_file)
    assert variants["float"]["ms_per_frame"] > 0
    for name in SMALLER:
        entry = variants[name]
        assert entry["file"] == f"compiled/{version.sha256}.{name}.tflite"
        assert stored_sha256(entry["file"]) == entry["sha256"] != version.compiled_sha256
        assert entry["size_bytes"] == model_storage().size(entry["file"])
        assert entry["ms_per_frame"] > 0
        assert (entry["on"], entry["examples"]) == ("parity set", settings.VARIANT_PARITY_INPUTS)
        assert 0 <= entry["agreement"] <= 1
        assert entry["eligible"] == (entry["agreement"] >= settings.VARIANT_MIN_AGREEMENT)
    assert version.serve_variant == "float"
    assert selectors.version_spec(version).compiled_sha256 == version.compiled_sha256


def test_a_tflite_source_is_served_as_registered(project, trained, admin_client):
    version = support.register(project, trained.tflite, activate=False)

    assert set(version.variants) == {"float"}
    page = admin_client.get(version_page(version)).content.decode()
    assert "Smaller variants are made from Keras and HDF5 files." in page
    with pytest.raises(services.ModelValidationError, match="has no int8 variant"):
        services.variant_check(version, "int8")


def test_agreement_is_counted_on_stored_feedback_when_there_is_enough(project, trained):
    kept = store_examples(project, 24)

    version = support.register(project, trained.colors, activate=False)

    # Counted here: both artifacts, as stored, on each example as the server prepares it.
    spec = selectors.version_spec(version)
    runtimes = {"float": stored_runtime(version.compiled_file, version.compiled_sha256)}
    for name in SMALLER:
        runtimes[name] = stored_runtime(
            version.variants[name]["file"], version.variants[name]["sha256"]
        )
    agreed = dict.fromkeys(SMALLER, 0)
    for example in kept:
        with model_storage().open(example.storage_name, "rb") as handle:
            frame = Frame(id=example.pk, image=handle.read())
        model_input = prepare_frame(frame, spec=spec, limits=serving.limits()).model_input[None]
        reference = runtimes["float"].predict(model_input).argmax()
        for name in SMALLER:
            agreed[name] += runtimes[name].predict(model_input).argmax() == reference
    for name in SMALLER:
        entry = version.variants[name]
        assert (entry["on"], entry["examples"]) == ("feedback", 24)
        assert entry["agreement"] == round(agreed[name] / 24, 4)


def test_a_variant_below_the_threshold_cannot_be_chosen(project, trained, settings, client):
    settings.VARIANT_MIN_AGREEMENT = 1.01  # no variant can reach it: each one falls short
    version = support.register(project, trained.colors, activate=False)
    assert not version.variants["int8"]["eligible"]
    staff = support.staff_client(client, "view_modelversion", "change_modelversion", "can_activate")

    response = staff.post(version_page(version), {"serve_variant": "int8"})

    assert response.status_code == 200  # the form again, with the reason in words
    errors = response.context["adminform"].form.errors["serve_variant"]
    agreement = version.variants["int8"]["agreement"]
    assert errors == [
        f"The int8 variant of version 2 gives the float version's top answer on {agreement:.1%} "
        "of 200 generated parity inputs; serving it takes at least 101%."
    ]
    version.refresh_from_db()
    assert version.serve_variant == "float"
    assert selectors.version_spec(version).compiled_file == version.compiled_file


def test_choosing_needs_the_activate_permission(project, client):
    version = project.active_version
    assert version.variants["int8"]["eligible"]
    editor = support.staff_client(client, "view_modelversion", "change_modelversion")

    page = editor.get(version_page(version)).content.decode()
    assert 'name="serve_variant"' not in page  # shown, not editable
    editor.post(version_page(version), {"serve_variant": "int8"})

    version.refresh_from_db()
    assert version.serve_variant == "float"


def test_the_watcher_of_a_process_without_redis_sees_a_variant_chosen(project):
    before = swaps._active_versions()["colors"]

    services.version_serve_variant(version=project.active_version, variant="float16")

    assert swaps._active_versions()["colors"] != before


async def predict(communicator, color: str = "red") -> dict:
    await communicator.send_to(bytes_data=encode(solid_image(color), "PNG"))
    reply = json.loads(await communicator.receive_from(timeout=TIMEOUT))
    assert reply["type"] == "prediction", reply
    return reply


def http_top_label(client, color: str) -> str:
    response = client.post(PREDICT, encode(solid_image(color), "PNG"), content_type="image/png")
    assert response.status_code == 200, response.content
    return response.json()["labels"][0]["label"]


async def test_choosing_an_eligible_variant_serves_it_also_to_open_connections(
    project, admin_client, client
):
    version = project.active_version
    int8 = version.variants["int8"]
    assert int8["eligible"]
    serving.model_cache().clear()
    before = [await sync_to_async(http_top_label)(client, color) for color in COLOR_LABELS]
    socket = WebsocketCommunicator(application, "/ws/projects/colors/")
    assert (await socket.connect(timeout=TIMEOUT))[0]
    try:
        await socket.receive_from(timeout=TIMEOUT)  # ready
        assert (await predict(socket))["labels"][0]["label"] == "red"
        assert int8["sha256"] not in serving.model_cache().loaded_keys()

        page = await sync_to_async(admin_client.get)(version_page(version))
        assert "<td>int8</td>" in page.content.decode()
        response = await sync_to_async(admin_client.post)(
            version_page(version), {"serve_variant": "int8"}
        )
        assert response.status_code == 302

        # The open socket hears of it (no `model_changed`: the version is the same) and its
        # next frames run the int8 artifact.
        for _ in range(50):
            reply = await predict(socket)
            if int8["sha256"] in serving.model_cache().loaded_keys():
                break
            await asyncio.sleep(0.05)
        assert int8["sha256"] in serving.model_cache().loaded_keys()
        assert (reply["model_version"], reply["labels"][0]["label"]) == (1, "red")
    finally:
        await socket.disconnect()

    version = await database_sync_to_async(ModelVersion.objects.get)(pk=version.pk)
    spec = (await database_sync_to_async(selectors.project_get_info)(slug="colors")).model
    assert version.serve_variant == "int8"
    assert (spec.compiled_file, spec.compiled_sha256) == (int8["file"], int8["sha256"])
    float_spec = selectors.version_spec(version, variant="float")
    assert spec.version_id == float_spec.version_id
    assert not selectors.same_artifact(spec, float_spec)
    after = [await sync_to_async(http_top_label)(client, color) for color in COLOR_LABELS]
    assert after == before == COLOR_LABELS
    page = (await sync_to_async(admin_client.get)(version_page(version))).content.decode()
    assert "<td>served</td>" in page


def test_a_chosen_variant_that_is_no_longer_eligible_is_not_served(project, settings, admin_client):
    version = project.active_version
    services.version_serve_variant(version=version, variant="int8")
    assert selectors.version_spec(version).compiled_sha256 == version.variants["int8"]["sha256"]

    settings.VARIANT_MIN_AGREEMENT = 1.01  # measured again (a new check) under a stricter bar
    services.version_recheck(version=version)
    version = services.version_check(version=version)  # what the worker does with its job

    assert (version.status, version.serve_variant) == ("ready", "int8")
    assert selectors.version_spec(version).compiled_sha256 == version.compiled_sha256
    page = admin_client.get(version_page(version)).content.decode()
    assert "chosen, but not eligible: the float artifact serves" in page


def test_a_variant_that_does_not_convert_leaves_the_version_ready(
    trained, monkeypatch, tmp_path, settings
):
    # The one fault injected: the child's code runs in this process (not confined) with the
    # converter failing for int8, since a child process cannot be patched from here.
    settings.MODEL_CACHE_DIR = tmp_path / "cache"  # its report must not stay for other tests
    convert = conversion.convert_saved_model

    def failing_int8(directory, target, *, variant="float"):
        if variant == "int8":
            raise RuntimeError("quantizer exploded")
        return convert(directory, target, variant=variant)

    def child_here(source, out_dir, *, model_format, scale, **limits):
        shutil.copyfile(source, out_dir / "model.keras")
        monkeypatch.chdir(out_dir)  # the child names its artifacts by their names in its cwd
        report = child.check_model(
            Path("model.keras"), Path("."), model_format=model_format, scale=scale
        )
        return checked_report(json.loads(json.dumps(report)))

    monkeypatch.setattr(conversion, "convert_saved_model", failing_int8)
    monkeypatch.setattr(launcher, "run_child", child_here)

    version = support.register("colors", trained.colors)

    assert version.status == ModelVersion.Status.READY
    assert version.variants["int8"] == {
        "error": "The int8 variant was not made: quantizer exploded."
    }
    assert version.variants["float16"]["file"].endswith(".float16.tflite")
    with pytest.raises(services.ModelValidationError, match="has no int8 variant: The int8"):
        services.variant_check(version, "int8")


def test_the_child_names_the_variants_as_the_versions_do():
    # Twice written: the check's child imports no Django, whose choices `Variant` are.
    assert ModelVersion.Variant.values == [conversion.FLOAT, *conversion.SMALLER_VARIANTS]


def test_a_variant_the_report_does_not_describe_is_one_not_made():
    report = {
        "ok": True,
        "input_shape": [16, 16, 3],
        "output_shape": [3],
        "runtime": "litert",
        "message": "ok",
        "compiled_path": "compiled.tflite",
        "artifact_sha256": "a" * 64,
        "artifact_bytes": 10,
        "variants": {"int8": {"path": "x.tflite", "artifact_sha256": "not a hash"}, "float16": 3},
    }

    variants = checked_report(report)["variants"]

    assert variants == {
        name: {"error": f"The check's report of the {name} variant could not be read."}
        for name in SMALLER
    }
