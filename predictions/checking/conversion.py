"""In the check's child: export a loaded Keras model to LiteRT and check the two agree.

Parity means: on a blank input and a few random ones in the version's input range, the LiteRT
outputs are within PARITY_ATOL + PARITY_RTOL * |keras| of Keras's, and the top-1 class is the
same wherever Keras has a clear winner. Float32 kernels (XNNPACK against Eigen) differ by
about 1e-6 relative; a wrong conversion differs by O(1).
"""

from pathlib import Path

import numpy as np

from ..inference.runtime import KerasRuntime, LiteRTRuntime

PARITY_ATOL = 1e-4
PARITY_RTOL = 1e-3
PARITY_INPUTS = 4


def parity_inputs(input_shape: tuple[int, int, int], *, scale: tuple[float, float]) -> np.ndarray:
    """A blank input and PARITY_INPUTS random ones in the range [scale[0], scale[1]]."""
    rng = np.random.default_rng(0)
    low, high = scale
    inputs = rng.uniform(low, high, size=(PARITY_INPUTS, *input_shape)).astype(np.float32)
    return np.concatenate([np.zeros((1, *input_shape), np.float32), inputs])


def convert_and_check(
    runtime: KerasRuntime, out_dir: Path, *, scale: tuple[float, float]
) -> tuple[Path, float]:
    """Export to `out_dir/compiled.tflite` and check parity; returns (path, max abs
    difference). Raises on any failure: the caller keeps the Keras runtime then."""
    target = Path(out_dir) / "compiled.tflite"
    runtime.model.export(str(target), format="litert", verbose=False)
    inputs = parity_inputs(runtime.input_shape, scale=scale)
    expected = runtime.predict(inputs)
    actual = LiteRTRuntime(str(target), threads=1).predict(inputs)
    return target, parity_difference(expected, actual)


def parity_difference(expected: np.ndarray, actual: np.ndarray) -> float:
    """The largest absolute difference; raises `ValueError` when the outputs disagree."""
    if actual.shape != expected.shape:
        raise ValueError(f"LiteRT output shape {actual.shape} differs from Keras {expected.shape}")
    difference = np.abs(actual - expected)
    if np.any(difference > PARITY_ATOL + PARITY_RTOL * np.abs(expected)):
        raise ValueError(f"LiteRT differs from Keras by up to {difference.max():.3g}")
    if expected.ndim == 2 and expected.shape[1] > 1:
        ordered = np.sort(expected, axis=1)
        clear = ordered[:, -1] - ordered[:, -2] > 2 * PARITY_ATOL
        if np.any(expected.argmax(1)[clear] != actual.argmax(1)[clear]):
            raise ValueError("LiteRT's top-1 class differs from Keras's")
    return float(difference.max())
