"""What the serving path needs to know about a model version, free of the ORM, and the names
of its runtimes, resize modes and variants (`models.ModelVersion` takes its choices from these)."""

from dataclasses import dataclass

from django.db.models import TextChoices


class Runtime(TextChoices):
    """What runs a ready version."""

    LITERT = "litert", "LiteRT (compiled)"
    KERAS = "keras", "Keras (no longer served: did not convert to LiteRT)"


class Resize(TextChoices):
    """How an image is fitted to the model's input size."""

    STRETCH = "stretch", "resize the whole image to the model's input"
    FIT_INK = "fit_ink", "crop to the ink, centre it, then resize (drawings)"


class Variant(TextChoices):
    """Which LiteRT artifact of a version is served: its float conversion, or a smaller one
    made beside it at registration (served only while it agrees with the float one). The
    check's child, which imports no Django, names them as `checking.conversion` does."""

    FLOAT = "float", "float32 (as converted)"
    INT8 = "int8", "int8 weights (dynamic range)"
    FLOAT16 = "float16", "float16 weights"


@dataclass(frozen=True)
class ModelSpec:
    """A snapshot of one registered version: where its file is and how to feed it."""

    version_id: int
    number: int
    file_name: str
    sha256: str
    input_shape: tuple[int, int, int]
    labels: tuple[str, ...]
    resize: str = Resize.STRETCH
    scale_min: float = 0.0
    scale_max: float = 1.0
    runtime: str = Runtime.KERAS
    format: str = "keras"  # the source file's format (a ModelFormat value)
    compiled_file: str = ""
    compiled_sha256: str = ""

    def meta(self) -> dict:
        """The `model` object of the contract's `ready`, `model_changed` and project replies."""
        return {
            "version": self.number,
            "input_shape": list(self.input_shape),
            "labels": list(self.labels),
        }
