"""Legacy HDF5 `.h5` models: genuine Keras 2 (tf_keras) and Keras 3 files are checked, compiled
and answer as their own framework does; hostile ones are refused before anything loads them."""

import hashlib
import json
import shutil

import h5py
import numpy as np
import pytest

from predictions.checking import check_and_compile, vet_model_file
from predictions.checking.sandbox import run_child
from predictions.formats import ModelFormat
from predictions.inference.errors import ModelValidationError
from predictions.inference.runtime import LiteRTRuntime
from tests.support import COLOR_LABELS


def sha256_of(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check(path, *, labels=COLOR_LABELS):
    return check_and_compile(path=path, sha256=sha256_of(path), labels=labels, scale=(0.0, 1.0))


def own_predictions(name: str, path, batch: np.ndarray) -> np.ndarray:
    """What the framework that wrote the file answers."""
    if name == "h5_tf_keras":
        import tf_keras as framework
    else:
        import keras as framework
    model = framework.models.load_model(str(path), compile=False)
    return np.asarray(model.predict(batch, verbose=0))


def colour_batch() -> np.ndarray:
    rng = np.random.default_rng(5)
    solid = np.array([[0.86, 0.12, 0.12], [0.12, 0.78, 0.16], [0.12, 0.16, 0.86]], np.float32)
    solids = np.broadcast_to(solid[:, None, None, :], (3, 16, 16, 3))
    noise = rng.uniform(0, 1, (3, 16, 16, 3)).astype(np.float32)
    return np.concatenate([solids, noise]).astype(np.float32)


@pytest.mark.parametrize("name", ["h5_tf_keras", "h5_keras3"])
def test_legacy_files_compile_and_answer_as_their_framework(trained, name):
    path = getattr(trained, name)

    report = check(path)

    assert report.format == "h5" and report.runtime == "litert"
    assert report.input_shape == (16, 16, 3) and report.output_shape == (3,)
    batch = colour_batch()
    expected = own_predictions(name, path, batch)
    actual = LiteRTRuntime(str(report.compiled_path)).predict(batch)
    np.testing.assert_allclose(actual, expected, atol=1e-5, rtol=1e-4)
    assert list(actual[:3].argmax(1)) == [0, 1, 2]  # red, green, blue


def modules_named(node) -> set[str]:
    """Every `module` a parsed config names, at any depth."""
    if isinstance(node, list):
        return set().union(*map(modules_named, node)) if node else set()
    if not isinstance(node, dict):
        return set()
    own = {node["module"]} if isinstance(node.get("module"), str) else set()
    return own.union(*map(modules_named, node.values()))


def test_the_writers_name_only_keras_modules(trained):
    """tf_keras writes its public classes as `keras.*` (not `tf_keras`), Keras 3's legacy
    writer `keras` and `keras.*`: the walk allows exactly these."""
    for path in (trained.h5_tf_keras, trained.h5_keras3):
        with h5py.File(path) as handle:
            modules = modules_named(json.loads(handle.attrs["model_config"]))
        assert modules and all(module.split(".")[0] == "keras" for module in modules), modules


def test_a_lambda_is_refused_wherever_it_is_vetted(trained, tmp_path):
    """Refused by the web process's vetting (in a child), by the check, and by the check's
    child itself. Whether its payload runs: test_vetting.py (this payload finds its marker
    through an environment variable, which the child no longer inherits)."""
    with pytest.raises(ModelValidationError, match="`Lambda` layer"):
        vet_model_file(trained.h5_lambda)
    with pytest.raises(ModelValidationError, match="`Lambda` layer"):
        check(trained.h5_lambda, labels=[])
    report = run_child(
        trained.h5_lambda,
        tmp_path,
        model_format=ModelFormat.H5,
        scale=(0.0, 1.0),
        timeout=120,
        memory_bytes=4 * 1024**3,
        max_unpacked_bytes=1024**3,
    )
    assert not report["ok"] and "`Lambda` layer" in report["error"]


def rewrite_config(source, target, edit) -> str:
    """Copy an `.h5` model with its `model_config` text passed through `edit`."""
    shutil.copy(source, target)
    with h5py.File(target, "a") as handle:
        text = handle.attrs["model_config"]
        handle.attrs["model_config"] = edit(text if isinstance(text, str) else text.decode())
    return target


def with_object(extra: dict):
    """An edit putting `extra` as the Dense layer's kernel initializer."""

    def edit(text: str) -> str:
        config = json.loads(text)
        config["config"]["layers"][-1]["config"]["kernel_initializer"] = extra
        return json.dumps(config)

    return edit


HOSTILE_CONFIGS = {
    "os-system": (
        with_object({"module": "os", "class_name": "system", "config": "touch /tmp/pwned"}),
        "module `os`",
    ),
    "builtins-eval": (
        with_object({"module": "builtins", "class_name": "function", "config": "eval"}),
        "module `builtins`",
    ),
    "escaped-lambda": (
        # \u004c is "L": the raw text never says Lambda, the parsed config does.
        lambda text: text.replace('"class_name": "Dense"', '"class_name": "\\u004cambda"'),
        "`Lambda` layer",
    ),
    "escaped-unsafe-switch": (
        lambda text: with_object(
            {"module": "keras.config", "class_name": "function", "config": "UNSAFE"}
        )(text).replace("UNSAFE", "\\u0065nable_unsafe_deserialization"),
        "enable_unsafe_deserialization",
    ),
    "lookup-path": (
        with_object(
            {
                "module": "keras.layers",
                "class_name": "StringLookup",
                "config": {"vocabulary": "/etc/passwd"},
            }
        ),
        "reads its vocabulary from a path",
    ),
    "marshalled-function": (
        with_object({"module": "keras", "function_type": "lambda", "config": "4wEAAA"}),
        "holds Python code",
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_CONFIGS))
def test_hostile_configs_are_refused(trained, tmp_path, case):
    edit, reason = HOSTILE_CONFIGS[case]
    path = rewrite_config(trained.h5_tf_keras, tmp_path / "hostile.h5", edit)
    with h5py.File(path) as handle:
        raw = handle.attrs["model_config"]
    assert "Lambda" not in raw and "enable_unsafe" not in raw  # only the parsed text says so

    with pytest.raises(ModelValidationError) as refused:
        vet_model_file(path)
    assert reason in str(refused.value)


def test_a_foreign_module_is_refused_by_the_check_too(trained, tmp_path):
    edit, _ = HOSTILE_CONFIGS["os-system"]
    path = rewrite_config(trained.h5_keras3, tmp_path / "hostile.h5", edit)
    with pytest.raises(ModelValidationError, match="module `os`"):
        check(path)


def test_a_weights_only_file_is_refused_in_words(trained):
    with pytest.raises(ModelValidationError, match="holds weights but no model") as refused:
        vet_model_file(trained.h5)
    assert "model.save" in str(refused.value)


@pytest.mark.parametrize("kind", ["external-link", "external-dataset", "soft-link"])
def test_files_that_reach_outside_themselves_are_refused(trained, tmp_path, kind):
    path = tmp_path / "reaching.h5"
    shutil.copy(trained.h5_keras3, path)
    with h5py.File(path, "a") as handle:
        group = handle["model_weights"]
        if kind == "external-link":
            group["stolen"] = h5py.ExternalLink("/etc/secret.h5", "/data")
        elif kind == "external-dataset":
            group.create_dataset(
                "stolen", shape=(8,), dtype="u1", external=[("/etc/hostname", 0, 8)]
            )
        else:
            group["elsewhere"] = h5py.SoftLink("/model_weights/dense")

    with pytest.raises(ModelValidationError, match="outside the model file"):
        vet_model_file(path)


def test_the_size_is_limited(trained):
    with pytest.raises(ModelValidationError, match="the limit is 1000"):
        vet_model_file(trained.h5_keras3, max_unpacked_bytes=1000)


def test_a_damaged_file_is_refused(trained, tmp_path):
    path = tmp_path / "cut.h5"
    path.write_bytes(trained.h5_keras3.read_bytes()[:600])
    with pytest.raises(ModelValidationError, match="not a readable HDF5 file"):
        vet_model_file(path)
