"""`.keras` archives: malicious and malformed ones are refused before anything loads them."""

import json
import os
import zipfile

import pytest

from predictions import services
from predictions.formats import keras_archive
from predictions.inference.errors import ModelValidationError
from predictions.models import Project


def rewrite(source, target, *, config=None, extra_members=(), drop=()):
    """Copy a `.keras` archive, replacing its config and adding or dropping members."""
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(target, "w") as copy:
        for member in original.infolist():
            if member.filename in drop:
                continue
            data = original.read(member)
            if member.filename == "config.json" and config is not None:
                data = json.dumps(config).encode()
            copy.writestr(member, data)
        for name, data in extra_members:
            copy.writestr(name, data)
    return target


def colors_config(trained) -> dict:
    with zipfile.ZipFile(trained.colors) as archive:
        return json.loads(archive.read("config.json"))


def with_layer(config: dict, layer: dict) -> dict:
    """The colours model with one more layer object, nested inside another layer's config."""
    config = json.loads(json.dumps(config))
    config["config"]["layers"][1]["config"]["nested"] = {"deeper": [layer]}
    return config


MARKER = "/tmp/modelserver-archive-test-marker"
MALICIOUS_LAYERS = {
    "lambda": (
        {"module": "keras.layers", "class_name": "Lambda", "config": {"function": "x"}},
        "`Lambda` layer",
    ),
    "foreign-module": (
        # CVE-2025-1550: a config naming any module and function.
        {"module": "os", "class_name": "system", "config": f"touch {MARKER}"},
        "module `os`",
    ),
    "tfsm-layer": (
        {"module": "keras.layers", "class_name": "TFSMLayer", "config": {"filepath": "/tmp/sm"}},
        "`TFSMLayer` layer",
    ),
    "torch-wrapper": (
        {"module": "keras.layers", "class_name": "TorchModuleWrapper", "config": {}},
        "`TorchModuleWrapper` layer",
    ),
    "lookup-path": (
        # CVE-2025-12058: a vocabulary read from a local file or a URL.
        {
            "module": "keras.layers",
            "class_name": "StringLookup",
            "config": {"vocabulary": "/etc/passwd"},
        },
        "reads its vocabulary from a path",
    ),
    "unsafe-switch": (
        # CVE-2025-9906: a config that turns safe mode off.
        {
            "module": "keras.config",
            "class_name": "function",
            "config": "enable_unsafe_deserialization",
        },
        "enable_unsafe_deserialization",
    ),
}


@pytest.mark.parametrize("case", sorted(MALICIOUS_LAYERS))
def test_malicious_configs_are_refused(trained, tmp_path, case):
    layer, reason = MALICIOUS_LAYERS[case]
    path = rewrite(
        trained.colors, tmp_path / "bad.keras", config=with_layer(colors_config(trained), layer)
    )
    with pytest.raises(ModelValidationError) as refused:
        keras_archive.vet(path)
    assert reason in str(refused.value)


@pytest.mark.django_db
def test_a_payload_never_runs_through_registration(trained, tmp_path):
    layer, _ = MALICIOUS_LAYERS["foreign-module"]
    path = rewrite(
        trained.colors, tmp_path / "bad.keras", config=with_layer(colors_config(trained), layer)
    )
    project = Project.objects.create(slug="victim", name="Victim")
    with open(path, "rb") as upload, pytest.raises(ModelValidationError, match="module `os`"):
        services.version_register(project=project, upload=upload, labels=[])
    assert not os.path.exists(MARKER)
    assert not project.versions.exists()


@pytest.mark.parametrize(
    ("members", "reason"),
    [
        ([("../evil.txt", b"x")], "unsafe path"),
        ([("/etc/cron.d/evil", b"x")], "unsafe path"),
        ([("payload.py", b"import os")], "unexpected member"),
        ([(f"assets/{index}.txt", b"x") for index in range(70)], "members; a model has a handful"),
    ],
)
def test_archive_layout_is_checked(trained, tmp_path, members, reason):
    path = rewrite(trained.colors, tmp_path / "odd.keras", extra_members=members)
    with pytest.raises(ModelValidationError, match=reason):
        keras_archive.vet(path)


def test_unpacked_size_is_limited(trained):
    with pytest.raises(ModelValidationError, match="unpacks to"):
        keras_archive.vet(trained.colors, max_unpacked_bytes=1000)


def test_missing_config_and_broken_json_are_refused(trained, tmp_path):
    no_config = rewrite(trained.colors, tmp_path / "a.keras", drop={"config.json"})
    with pytest.raises(ModelValidationError, match=r"lacks config\.json"):
        keras_archive.vet(no_config)
    broken = tmp_path / "b.keras"
    with zipfile.ZipFile(trained.colors) as original, zipfile.ZipFile(broken, "w") as copy:
        for member in original.infolist():
            data = b"{not json" if member.filename == "config.json" else original.read(member)
            copy.writestr(member, data)
    with pytest.raises(ModelValidationError, match="not valid JSON"):
        keras_archive.vet(broken)


def test_real_keras_models_pass(trained, digits_model_path):
    keras_archive.vet(trained.colors)
    keras_archive.vet(digits_model_path)


@pytest.mark.parametrize("kind", ["external-dataset", "external-link"])
def test_weights_that_reach_outside_the_file_are_refused(trained, tmp_path, kind):
    import h5py

    with zipfile.ZipFile(trained.colors) as archive:
        (tmp_path / "weights.h5").write_bytes(archive.read("model.weights.h5"))
    with h5py.File(tmp_path / "weights.h5", "a") as weights:
        if kind == "external-dataset":
            weights.create_dataset(
                "stolen", shape=(8,), dtype="u1", external=[("/etc/hostname", 0, 8)]
            )
        else:
            weights["stolen"] = h5py.ExternalLink("/etc/secret.h5", "/data")
    path = rewrite(
        trained.colors,
        tmp_path / "bad.keras",
        drop={"model.weights.h5"},
        extra_members=[("model.weights.h5", (tmp_path / "weights.h5").read_bytes())],
    )
    with pytest.raises(ModelValidationError, match="outside the model file"):
        keras_archive.vet(path)


def test_the_server_reads_the_directory_only(trained, tmp_path):
    """`inspect`, the server's own look, reads no member: a hostile config passes it, and the
    child's `vet` refuses it."""
    layer, reason = MALICIOUS_LAYERS["foreign-module"]
    path = rewrite(
        trained.colors, tmp_path / "bad.keras", config=with_layer(colors_config(trained), layer)
    )

    keras_archive.inspect(path)
    with pytest.raises(ModelValidationError, match=reason):
        keras_archive.vet(path)


def test_a_member_that_unpacks_far_beyond_its_size_is_refused(trained, tmp_path):
    path = rewrite(trained.colors, tmp_path / "bomb.keras")
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("assets/zeros.bin", bytes(8 << 20), compress_type=zipfile.ZIP_DEFLATED)

    with pytest.raises(ModelValidationError, match="more than 100 times, refused"):
        keras_archive.inspect(path)
