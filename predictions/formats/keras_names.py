"""Which Keras objects a model config may name: the generator of `keras_names_allowed`.

The allow-list is a generated constant, not read from Keras at check time: the config walk runs
in a child of the web process too (the admin form's check), which must answer in a second or
two and so never imports Keras (that is TensorFlow: seconds). A test regenerates the list from
the installed Keras and compares, so an upgrade that changes it fails until
`python -m predictions.formats.keras_names` writes the new one.

What it holds, by the `module.class_name` Keras writes (`serialize_with_public_class`: the
canonical `keras_export` name split at its last dot; `Functional` by its Python module):
- `CLASSES`: the layers (models among them), initializers, regularizers, constraints and dtype
  policies Keras exports, less the layers that run code of their own or load files
  (`CODE_LAYERS`);
- `OPERATIONS`: the tensor operations of `keras.ops` (`keras.src.ops.numpy.Multiply`), which a
  functional model that calls `keras.ops` records by their Python module (MobileNetV3 and
  ConvNeXt among `keras.applications` do), less those that take a function
  (`keras.ops.cond`, `map`, `while_loop`, ...) and the base classes;
- `FUNCTIONS`: the activations Keras exports (`keras.activations.relu`), less `get`,
  `serialize` and `deserialize`;
- `TRAINING_CLASSES` and `TRAINING_FUNCTIONS`: optimizers, learning-rate schedules, losses and
  metrics, allowed only inside a `compile_config` (which the check's load, `compile=False`,
  drops unread).
"""

import inspect
import sys
import textwrap
from pathlib import Path

# Layers Keras registers that run code of their own or load files: `Lambda` (Python code),
# `TFSMLayer` (a SavedModel from a path), `TorchModuleWrapper`, `JaxLayer`, `FlaxLayer`
# (a foreign framework's module or function).
CODE_LAYERS = frozenset({"Lambda", "TFSMLayer", "TorchModuleWrapper", "JaxLayer", "FlaxLayer"})
# Parameters through which an operation takes a function (`cond`, `map`, `while_loop`, ...).
FUNCTION_PARAMETERS = frozenset(
    {"f", "fn", "fun", "function", "body", "body_fun", "cond", "true_fn", "false_fn", "branches"}
)
NOT_MODELING = frozenset({"get", "serialize", "deserialize"})
MODEL_MODULES = (
    "keras",
    "keras.layers",
    "keras.initializers",
    "keras.regularizers",
    "keras.constraints",
    "keras.dtype_policies",
)
TRAINING_MODULES = (
    "keras.optimizers",
    "keras.optimizers.schedules",
    "keras.losses",
    "keras.metrics",
)
TRAINING_FUNCTION_MODULES = ("keras.losses", "keras.metrics")
TARGET = Path(__file__).with_name("keras_names_allowed.py")


def from_keras() -> dict[str, frozenset[str]]:
    """The four name sets, read from the installed Keras's registry."""
    import keras
    from keras.src import api_export
    from keras.src.constraints import Constraint
    from keras.src.dtype_policies import DTypePolicy
    from keras.src.initializers import Initializer
    from keras.src.layers import Layer
    from keras.src.losses import Loss
    from keras.src.metrics import Metric
    from keras.src.models.functional import Functional
    from keras.src.optimizers import Optimizer
    from keras.src.optimizers.schedules.learning_rate_schedule import LearningRateSchedule
    from keras.src.regularizers import Regularizer

    del keras  # imported for its side effect: every `keras_export` registers its name
    model_bases = (Layer, Initializer, Regularizer, Constraint, DTypePolicy)
    training_bases = (Optimizer, LearningRateSchedule, Loss, Metric)
    names = {
        key: set() for key in ("CLASSES", "FUNCTIONS", "TRAINING_CLASSES", "TRAINING_FUNCTIONS")
    }
    for name, symbol in api_export.REGISTERED_NAMES_TO_OBJS.items():
        module, short = name.rsplit(".", 1)
        if inspect.isclass(symbol):
            if module in MODEL_MODULES and issubclass(symbol, model_bases):
                if short not in CODE_LAYERS:
                    names["CLASSES"].add(name)
            elif module in TRAINING_MODULES and issubclass(symbol, training_bases):
                names["TRAINING_CLASSES"].add(name)
        elif callable(symbol) and short not in NOT_MODELING:
            if module == "keras.activations":
                names["FUNCTIONS"].add(name)
            elif module in TRAINING_FUNCTION_MODULES:
                names["TRAINING_FUNCTIONS"].add(name)
    names["CLASSES"].add(f"{Functional.__module__}.{Functional.__name__}")
    names["OPERATIONS"] = operations()
    return {key: frozenset(value) for key, value in names.items()}


def operations() -> set[str]:
    """`keras.src.ops.<module>.<Class>` of every operation class that takes no function."""
    import importlib
    import pkgutil

    from keras.src import ops
    from keras.src.ops.function import Function
    from keras.src.ops.operation import Operation

    found = set()
    for info in pkgutil.iter_modules(ops.__path__):
        if info.name.endswith("_test"):
            continue
        module = importlib.import_module(f"{ops.__name__}.{info.name}")
        for name, symbol in vars(module).items():
            if (
                inspect.isclass(symbol)
                and issubclass(symbol, Operation)
                and symbol.__module__ == module.__name__
                and symbol not in (Operation, Function)
                and not _takes_a_function(symbol)
            ):
                found.add(f"{module.__name__}.{name}")
    return found


def _takes_a_function(cls) -> bool:
    parameters = set(inspect.signature(cls.__init__).parameters)
    parameters |= set(inspect.signature(cls.call).parameters)
    return bool(parameters & FUNCTION_PARAMETERS)


def render(names: dict[str, frozenset[str]]) -> str:
    """The text of `keras_names_allowed.py`."""
    import keras

    parts = [
        '"""Generated by `python -m predictions.formats.keras_names` from Keras '
        f'{keras.__version__}: do not edit."""\n\nKERAS_VERSION = "{keras.__version__}"\n'
    ]
    for key, values in names.items():
        lines = textwrap.fill(" ".join(sorted(values)), width=96, break_on_hyphens=False)
        parts.append(f'\n{key} = frozenset(\n    """\n{lines}\n""".split()\n)\n')
    return "".join(parts)


if __name__ == "__main__":
    TARGET.write_text(render(from_keras()))
    sys.stdout.write(f"wrote {TARGET}\n")
