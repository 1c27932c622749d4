"""In the check's child: convert a loaded Keras model to LiteRT and check the two agree.

The conversion is Keras's own LiteRT export taken apart, so the Keras model can be dropped
between its two halves: a SavedModel is written (`keras.export.ExportArchive`, one `serve`
endpoint), the model is released, and only then does the TFLite converter load that SavedModel
and convert it, which is the peak of the whole check (see bench/registration_memory.py).
Only LiteRT's builtin operators are allowed: a model that needs TensorFlow ops does not
convert, and fails its check naming those ops and the layers they come from (`not_converted`):
the web process serves LiteRT only, never TensorFlow.

Parity means: on a blank input and a few random ones in the version's input range, the LiteRT
outputs are within PARITY_ATOL + PARITY_RTOL * |keras| of Keras's, and the top-1 class is the
same wherever Keras has a clear winner. Float32 kernels (XNNPACK against Eigen) differ by
about 1e-6 relative; a wrong conversion differs by O(1).

The same SavedModel also converts to smaller variants (`SMALLER_VARIANTS`): int8 weights with
float activations (dynamic range: no representative data needed) and float16 weights. They are
not held to parity: the registration job measures how often their top-1 agrees with the float
artifact's, and a project serves one only when that is high enough.
"""

import functools
import gc
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..inference.runtime import KerasRuntime, LiteRTRuntime

PARITY_ATOL = 1e-4
PARITY_RTOL = 1e-3
PARITY_INPUTS = 4
# The variants' names, `spec.Variant`'s values: the child imports no Django (with it imported,
# a child short of memory no longer stalls at its limit, and runs into its time limit instead).
FLOAT, INT8, FLOAT16 = "float", "int8", "float16"
SMALLER_VARIANTS = (INT8, FLOAT16)


def parity_inputs(input_shape: tuple[int, int, int], *, scale: tuple[float, float]) -> np.ndarray:
    """A blank input and PARITY_INPUTS random ones in the range [scale[0], scale[1]]."""
    rng = np.random.default_rng(0)
    low, high = scale
    inputs = rng.uniform(low, high, size=(PARITY_INPUTS, *input_shape)).astype(np.float32)
    return np.concatenate([np.zeros((1, *input_shape), np.float32), inputs])


def keras_outputs(runtime: KerasRuntime, inputs: np.ndarray) -> np.ndarray:
    """Keras's answers, one input at a time (a batch of large images costs more memory)."""
    return np.concatenate([runtime.predict(frame[None]) for frame in inputs])


def write_saved_model(runtime: KerasRuntime, directory: Path) -> None:
    """The model's inference call as a SavedModel, as Keras's LiteRT export writes it."""
    import keras
    import tensorflow as tf

    model = runtime.model
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serve",
        functools.partial(model.__call__, training=False),
        input_signature=[tf.TensorSpec((None, *runtime.input_shape), tf.float32)],
    )
    archive.write_out(str(directory), verbose=False)


def release_keras() -> None:
    """Free what a dropped Keras model held, before the converter needs the memory."""
    import keras

    keras.backend.clear_session()
    gc.collect()


def convert_saved_model(directory: Path, target: Path, *, variant: str = FLOAT) -> Path:
    """Convert a SavedModel to a LiteRT flatbuffer of builtin operators, as `variant`; raises
    when it does not convert."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(directory))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    converter.experimental_enable_resource_variables = True
    if variant == INT8:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        # Per-tensor weights from the converter's first quantizer: XNNPACK then runs the whole
        # graph (int8 weights, activations quantized on the fly). The default per-channel
        # weights make hybrid depthwise convolutions that XNNPACK leaves to slower kernels:
        # MobileNetV2 ran 2x slower than float that way, about 1.5x faster this way (2 threads).
        converter.experimental_new_dynamic_range_quantizer = False
        converter._experimental_disable_per_channel = True
    elif variant == FLOAT16:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    flatbuffer = converter.convert()
    del converter
    target.write_bytes(flatbuffer)
    return target


def parity_set(
    input_shape: tuple[int, int, int], *, scale: tuple[float, float], count: int, seed: int = 0
) -> Iterator[np.ndarray]:
    """`count` seeded inputs in the range [scale[0], scale[1]], one at a time (H x W x C): a
    quarter each of flat colours, smooth gradients, coarse blocks and noise, so that a model
    sees some inputs it answers clearly and some it does not."""
    rng = np.random.default_rng(seed)
    h, w, c = input_shape
    low, high = scale
    for i in range(count):
        kind = i % 4
        if kind == 0:  # one colour
            unit = np.broadcast_to(rng.uniform(0, 1, (1, 1, c)), (h, w, c))
        elif kind == 1:  # a gradient between two colours, in a random direction
            angle = rng.uniform(0, 2 * np.pi)
            ys, xs = np.mgrid[0:h, 0:w]
            ramp = np.cos(angle) * xs / max(w - 1, 1) + np.sin(angle) * ys / max(h - 1, 1)
            ramp = (ramp - ramp.min()) / max(np.ptp(ramp), 1e-6)
            start, end = rng.uniform(0, 1, (2, c))
            unit = start + ramp[..., None] * (end - start)
        elif kind == 2:  # coarse blocks, 2 to 8 a side
            blocks = int(rng.integers(2, 9))
            coarse = rng.uniform(0, 1, (blocks, blocks, c))
            unit = coarse[np.arange(h) * blocks // h][:, np.arange(w) * blocks // w]
        else:
            unit = rng.uniform(0, 1, (h, w, c))
        yield (low + unit * (high - low)).astype(np.float32)


# The converter names each op it cannot lower as `fused["Op:", "model/layer/..."]`, and sums
# them up in a line "TF Select ops: A, B".
_OP_IN_LAYER = re.compile(r'fused\["(\w+):", "[^/"]+/([^/"@]+)/')
_SELECT_OPS = re.compile(r"TF Select ops: ([\w, ]+)")


def not_converted(exc: Exception) -> str:
    """Why a model did not convert, in words: the TensorFlow ops that are not LiteRT builtins
    and the layers they come from, when the converter's error names them."""
    text = str(exc)
    summary = _SELECT_OPS.search(text)
    ops = [op.strip() for op in summary.group(1).split(",")] if summary else []
    layers = []
    for op, layer in _OP_IN_LAYER.findall(text):
        if op not in ops and not summary:
            ops.append(op)
        if layer not in layers:
            layers.append(layer)
    if not ops:
        return " ".join(text.split())[:300] or type(exc).__name__
    where = f" (in layer {', '.join(layers[:5])})" if layers else ""
    return f"TensorFlow op {', '.join(ops[:8])}{where} is not a LiteRT builtin"


def litert_outputs(path: Path, inputs: np.ndarray) -> np.ndarray:
    return LiteRTRuntime(str(path), threads=1).predict(inputs)


def parity_difference(expected: np.ndarray, actual: np.ndarray) -> float:
    """The largest absolute difference; raises `ValueError` when the outputs disagree."""
    if actual.shape != expected.shape:
        raise ValueError(f"LiteRT output shape {actual.shape} differs from Keras {expected.shape}")
    difference = np.abs(actual - expected)
    if not np.isfinite(actual).all():
        raise ValueError("LiteRT's outputs are not finite")
    if np.any(difference > PARITY_ATOL + PARITY_RTOL * np.abs(expected)):
        raise ValueError(f"LiteRT differs from Keras by up to {difference.max():.3g}")
    if expected.ndim == 2 and expected.shape[1] > 1:
        ordered = np.sort(expected, axis=1)
        clear = ordered[:, -1] - ordered[:, -2] > 2 * PARITY_ATOL
        if np.any(expected.argmax(1)[clear] != actual.argmax(1)[clear]):
            raise ValueError("LiteRT's top-1 class differs from Keras's")
    return float(difference.max())
