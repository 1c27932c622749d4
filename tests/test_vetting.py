"""The config walk that vets a `.keras` or `.h5` model before anything loads it (in the check's
child): only objects Keras itself registers pass, so every way past it that was found is
refused in words, and a payload that would leave a marker file never runs."""

import json
import shutil
import warnings
import zipfile

import h5py
import pytest

from predictions.checking import vet_model_file
from predictions.checking.sandbox import run_child
from predictions.formats import ModelFormat, config, keras_names, keras_names_allowed
from predictions.inference.errors import ModelValidationError

# --- Models whose Lambda touches a marker file whenever it runs --------------------------------


def touching(marker: str):
    """A lambda (what Keras marshals) that creates `marker`; the path is in its closure."""
    return lambda t: (open(marker, "w").close(), t * 2)[1]


@pytest.fixture(scope="module")
def payload_dir(tmp_path_factory):
    """Where the payloads' marker would appear; the children below also work here, so the
    sandbox would let a payload that ran write it."""
    return tmp_path_factory.mktemp("payload")


@pytest.fixture(scope="module")
def lambdas(payload_dir):
    import keras
    import tf_keras

    marker = str(payload_dir / "ran")
    keras.Sequential(
        [keras.Input((4, 4, 1)), keras.layers.Lambda(touching(marker)), keras.layers.Flatten()]
    ).save(payload_dir / "lambda.keras")
    keras2 = tf_keras.Sequential(
        [
            tf_keras.Input((4, 4, 1)),
            tf_keras.layers.Lambda(touching(marker)),
            tf_keras.layers.Flatten(),
        ]
    )
    with warnings.catch_warnings():  # "HDF5 is legacy": that is the point here
        warnings.simplefilter("ignore", UserWarning)
        keras2.save(payload_dir / "lambda.h5")
    (payload_dir / "ran").unlink()  # building the models here ran both payloads
    return {"keras": payload_dir / "lambda.keras", "h5": payload_dir / "lambda.h5"}


def read_config(path) -> str:
    if path.suffix == ".keras":
        with zipfile.ZipFile(path) as archive:
            return archive.read("config.json").decode()
    with h5py.File(path) as handle:
        text = handle.attrs["model_config"]
    return text if isinstance(text, str) else text.decode()


def write_config(source, target, text: str):
    """Copy a model file with its config replaced by `text` (raw JSON, escapes and all)."""
    if source.suffix == ".keras":
        with zipfile.ZipFile(source) as original, zipfile.ZipFile(target, "w") as copy:
            for member in original.infolist():
                data = original.read(member)
                copy.writestr(member, text.encode() if member.filename == "config.json" else data)
    else:
        shutil.copy(source, target)
        with h5py.File(target, "a") as handle:
            handle.attrs["model_config"] = text
    return target


def edit_lambda(text: str, edit) -> str:
    """The config with its Lambda layer's object passed through `edit`."""
    parsed = json.loads(text)
    layers = parsed["config"]["layers"]
    [index] = [i for i, layer in enumerate(layers) if layer["class_name"] == "Lambda"]
    edit(layers[index])
    return json.dumps(parsed)


def as_dotted(layer):  # Keras resolves `module + "." + class_name`: keras.layers.Lambda
    layer.update(module="keras", class_name="layers.Lambda", registered_name=None)


def as_tfsm(layer):  # loads a SavedModel from a path, which runs its graph
    layer.update(module="keras.layers", class_name="TFSMLayer")
    layer["config"] = {"filepath": "/tmp/saved-model", "call_endpoint": "serve"}


def with_registered_name(layer):  # Keras looks a registered name up before the class
    layer.update(module="keras.layers", class_name="Dense", registered_name="custom>Payload")


def as_unlisted(layer):  # a Keras class, but not a layer a model is made of
    layer.update(module="keras.utils", class_name="FeatureSpace")


def nested(depth: int):
    def edit(layer):
        layer["config"]["deep"] = "DEEP"

    def text_edit(text: str) -> str:
        return edit_lambda(text, edit).replace('"DEEP"', "[" * depth + "]" * depth)

    return text_edit


VARIANTS = {
    "dotted-class-name": (lambda text: edit_lambda(text, as_dotted), "`Lambda` layer"),
    "escaped-name": (
        # \u004c is "L": the raw text never says Lambda, the parsed config does.
        lambda text: text.replace('"class_name": "Lambda"', '"class_name": "\\u004cambda"'),
        "`Lambda` layer",
    ),
    "tfsm-layer": (lambda text: edit_lambda(text, as_tfsm), "`TFSMLayer` layer"),
    "registered-name": (
        lambda text: edit_lambda(text, with_registered_name),
        "registered name `custom>Payload`",
    ),
    "not-allowed": (lambda text: edit_lambda(text, as_unlisted), "FeatureSpace"),
    "nested-10000": (nested(10000), "nested more than 100 levels deep"),
}


@pytest.mark.parametrize("model_format", ["keras", "h5"])
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_each_way_past_the_walk_is_refused_and_runs_nothing(
    lambdas, payload_dir, tmp_path, model_format, variant
):
    edit, reason = VARIANTS[variant]
    source = lambdas[model_format]
    path = write_config(source, tmp_path / f"hostile{source.suffix}", edit(read_config(source)))
    if variant == "escaped-name":
        assert '"Lambda"' not in read_config(path)  # only the parsed text says so
    marker = payload_dir / "ran"

    with pytest.raises(ModelValidationError) as refused:
        vet_model_file(path)  # the web process's check: vetted in a child
    assert reason in str(refused.value)

    report = run_child(  # the check itself, working where the marker would go
        path,
        payload_dir,
        model_format=ModelFormat(model_format),
        scale=(0.0, 1.0),
        timeout=120,
        memory_bytes=2 * 1024**3,
        max_unpacked_bytes=1024**3,
    )
    assert not report["ok"] and reason in report["error"]
    assert report["tensorflow_loaded"] is False  # refused before Keras was imported
    assert not marker.exists()


def test_the_payloads_are_real(lambdas, payload_dir, tmp_path):
    """Keras with safe mode off runs the Lambda, also named `layers.Lambda` under the module
    `keras` (the walk's first finding): only the walk and safe mode stand in between."""
    import keras

    marker = payload_dir / "ran"
    source = lambdas["keras"]
    dotted = write_config(
        source, tmp_path / "dotted.keras", edit_lambda(read_config(source), as_dotted)
    )
    try:
        for path in (dotted, lambdas["h5"]):
            marker.unlink(missing_ok=True)
            keras.saving.load_model(str(path), compile=False, safe_mode=False)
            assert marker.exists(), path
    finally:
        marker.unlink(missing_ok=True)


# --- The allow-list ----------------------------------------------------------------------------


def test_the_allow_list_is_what_this_keras_registers():
    """`keras_names_allowed` is generated: after a Keras upgrade this fails until
    `python -m predictions.formats.keras_names` writes the list again."""
    import keras

    assert keras_names_allowed.KERAS_VERSION == keras.__version__
    fresh = keras_names.from_keras()
    for name, names in fresh.items():
        assert getattr(keras_names_allowed, name) == names, name
    short = {name.rsplit(".", 1)[1] for name in keras_names_allowed.CLASSES}
    assert not short & keras_names.CODE_LAYERS
    assert "keras.layers.Dense" in keras_names_allowed.CLASSES
    assert "keras.src.ops.numpy.Multiply" in keras_names_allowed.OPERATIONS
    assert "keras.src.ops.core.Cond" not in keras_names_allowed.OPERATIONS  # takes functions
    assert "keras.activations.relu" in keras_names_allowed.FUNCTIONS
    assert "keras.activations.deserialize" not in keras_names_allowed.FUNCTIONS


@pytest.mark.parametrize("name", ["MobileNetV2", "MobileNetV3Small", "EfficientNetB0"])
def test_keras_applications_pass_the_walk(name):
    """Real image models, with the tensor operations a functional model records
    (MobileNetV3 multiplies by `keras.ops`), as Keras serializes them into `config.json`."""
    import keras

    model = getattr(keras.applications, name)(weights=None)
    config.check_config(json.loads(json.dumps(keras.saving.serialize_keras_object(model))))


def obj(module, class_name, inner=None, registered_name=None) -> dict:
    node = {"class_name": class_name, "config": {} if inner is None else inner}
    if module is not ...:
        node["module"] = module
    if registered_name is not None:
        node["registered_name"] = registered_name
    return node


def model(*layers, compile_config=None) -> dict:
    root = obj("keras", "Sequential", {"layers": list(layers)})
    if compile_config is not None:
        root["compile_config"] = compile_config
    return root


ADAM = obj("keras.optimizers", "Adam")
LOSS = obj("keras.metrics", "function", "sparse_categorical_crossentropy")  # its canonical name


@pytest.mark.parametrize(
    ("node", "reason"),
    [
        (model(obj("keras.layers", "Dense")), None),
        (model(obj(..., "Dense")), None),  # Keras 2: a bare class name
        (model(obj("keras.layers", "Dense", registered_name="Dense")), None),
        (model(obj("keras.src.ops.numpy", "Multiply")), None),
        (model(obj("keras.activations", "function", "relu", registered_name="relu")), None),
        (model(obj(..., "__keras_tensor__", {"keras_history": ["x", 0, 0]})), None),
        (model(compile_config={"optimizer": ADAM, "loss": LOSS}), None),
        (model(ADAM), "`keras.optimizers.Adam`"),  # training objects: in compile_config only
        (model(obj(..., "Adam")), "the class `Adam`"),
        (model(obj("keras", "function", "config.enable_unsafe_deserialization")), "function"),
        (model(obj("keras.config", "function", "enable_unsafe_deserialization")), "unsafe"),
        (model(obj("keras.utils", "function", "get_file")), "`keras.utils.get_file`"),
        (model(obj("builtins", "function", "eval")), "module `builtins`"),
        (model(obj(None, "function", "relu")), "other than by its Keras module"),
        (model(obj("keras.src.ops.core", "Cond")), "`keras.src.ops.core.Cond`"),
        (model(obj("keras.layers", "Dense", registered_name="Conv2D")), "registered name"),
        (model(obj("keras.layers", "Dense.__init__")), "not a plain class name"),
        (model(obj("keras layers", "Dense")), "not a plain module name"),
        (model(obj("keras.layers", ["Dense"])), "not text"),
        (model(obj("keras.layers", "Layer>Lambda")), "`Lambda` layer"),
        (model(obj(..., "__lambda__", {"code": "4wEAAA"})), "holds Python code"),
        (model(obj(..., "TypeSpec")), "`TypeSpec` object"),
        (model(obj("keras.layers", "JaxLayer")), "`JaxLayer` layer"),
        (model({"function_type": "lambda", "module": "keras"}), "holds Python code"),
    ],
)
def test_the_walk_allows_keras_objects_only(node, reason):
    if reason is None:
        config.check_config(node)
    else:
        with pytest.raises(ModelValidationError) as refused:
            config.check_config(node)
        assert reason in str(refused.value)


def test_depth_is_bounded_without_recursion():
    """Deep enough for JSON's own parser to give up, or shallow enough for it not to: either
    way the same refusal in words, and a walk that never recurses."""
    for depth in (config.MAX_CONFIG_DEPTH + 1, 5000, 100_000):
        text = '{"a": ' + "[" * depth + "]" * depth + "}"
        with pytest.raises(ModelValidationError, match="nested more than 100 levels deep"):
            config.check_config_text(text, source="config")
    config.check_config_text("[" * 99 + "]" * 99, source="config")
