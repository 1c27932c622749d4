"""Runtimes: a loaded model behind one `predict(batch)` call."""

import os

import numpy as np

# Keep TensorFlow's start-up chatter out of the server log; errors still show.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


class ModelFormatError(ValueError):
    """The model loaded but does not have the form this server serves."""


class KerasRuntime:
    """A `.keras` model loaded once (safe mode) and called through one compiled tf.function.

    `model.predict` builds a fresh execution pipeline on every call (tens of ms for a tiny
    model); a traced function with a fixed signature costs well under a millisecond.
    """

    name = "keras"

    def __init__(self, path: str):
        import keras
        import tensorflow as tf

        self.model = keras.saving.load_model(path, compile=False, safe_mode=True)
        self.input_shape = _image_input_shape(self.model)
        model = self.model
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
