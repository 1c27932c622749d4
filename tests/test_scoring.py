"""A new version's score on the project's stored feedback, made by the registration job before
anyone activates it, beside the version in service: shown in the admin, printed by
`score_version`."""

import io
import json

import numpy as np
import pytest
from django.core.management import CommandError, call_command
from django_tasks_db.models import DBTaskResult

from predictions import services, tasks
from predictions.models import FeedbackExample, ModelVersion, Project, model_storage
from tests import support
from tests.support import COLOR_LABELS, encode, solid_image

pytestmark = pytest.mark.django_db(transaction=True)

PREDICT = "/api/projects/colors/predict"
CONTENT_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg"}
# The second version: the same model with its outputs named in another order, so that it
# answers otherwise than the first.
ROTATED = {"labels": ["green", "blue", "red"]}


@pytest.fixture
def project(trained):
    """The colours project with version 1 in service."""
    project = Project.objects.create(slug="colors", name="Colours")
    support.register(project, trained.colors)
    return project


def images(count: int) -> list[tuple[bytes, str, str]]:
    """(bytes, format, label) of `count` images of mixed colours, each labelled by its
    strongest channel, and every fifth by another label (people get things wrong too)."""
    rng = np.random.default_rng(7)
    made = []
    for i in range(count):
        rgb = tuple(int(c) for c in rng.integers(0, 256, 3))
        fmt = "JPEG" if i % 4 == 0 else "PNG"
        label = COLOR_LABELS[(int(np.argmax(rgb)) + (i % 5 == 0)) % 3]
        made.append((encode(solid_image(rgb, size=(20 + i, 16)), fmt), fmt, label))
    return made


def store(project, examples) -> list[FeedbackExample]:
    """Keep each image as people's feedback does: decoded, stored in the model storage."""
    return [
        services.feedback_save(
            project=project, image_bytes=data, label=label, source=FeedbackExample.Source.API
        )
        for data, _, label in examples
    ]


def agreed_over_http(client, examples) -> int:
    """How many examples the version in service answers with their label, asked over HTTP."""
    agreed = 0
    for data, fmt, label in examples:
        response = client.post(PREDICT, data, content_type=CONTENT_TYPES[fmt])
        assert response.status_code == 200, response.content
        agreed += response.json()["labels"][0]["label"] == label
    return agreed


def without_time(score: dict) -> dict:
    assert score.pop("scored_at")
    return score


def test_a_new_version_is_scored_on_the_stored_examples_beside_the_one_in_service(
    client, project, trained
):
    examples = images(24)
    store(project, examples)

    new = support.register(project, trained.tflite, activate=False, **ROTATED)

    project.refresh_from_db()
    assert project.active_version.number == 1  # nobody activated it: the score is there anyway
    active_agreed = agreed_over_http(client, examples)
    services.version_activate(version=new)
    new_agreed = agreed_over_http(client, examples)
    assert without_time(new.feedback_score) == {
        "examples": 24,
        "agreed": new_agreed,
        "share": round(new_agreed / 24, 4),
        "unreadable": 0,
        "active_version": 1,
        "active_agreed": active_agreed,
        "active_share": round(active_agreed / 24, 4),
    }
    assert new_agreed != active_agreed  # its labels did change answers


def test_a_version_activated_when_ready_is_scored_before_it_goes_into_service(project, trained):
    store(project, images(20))

    new = support.register(project, trained.tflite, activate=True)

    project.refresh_from_db()
    assert project.active_version == new
    assert new.feedback_score["examples"] == 20 and new.feedback_score["active_version"] == 1


def test_the_latest_examples_up_to_the_maximum(project, trained, settings):
    settings.FEEDBACK_SCORE_MAX_EXAMPLES = 20
    kept = store(project, images(22))
    for oldest in kept[:2]:  # left out, so never read
        model_storage().delete(oldest.storage_name)

    new = support.register(project, trained.tflite, activate=False)

    assert (new.feedback_score["examples"], new.feedback_score["unreadable"]) == (20, 0)


def test_too_few_examples_with_its_labels_are_not_scored(project, trained):
    examples = images(25)
    store(project, examples)
    others = sum(label == "blue" for _, _, label in examples)
    assert 25 - others < 20

    # The second version names its third output otherwise: "blue" examples say nothing of it.
    new = support.register(project, trained.tflite, labels=["red", "green", "navy"], activate=False)

    assert new.status == ModelVersion.Status.READY
    assert new.feedback_score == {
        "examples": 25 - others,
        "skipped": f"The project has {25 - others} stored examples with one of this version's "
        "labels; a score takes at least 20.",
    }


def test_an_example_gone_or_no_longer_an_image_is_counted_unreadable(project, trained):
    kept = store(project, images(22))
    storage = model_storage()
    storage.delete(kept[3].storage_name)
    with storage.open(kept[5].storage_name, "wb") as handle:
        handle.write(b"not an image any more")

    new = support.register(project, trained.tflite, activate=False)

    assert (new.feedback_score["examples"], new.feedback_score["unreadable"]) == (20, 2)


def test_a_scoring_failure_never_fails_the_version(project, trained, monkeypatch):
    store(project, images(20))

    # A mock only for this fault (a model that cannot be loaded for scoring): the real parts
    # do not fail that way on demand.
    def unavailable(spec):
        raise RuntimeError("the model storage is away")

    monkeypatch.setattr("predictions.services.scoring.load_runtime", unavailable)
    new = support.register(project, trained.tflite, activate=True)

    assert new.status == ModelVersion.Status.READY
    assert without_time(new.feedback_score) == {"error": "the model storage is away"}
    project.refresh_from_db()
    assert project.active_version == new


def test_the_admin_shows_the_score_and_scores_again(admin_client, project, trained):
    store(project, images(21))
    new = support.register(project, trained.tflite, activate=False, **ROTATED)
    score = new.feedback_score
    shown = (
        f"{score['share']:.1%} ({score['agreed']} of 21 examples); v1, then in service: "
        f"{score['active_share']:.1%} ({score['active_agreed']} of 21)"
    )

    page = admin_client.get(f"/admin/predictions/modelversion/{new.pk}/change/")
    assert shown in page.content.decode()
    project_page = admin_client.get(f"/admin/predictions/project/{project.pk}/change/")
    assert shown in project_page.content.decode()

    ModelVersion.objects.filter(pk=new.pk).update(feedback_score={})
    response = admin_client.post(
        "/admin/predictions/modelversion/",
        {"action": "score_versions", "_selected_action": [new.pk], "index": 0},
        follow=True,
    )
    assert "Queued 1 ready version(s) for the worker to score." in response.content.decode()
    task = DBTaskResult.objects.get(task_path="predictions.tasks.score_version", status="READY")
    tasks.score_version.call(*task.args_kwargs["args"])  # what the worker does with it
    new.refresh_from_db()
    assert without_time(new.feedback_score) == without_time(score)


def test_score_version_prints_the_score_as_one_json_line(project, trained):
    store(project, images(20))
    new = support.register(project, trained.tflite, activate=False)
    out = io.StringIO()

    call_command("score_version", "colors", "2", stdout=out)

    printed = json.loads(out.getvalue())
    new.refresh_from_db()
    assert printed == new.feedback_score and printed["examples"] == 20
    assert out.getvalue().count("\n") == 1


@pytest.mark.parametrize(
    ("slug", "number", "words"),
    [
        ("nope", "1", "No project named 'nope'."),
        ("colors", "9", "The project 'colors' has no version 9."),
        ("colors", "1", "Version 1 is failed: only a ready version is scored."),
    ],
)
def test_score_version_refuses_in_words(project, slug, number, words):
    ModelVersion.objects.filter(number=1).update(status=ModelVersion.Status.FAILED)

    with pytest.raises(CommandError, match=words):
        call_command("score_version", slug, number, stdout=io.StringIO())
