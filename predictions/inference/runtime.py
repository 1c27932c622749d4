"""Runtimes: a loaded model behind one `predict(batch)` call."""

import os
import statistics
import threading
import time

import numpy as np

# Keep TensorFlow's start-up chatter out of the server log; errors still show.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


class ModelFormatError(ValueError):
    """The model loaded but does not have the form this server serves."""


class KerasRuntime:
    """A Keras model (`.keras` or `.h5`) loaded once (safe mode) and called through one compiled tf.function.

    `model.predict` builds a fresh execution pipeline on every call (tens of ms for a tiny
    model); a traced function with a fixed signature costs well under a millisecond.
    """

    name = "keras"

    def __init__(self, path: str | None = None, *, model=None):
        """Load `path` (`.keras` or `.h5`: Keras picks its loader by the suffix) in safe mode,
        or wrap `model`, already loaded (the check's child loads it through its format)."""
        import tensorflow as tf

        if model is None:
            import keras

            model = keras.saving.load_model(path, compile=False, safe_mode=True)
        self.model = model
        self.input_shape = _image_input_shape(self.model)
        signature = [tf.TensorSpec((None, *self.input_shape), tf.float32)]

        @tf.function(input_signature=signature, reduce_retracing=True)
        def call(batch):
            return model(batch, training=False)

        self._call = call

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Run one batch (N x H x W x C float32); returns the model's output as a numpy array."""
        output = self._call(batch)
        if isinstance(output, (list, tuple, dict)):
            raise ModelFormatError("The model has more than one output.")
        return output.numpy()


class LiteRTRuntime:
    """A LiteRT (TFLite) flatbuffer under the `ai-edge-litert` interpreter: no TensorFlow import.

    The interpreter is not thread-safe and resizes its input per batch size, so calls are
    serialised; the batcher calls it from one thread anyway. A model converted with a fixed
    batch of one (a `.tflite` made elsewhere may be) runs a batch one frame at a time.
    """

    name = "litert"

    def __init__(self, path: str, *, threads: int = 2):
        from ai_edge_litert.interpreter import Interpreter

        self._interpreter = Interpreter(model_path=path, num_threads=threads)
        inputs = self._interpreter.get_input_details()
        outputs = self._interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelFormatError("The compiled model must have one input and one output.")
        self._input, self._output = inputs[0], outputs[0]
        signature = [int(dim) for dim in self._input["shape_signature"]]
        signature = signature or [int(dim) for dim in self._input["shape"]]
        self.input_shape = tuple(signature[1:])
        self._fixed_batch = signature[0] == 1
        self._batch_size = 0
        self._lock = threading.Lock()

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Run one batch (N x H x W x C float32); returns the output as a numpy array."""
        with self._lock:
            if self._fixed_batch and batch.shape[0] != 1:
                return np.concatenate([self._run(batch[i : i + 1]) for i in range(len(batch))])
            return self._run(batch)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        if batch.shape[0] != self._batch_size:
            self._interpreter.resize_tensor_input(self._input["index"], batch.shape)
            self._interpreter.allocate_tensors()
            self._batch_size = batch.shape[0]
        self._interpreter.set_tensor(self._input["index"], batch)
        self._interpreter.invoke()
        return self._interpreter.get_tensor(self._output["index"]).copy()


def median_ms_per_frame(runtimes: dict, batch: np.ndarray, *, warm_up: int, runs: int) -> dict:
    """Each runtime's median ms for `batch` over `runs` calls after `warm_up` ones; the runtimes
    take turns, so that a busy moment of the machine falls on all of them."""
    for runtime in runtimes.values():
        for _ in range(warm_up):
            runtime.predict(batch)
    times = {name: [] for name in runtimes}
    for _ in range(runs):
        for name, runtime in runtimes.items():
            started = time.perf_counter()
            runtime.predict(batch)
            times[name].append((time.perf_counter() - started) * 1000)
    return {name: statistics.median(measured) for name, measured in times.items()}


def _image_input_shape(model) -> tuple[int, int, int]:
    inputs = model.inputs
    if len(inputs) != 1:
        raise ModelFormatError(f"The model takes {len(inputs)} inputs; it must take one image.")
    shape = tuple(inputs[0].shape)
    if len(shape) != 4 or any(not isinstance(dim, int) for dim in shape[1:]):
        raise ModelFormatError(
            f"The model's input shape is {list(shape)}; it must be "
            "[batch, height, width, channels] with a fixed height, width and channels."
        )
    if shape[3] not in (1, 3):
        raise ModelFormatError(
            f"The model's input has {shape[3]} channels; it must take 1 (grayscale) or 3 (RGB)."
        )
    return shape[1], shape[2], shape[3]
