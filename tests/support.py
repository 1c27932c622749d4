"""Test helpers: small trained models, images, and real servers (SeaweedFS S3, daphne)."""

import hashlib
import io
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from harness.servers import (  # noqa: F401  (tests reach these as support.X)
    REDIS,
    AdminSession,
    DaphneServer,
    OutsideDatabase,
    RedisServer,
    S3Bucket,
    SeaweedS3,
    WorkerProcess,
    free_port,
    manage,
    migrated_env,
    outside_env,
    ports_free,
    running,
    show_versions,
    stop_process,
    wait_for,
    wait_for_version,
)

PROJECT_DIR = Path(__file__).resolve().parent.parent
COLOR_LABELS = ["red", "green", "blue"]
COLORS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


# --- Images -----------------------------------------------------------------------------------


def solid_image(color: str | tuple, size=(64, 48), mode="RGB") -> Image.Image:
    rgb = COLORS[color] if isinstance(color, str) else color
    return Image.new("RGB", size, rgb).convert(mode)


def encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


# --- Models -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainedModels:
    colors: Path  # 16x16x3 -> red / green / blue (softmax)
    lambda_model: Path  # holds a Lambda layer: Keras safe mode refuses it
    needs_tf_ops: Path  # 8x8x1 -> 2 via CategoryEncoding: its DenseBincount is no LiteRT builtin
    two_inputs: Path  # a model this server cannot feed
    h5: Path  # an HDF5 file holding the colours model's weights only, no model
    not_a_model: Path  # a zip without a Keras config
    h5_tf_keras: Path  # the colours model as a Keras 2 `.h5`, written by tf_keras
    h5_keras3: Path  # the colours model as Keras 3's legacy writer saves `.h5`
    h5_lambda: Path  # a Keras 2 `.h5` whose Lambda touches the file named in $PAYLOAD_MARKER_ENV
    tflite: Path  # the colours model exported to LiteRT elsewhere
    tflite_fixed_batch: Path  # 8x8x1 -> 64, builtin ops, converted with a fixed batch of one
    tflite_custom_op: Path  # 8x8x1 with a custom operator (BesselI1e)
    tflite_flex_op: Path  # 8x8x1 with a select TensorFlow op (FlexCumprod)
    tflite_two_inputs: Path
    tflite_vector_input: Path  # input [1, 8]: not an image
    tflite_int8_input: Path  # the colours model quantized, int8 in and out


PAYLOAD_MARKER_ENV = "MODELSERVER_TEST_PAYLOAD_MARKER"


def train_test_models(folder: Path) -> TrainedModels:
    import keras

    keras.utils.set_random_seed(1)
    rng = np.random.default_rng(1)
    # Colour classifier: noisy images whose dominant colour is the class.
    classes = rng.integers(0, 3, size=900)
    base = np.array([COLORS[name] for name in COLOR_LABELS], dtype=np.float32) / 255
    x = base[classes][:, None, None, :] + rng.normal(0, 0.15, size=(900, 16, 16, 3))
    x = np.clip(x, 0, 1).astype(np.float32)
    colors = keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    colors.compile(optimizer=keras.optimizers.Adam(0.02), loss="sparse_categorical_crossentropy")
    colors.fit(x, classes, epochs=15, batch_size=64, verbose=0)
    colors.save(folder / "colors.keras")

    lambda_model = keras.Sequential(
        [keras.Input((4, 4, 1)), keras.layers.Lambda(lambda t: t * 2), keras.layers.Flatten()]
    )
    lambda_model.save(folder / "lambda.keras")

    needs_tf_ops = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Rescaling(3.0),
            keras.layers.Flatten(),
            keras.layers.CategoryEncoding(num_tokens=4, output_mode="count"),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )
    needs_tf_ops.save(folder / "needs-tf-ops.keras")

    first, second = keras.Input((4, 4, 1)), keras.Input((4, 4, 1))
    joined = keras.layers.Flatten()(keras.layers.Add()([first, second]))
    keras.Model([first, second], joined).save(folder / "two-inputs.keras")

    colors.save_weights(folder / "colors.weights.h5")
    h5 = folder / "colors.h5"
    shutil.copy(folder / "colors.weights.h5", h5)

    not_a_model = folder / "not-a-model.keras"
    import zipfile

    with zipfile.ZipFile(not_a_model, "w") as archive:
        archive.writestr("readme.txt", "no model here")

    return TrainedModels(
        colors=folder / "colors.keras",
        lambda_model=folder / "lambda.keras",
        needs_tf_ops=folder / "needs-tf-ops.keras",
        two_inputs=folder / "two-inputs.keras",
        h5=h5,
        not_a_model=not_a_model,
        **_legacy_h5_files(folder, colors),
        **_tflite_files(folder, colors),
    )


def _legacy_h5_files(folder: Path, colors) -> dict[str, Path]:
    """Genuine legacy `.h5` models: tf_keras (Keras 2) and Keras 3's legacy writer."""
    import warnings

    import tf_keras

    keras2 = tf_keras.Sequential(
        [
            tf_keras.Input((16, 16, 3)),
            tf_keras.layers.Conv2D(8, 3, activation="relu"),
            tf_keras.layers.GlobalAveragePooling2D(),
            tf_keras.layers.Dense(3, activation="softmax"),
        ]
    )
    keras2.set_weights(colors.get_weights())  # the same classifier, in Keras 2's own file
    with warnings.catch_warnings():  # "HDF5 is legacy": that is the point here
        warnings.simplefilter("ignore", UserWarning)
        keras2.save(folder / "colors-tf-keras.h5")
        colors.save(folder / "colors-keras3.h5")

    # Marshalled bytecode that touches a marker file whenever it runs (Keras calls it while
    # building the model, so a load that gets that far leaves the marker).
    def payload(name: str):  # a lambda (what Keras marshals) with the name in its closure
        return lambda t: (
            t * 2
            if __import__("os").environ.get(name) is None
            else (open(__import__("os").environ[name], "w").close(), t * 2)[1]
        )

    lambda_layer = tf_keras.layers.Lambda(payload(PAYLOAD_MARKER_ENV))
    hostile = tf_keras.Sequential(
        [tf_keras.Input((4, 4, 1)), lambda_layer, tf_keras.layers.Flatten()]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        hostile.save(folder / "lambda.h5")
    return {
        "h5_tf_keras": folder / "colors-tf-keras.h5",
        "h5_keras3": folder / "colors-keras3.h5",
        "h5_lambda": folder / "lambda.h5",
    }


def _tflite_files(folder: Path, colors) -> dict[str, Path]:
    """LiteRT flatbuffers as other tools make them: exported, converted, custom and odd."""
    import warnings

    import tensorflow as tf

    def convert(function, *shapes, select_tf_ops=False, **options) -> bytes:
        signature = [tf.TensorSpec(shape, tf.float32) for shape in shapes]
        function = tf.function(function, input_signature=signature)
        converter = tf.lite.TFLiteConverter.from_concrete_functions(
            [function.get_concrete_function()], function
        )
        if select_tf_ops:
            converter.target_spec.supported_ops = [
                tf.lite.OpsSet.TFLITE_BUILTINS,
                tf.lite.OpsSet.SELECT_TF_OPS,
            ]
        for name, value in options.items():
            setattr(converter, name, value)
        with warnings.catch_warnings():  # no input statistics for the int8 model: none needed
            warnings.simplefilter("ignore", UserWarning)
            return converter.convert()

    def representative():
        for _ in range(4):
            yield [np.random.default_rng(0).uniform(0, 1, (1, 16, 16, 3)).astype(np.float32)]

    colors.export(str(folder / "colors.tflite"), format="litert", verbose=False)
    grid = (1, 8, 8, 1)
    files = {
        "tflite_fixed_batch": convert(lambda x: tf.nn.softmax(tf.reshape(x, [1, 64])), grid),
        "tflite_custom_op": convert(
            lambda x: tf.reshape(tf.math.bessel_i1e(x), [1, 64]), grid, allow_custom_ops=True
        ),
        "tflite_flex_op": convert(
            lambda x: tf.reshape(tf.math.cumprod(x, axis=1), [1, 64]), grid, select_tf_ops=True
        ),
        "tflite_two_inputs": convert(lambda a, b: tf.reshape(a + b, [1, 64]), grid, grid),
        "tflite_vector_input": convert(tf.nn.softmax, (1, 8)),
        "tflite_int8_input": convert(
            lambda x: colors(x),
            (1, 16, 16, 3),
            optimizations=[tf.lite.Optimize.DEFAULT],
            representative_dataset=representative,
            inference_input_type=tf.int8,
            inference_output_type=tf.int8,
        ),
    }
    paths = {"tflite": folder / "colors.tflite"}
    for name, content in files.items():
        paths[name] = folder / f"{name.removeprefix('tflite_')}.tflite"
        paths[name].write_bytes(content)
    return paths


# --- Registering in this process ----------------------------------------------------------------


# The token of the private projects tests make (the database keeps its hash only).
SECRET_TOKEN = "s3cret-token"
SECRET_TOKEN_HASH = hashlib.sha256(SECRET_TOKEN.encode()).hexdigest()
# For a `manage.py shell -c` line that makes the project `secret` private with that token.
MAKE_SECRET_PRIVATE = (
    "from predictions.models import Project; "
    f"Project.objects.filter(slug='secret').update(is_public=False, token_hash='{SECRET_TOKEN_HASH}')"
)


def register_colour_model(
    env: dict, folder: Path, model: Path, *slugs: str, options: tuple[str, ...] = ()
) -> None:
    """For a live server's database (`env` and its `folder`, from `migrated_env`): register
    `model` with the colour labels for each slug and activate it, as `manage.py
    register_model` does from a shell (its check in a child process)."""
    labels = folder / "colour-labels.txt"
    labels.write_text("\n".join(COLOR_LABELS))
    for slug in slugs:
        manage(
            "register_model", slug, "--file", str(model), "--labels-file", str(labels),
            *options, "--activate", env=env,
        )  # fmt: skip


def register(project, path: Path, *, labels=COLOR_LABELS, activate=True, is_public=True, **options):
    """Register a model file for a project (a Project, or a slug created on first use), checked
    at once in a child process as `register_model` does without --no-wait."""
    from predictions import services
    from predictions.models import Project

    if isinstance(project, str):
        project, _ = Project.objects.get_or_create(
            slug=project,
            defaults={
                "name": project.title(),
                "is_public": is_public,
                "token_hash": SECRET_TOKEN_HASH,
            },
        )
    with open(path, "rb") as upload:
        return services.version_register(
            project=project, upload=upload, labels=list(labels), activate=activate, **options
        )


def staff_client(client, *codenames):
    """Log `client` in as a staff user holding only the named permissions of the predictions
    app; returns it."""
    from django.contrib.auth.models import Permission, User

    user = User.objects.create_user("staff", password="staff-password-1", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label="predictions", codename__in=codenames)
    )
    client.force_login(user)
    return client


def judged_feedback_rows(project, versions: dict, rows) -> None:
    """Feedback rows (no files) for `(version number, label given, label predicted)` triples,
    `versions` mapping numbers to ModelVersions: what accuracy counts are made of."""
    from predictions.models import FeedbackExample

    for i, (number, label, predicted) in enumerate(rows):
        FeedbackExample.objects.create(
            project=project,
            label=label,
            predicted=predicted,
            version=versions[number],
            sha256=f"{i:064x}",
            storage_name=f"feedback/{project.slug}/{label}/{i:064x}.png",
            image_format="png",
            source=FeedbackExample.Source.API,
        )
