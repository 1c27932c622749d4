"""`register_model` run as an operator runs it (a separate process), and `bootstrap_demo`."""

import json

import pytest
from django.core.management import call_command

from predictions.models import ModelVersion, Project
from tests import support


@pytest.fixture(scope="module")
def outside(tmp_path_factory, s3_server):
    """A migrated database and an S3 bucket that command processes share."""
    folder = tmp_path_factory.mktemp("commands")
    bucket = s3_server.create_bucket()
    with support.OutsideDatabase(folder) as database_url:
        env = support.outside_env(database_url=database_url, folder=folder, s3=bucket)
        support.manage("migrate", "--noinput", env=env)
        yield env, bucket, folder


def query(env, code: str):
    """Evaluate an ORM expression in a process of its own; returns its JSON result."""
    script = f"import json; from predictions.models import *; print(json.dumps({code}))"
    return json.loads(support.manage("shell", "-c", script, env=env).stdout.splitlines()[-1])


def test_register_file_with_labels_creates_and_activates(outside, trained):
    env, _, folder = outside
    labels = folder / "labels.txt"
    labels.write_text("red\ngreen\nblue\n")

    result = support.manage(
        "register_model", "paint", "--file", str(trained.colors),
        "--labels-file", str(labels), "--name", "Paint colours", "--activate", env=env,
    )  # fmt: skip

    assert result.stdout.strip() == "1"
    project = query(
        env,
        "list(Project.objects.filter(slug='paint').values('name', 'is_public', "
        "'active_version__number', 'active_version__labels'))",
    )
    assert project == [
        {
            "name": "Paint colours",
            "is_public": True,
            "active_version__number": 1,
            "active_version__labels": ["red", "green", "blue"],
        }
    ]
    again = support.manage("register_model", "paint", "--file", str(trained.colors), env=env)
    assert again.stdout.strip() == "2"
    assert query(env, "Project.objects.get(slug='paint').active_version.number") == 1


def test_register_existing_s3_key(outside, trained):
    env, bucket, _ = outside
    bucket.put("elsewhere/colors.keras", trained.colors)

    result = support.manage(
        "register_model", "keyed", "--s3-key", "elsewhere/colors.keras", "--activate", env=env
    )

    assert result.stdout.strip() == "1"
    assert query(env, "Project.objects.get(slug='keyed').active_version.file.name") == (
        "elsewhere/colors.keras"
    )


def test_a_model_refused_on_sight_exits_nonzero_with_one_line(outside, trained):
    env, _, _ = outside
    result = support.manage(
        "register_model", "broken", "--file", str(trained.lambda_model), env=env, check=False
    )
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("CommandError")]
    assert len(errors) == 1 and "`Lambda` layer" in errors[0]
    assert result.stdout.strip() == ""
    assert query(env, "Project.objects.filter(slug='broken').exists()") is False


def test_a_model_that_fails_its_check_prints_its_number_then_exits_nonzero(outside, trained):
    env, _, _ = outside
    result = support.manage(
        "register_model", "two-in", "--file", str(trained.two_inputs), env=env, check=False
    )
    assert result.returncode != 0
    assert result.stdout.strip() == "1"
    errors = [line for line in result.stderr.splitlines() if line.startswith("CommandError")]
    assert len(errors) == 1 and "Version 1 failed its check" in errors[0]
    assert "takes 2 inputs" in errors[0]
    assert support.show_versions("two-in", env=env)[0]["status"] == "failed"


def test_missing_file_and_labels_file_are_reported(outside, tmp_path):
    env, _, _ = outside
    result = support.manage(
        "register_model", "x", "--file", str(tmp_path / "nope.keras"), env=env, check=False
    )
    assert result.returncode != 0 and "Cannot read" in result.stderr


@pytest.mark.django_db
def test_bootstrap_demo_creates_the_digits_project_once(capsys):
    call_command("bootstrap_demo")
    first = capsys.readouterr().out
    assert "held-out accuracy" in first
    accuracy = float(first.split("held-out accuracy ")[1].split()[0])
    assert accuracy >= 0.95

    project = Project.objects.get(slug="digits")
    version = project.active_version
    assert version.labels == [str(digit) for digit in range(10)]
    assert (version.resize, version.scale_min, version.scale_max) == ("fit_ink", 0.0, 16.0)
    assert version.input_shape == [8, 8, 1]

    call_command("bootstrap_demo")
    assert "in place" in capsys.readouterr().out
    assert ModelVersion.objects.filter(project=project).count() == 1
