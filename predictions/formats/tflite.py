"""LiteRT (TFLite) flatbuffers converted elsewhere: static checks, and the check the child runs
with LiteRT alone (this module never imports TensorFlow).

A flatbuffer may only use LiteRT's builtin operators: its operator-code table is read with
the schema LiteRT ships (`ai_edge_litert.schema_py_generated`), and a custom operator (its code
is `CUSTOM`, with a name; select TensorFlow ops are custom ones named `Flex...`) is refused in
words before the interpreter prepares anything. The interpreter's own refusal of an
unresolved operator at `allocate_tensors` is the backstop.
"""

import time
from pathlib import Path

from ..inference.errors import ModelValidationError, one_line
from . import DEFAULT_MAX_UNPACKED_BYTES, TFLITE_IDENTIFIER, check_file_size

IMAGE_CHANNELS = (1, 3)


def inspect(path: Path, *, max_unpacked_bytes: int = DEFAULT_MAX_UNPACKED_BYTES) -> None:
    """The flatbuffer's identifier and its size (LiteRT maps the whole file)."""
    with open(path, "rb") as handle:
        head = handle.read(8)
    if head[4:8] != TFLITE_IDENTIFIER:
        raise ModelValidationError("The file is not a LiteRT `.tflite` flatbuffer.")
    check_file_size(path, max_bytes=max_unpacked_bytes, what="`.tflite` file")


# Nothing more to read before LiteRT loads it: `check` reads the operators first.
vet = inspect


def check(path: Path) -> tuple[tuple[int, int, int], tuple[int, ...], str]:
    """Load with the LiteRT interpreter, check the input and output, run once on a blank input;
    returns (input shape [h, w, c], output shape without the batch, message)."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    custom = custom_operators(path)
    if custom:
        names = ", ".join(sorted(custom))
        raise ModelValidationError(
            f"The `.tflite` model uses operators LiteRT does not build in ({names}): only "
            "builtin operators are served (no custom or select TensorFlow `Flex` ops)."
        )
    try:
        interpreter = Interpreter(model_path=str(path), num_threads=1)
        interpreter.allocate_tensors()
    except Exception as exc:  # LiteRT raises ValueError or RuntimeError for a bad model.
        raise ModelValidationError(f"LiteRT could not load the model: {one_line(exc)}") from None
    inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
    if len(inputs) != 1:
        raise ModelValidationError(f"The model takes {len(inputs)} inputs; it must take one image.")
    if len(outputs) != 1:
        raise ModelValidationError(f"The model has {len(outputs)} outputs; it must have one.")
    input_shape = _image_input_shape(inputs[0])
    output = outputs[0]
    if output["dtype"] != np.float32:
        raise ModelValidationError(
            f"The model's output is {np.dtype(output['dtype']).name} (a quantized model?); "
            "only float32 outputs are served."
        )

    blank = np.zeros((1, *input_shape), dtype=np.float32)
    started = time.perf_counter()
    try:
        interpreter.set_tensor(inputs[0]["index"], blank)
        interpreter.invoke()
        result = interpreter.get_tensor(output["index"])
    except Exception as exc:
        raise ModelValidationError(f"The model failed on a blank input: {one_line(exc)}") from None
    elapsed_ms = (time.perf_counter() - started) * 1000
    if not np.isfinite(result).all():
        raise ModelValidationError("The model's output on a blank input is not finite.")
    output_shape = tuple(int(dim) for dim in result.shape[1:])
    _check_batches(path, input_shape, result)
    h, w, c = input_shape
    message = (
        f"Loaded with LiteRT (builtin operators only): input {h}x{w}x{c}, output "
        f"{list(output_shape)}, blank prediction in {elapsed_ms:.1f} ms."
    )
    return input_shape, output_shape, message


def _check_batches(path: Path, input_shape: tuple[int, int, int], single) -> None:
    """The serving runtime batches frames: two blank frames must give the blank answer twice."""
    import numpy as np

    from ..inference.runtime import LiteRTRuntime

    try:
        both = LiteRTRuntime(str(path), threads=1).predict(np.zeros((2, *input_shape), np.float32))
    except Exception as exc:
        raise ModelValidationError(
            f"The model does not run a batch of frames: {one_line(exc)}"
        ) from None
    if both.shape != (2, *single.shape[1:]) or not np.allclose(both, single, atol=1e-5):
        raise ModelValidationError(
            f"The model gives other answers in a batch of two (output shape {list(both.shape)})."
        )


def custom_operators(path: Path) -> set[str]:
    """The names of the custom operators (select TensorFlow ops among them) the model uses."""
    import mmap

    from ai_edge_litert import schema_py_generated as schema

    custom = schema.BuiltinOperator.CUSTOM
    with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        try:
            model = schema.Model.GetRootAs(buf, 0)
            names = set()
            for index in range(model.OperatorCodesLength()):
                code = model.OperatorCodes(index)
                # Codes past 127 live in `builtin_code`; older files keep the deprecated byte.
                if max(code.BuiltinCode(), code.DeprecatedBuiltinCode()) == custom:
                    names.add((code.CustomCode() or b"?").decode(errors="replace"))
        except Exception as exc:  # A damaged flatbuffer: offsets out of range.
            raise ModelValidationError(
                f"The `.tflite` flatbuffer is damaged: {one_line(exc)}"
            ) from None
    return names


def _image_input_shape(details: dict) -> tuple[int, int, int]:
    import numpy as np

    shape = [int(dim) for dim in details["shape"]]
    signature = [int(dim) for dim in details["shape_signature"]] or shape
    if details["dtype"] != np.float32:
        kind = "quantized" if details["quantization"] != (0.0, 0) else "not float32"
        raise ModelValidationError(
            f"The model's input is {np.dtype(details['dtype']).name} ({kind}); it must take "
            "float32 pixels: convert it without integer input quantization."
        )
    if len(shape) != 4 or shape[0] != 1 or min(signature[1:], default=0) < 1:
        raise ModelValidationError(
            f"The model's input shape is {signature}; it must be [batch, height, width, "
            "channels] with a fixed height, width and channels."
        )
    if shape[3] not in IMAGE_CHANNELS:
        raise ModelValidationError(
            f"The model's input has {shape[3]} channels; it must take 1 (grayscale) or 3 (RGB)."
        )
    return shape[1], shape[2], shape[3]
