"""A model file's format is recognised by its content; anything else is refused in words."""

import shutil

import pytest

from predictions.checking import vet_model_file
from predictions.formats import HEAD_BYTES, ModelFormat, sniff_format
from predictions.inference.errors import ModelValidationError
from tests.support import encode, solid_image


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("colors", ModelFormat.KERAS),
        ("h5_tf_keras", ModelFormat.H5),
        ("h5_keras3", ModelFormat.H5),
        ("tflite", ModelFormat.TFLITE),
    ],
)
def test_each_format_is_recognised_by_its_content(trained, tmp_path, name, expected):
    unnamed = tmp_path / "upload.bin"  # the file's name plays no part
    shutil.copy(getattr(trained, name), unnamed)

    assert vet_model_file(unnamed) is expected
    assert sniff_format(unnamed.read_bytes()[:HEAD_BYTES]) is expected


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"just some text, no model in it\n",
        b'{"class_name": "Sequential", "config": {}}',
        encode(solid_image("red"), "PNG"),
        b"\x89HDF",  # a signature cut short
        b"\x00\x00\x00\x00TFL",
    ],
    ids=["empty", "text", "json", "png", "short-hdf5", "short-tflite"],
)
def test_other_files_are_refused_naming_the_accepted_formats(tmp_path, content):
    path = tmp_path / "model.keras"
    path.write_bytes(content)

    with pytest.raises(ModelValidationError) as refused:
        vet_model_file(path)

    message = str(refused.value)
    assert message.startswith("This file is not a model this server reads")
    assert "`.keras`" in message and "`.h5`" in message and "`.tflite`" in message
