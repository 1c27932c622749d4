"""The model file formats this server registers, known from a file's content."""

import enum


class ModelFormat(enum.StrEnum):
    KERAS = "keras"  # a Keras 3 `.keras` archive (a zip)
    H5 = "h5"  # a legacy HDF5 model saved by Keras 2 / tf.keras, or Keras 3's legacy writer
    TFLITE = "tflite"  # a LiteRT (TFLite) flatbuffer converted elsewhere

    @property
    def suffix(self) -> str:
        """The file name ending Keras and LiteRT expect for this format."""
        return f".{self.value}"


ACCEPTED_FORMATS_TEXT = (
    "a Keras 3 `.keras` archive, a legacy Keras HDF5 `.h5` model, or a LiteRT `.tflite` flatbuffer"
)
