"""LiteRT `.tflite` files made elsewhere: checked with LiteRT alone (no TensorFlow), served as
their own artifact, answering as LiteRT's interpreter does; what LiteRT cannot serve here is
refused in words."""

import hashlib

import numpy as np
import pytest

from predictions import serving
from predictions.checking import check_and_compile, vet_model_file
from predictions.checking.sandbox import run_child
from predictions.formats import ModelFormat
from predictions.inference.errors import ModelValidationError
from predictions.inference.runtime import LiteRTRuntime
from predictions.inference.spec import ModelSpec
from predictions.models import model_storage
from predictions.storage import file_cache
from tests.support import COLOR_LABELS


def sha256_of(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check(path, *, labels=COLOR_LABELS):
    return check_and_compile(path=path, sha256=sha256_of(path), labels=labels, scale=(0.0, 1.0))


def interpreter_outputs(path, batch: np.ndarray) -> np.ndarray:
    """LiteRT's own interpreter, one frame at a time, as its documentation runs it."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    (source,), (target,) = interpreter.get_input_details(), interpreter.get_output_details()
    outputs = []
    for frame in batch:
        interpreter.set_tensor(source["index"], frame[None])
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(target["index"])[0])
    return np.stack(outputs)


def run(path, out_dir, model_format: ModelFormat) -> dict:
    return run_child(
        path,
        out_dir,
        model_format=model_format,
        scale=(0.0, 1.0),
        timeout=120,
        memory_bytes=4 * 1024**3,
        max_unpacked_bytes=1024**3,
    )


def test_a_tflite_made_elsewhere_is_its_own_artifact(trained):
    sha256 = sha256_of(trained.tflite)

    report = check(trained.tflite)

    assert report.format == "tflite" and report.runtime == "litert"
    assert report.input_shape == (16, 16, 3) and report.output_shape == (3,)
    assert report.compiled_sha256 == sha256
    assert report.compiled_path == file_cache().directory / f"{sha256}.tflite"
    assert report.compiled_path.read_bytes() == trained.tflite.read_bytes()
    assert "Loaded with LiteRT" in report.message


def test_the_tflite_check_never_starts_tensorflow(trained, tmp_path):
    litert = run(trained.tflite, tmp_path, ModelFormat.TFLITE)
    keras = run(trained.colors, tmp_path, ModelFormat.KERAS)

    assert litert["ok"] and litert["tensorflow_loaded"] is False
    assert keras["ok"] and keras["tensorflow_loaded"] is True  # the flag does say it


def test_a_tflite_version_is_served_as_the_interpreter_answers(trained):
    report = check(trained.tflite)
    with open(trained.tflite, "rb") as handle:
        name = model_storage().save(f"compiled/{report.compiled_sha256}.tflite", handle)
    spec = ModelSpec(
        version_id=1,
        number=1,
        file_name=name,
        sha256=report.compiled_sha256,
        input_shape=report.input_shape,
        labels=tuple(COLOR_LABELS),
        runtime="litert",
        format=ModelFormat.TFLITE.value,
        compiled_file=name,
        compiled_sha256=report.compiled_sha256,
    )

    runtime, _ = serving.load_runtime(spec)

    batch = np.random.default_rng(2).uniform(0, 1, (5, 16, 16, 3)).astype(np.float32)
    expected = interpreter_outputs(trained.tflite, batch)
    np.testing.assert_allclose(runtime.predict(batch), expected, atol=1e-6)


def test_a_model_with_a_fixed_batch_of_one_still_takes_batches(trained):
    report = check(trained.tflite_fixed_batch, labels=[])
    assert report.input_shape == (8, 8, 1) and report.output_shape == (64,)

    batch = np.random.default_rng(3).uniform(0, 1, (3, 8, 8, 1)).astype(np.float32)
    outputs = LiteRTRuntime(str(report.compiled_path)).predict(batch)

    np.testing.assert_allclose(outputs, interpreter_outputs(trained.tflite_fixed_batch, batch))


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("tflite_custom_op", "operators LiteRT does not build in (BesselI1e)"),
        ("tflite_flex_op", "operators LiteRT does not build in (FlexCumprod)"),
        ("tflite_two_inputs", "takes 2 inputs; it must take one image"),
        ("tflite_vector_input", "input shape is [1, 8]"),
        ("tflite_int8_input", "input is int8 (quantized)"),
    ],
)
def test_what_litert_cannot_serve_here_is_refused(trained, name, reason):
    path = getattr(trained, name)
    assert vet_model_file(path) is ModelFormat.TFLITE  # the cheap check cannot tell

    with pytest.raises(ModelValidationError) as refused:
        check(path, labels=[])

    assert reason in str(refused.value)


def test_a_damaged_flatbuffer_is_refused(trained, tmp_path):
    path = tmp_path / "cut.tflite"
    path.write_bytes(trained.tflite.read_bytes()[:300])
    with pytest.raises(ModelValidationError, match=r"damaged|could not load"):
        check(path, labels=[])


def test_the_size_is_limited(trained):
    with pytest.raises(ModelValidationError, match="the limit is 1000"):
        vet_model_file(trained.tflite, max_unpacked_bytes=1000)
