"""What the serving path needs to know about a model version, free of the ORM."""

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelSpec:
    """A snapshot of one registered version: where its file is and how to feed it."""

    version_id: int
    number: int
    file_name: str
    sha256: str
    input_shape: tuple[int, int, int]
    labels: tuple[str, ...]
    resize: str = "stretch"
    scale_min: float = 0.0
    scale_max: float = 1.0
    runtime: str = "keras"
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
