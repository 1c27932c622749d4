"""The bundled demo model: a small CNN on scikit-learn's 8x8 digits (no download needed).

The model takes the data's own form, 8x8x1 with values 0..16, and rescales inside itself, so
its version declares `fit_ink` preprocessing with the range 0..16.
"""

from pathlib import Path

DIGIT_LABELS = [str(digit) for digit in range(10)]
MIN_ACCURACY = 0.95


def train_digits_model(path: Path, *, seed: int = 0, epochs: int = 40) -> float:
    """Train, save to `path` (.keras) and return the accuracy on a held-out fifth of the data."""
    import keras
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    keras.utils.set_random_seed(seed)
    digits = load_digits()
    images = digits.images.astype("float32")[..., np.newaxis]
    x_train, x_test, y_train, y_test = train_test_split(
        images, digits.target, test_size=0.2, random_state=seed, stratify=digits.target
    )
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Rescaling(1 / 16),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
            keras.layers.Conv2D(64, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dropout(0.3),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=epochs, batch_size=32, verbose=0)
    _, accuracy = model.evaluate(x_test, y_test, verbose=0)
    if accuracy < MIN_ACCURACY:
        raise RuntimeError(f"The digits model reached only {accuracy:.3f} held-out accuracy.")
    model.save(path)
    return float(accuracy)
