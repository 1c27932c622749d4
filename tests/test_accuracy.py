"""Accuracy per version, counted from feedback: in the API for staff and token holders, and
on the project's admin page."""

import pytest

from predictions.models import Project
from tests import support

pytestmark = pytest.mark.django_db

# (version number, label given, label predicted)
FEEDBACK = [
    (1, "red", "red"),
    (1, "red", "blue"),
    (1, "green", "green"),
    (1, "blue", "green"),
    (2, "red", "red"),
    (2, "green", "green"),
    (2, "blue", "blue"),
    (2, "blue", "green"),
    (2, "green", ""),  # says nothing about what the version answered: not counted
]


@pytest.fixture
def project(trained):
    project = Project.objects.create(
        slug="colors", name="Colors", token_hash=support.SECRET_TOKEN_HASH
    )
    versions = {
        1: support.register(project, trained.colors, activate=False),
        2: support.register(project, trained.colors),
    }
    support.judged_feedback_rows(project, versions, FEEDBACK)
    project.refresh_from_db()
    return project


def counted_in_the_test() -> dict:
    expected = {}
    for number, label, predicted in FEEDBACK:
        if not predicted:
            continue
        entry = expected.setdefault(str(number), {"agreed": 0, "total": 0})
        entry["total"] += 1
        entry["agreed"] += label == predicted
    for entry in expected.values():
        entry["share"] = round(entry["agreed"] / entry["total"], 4)
    return expected


def test_staff_see_each_versions_accuracy_in_the_api(admin_client, project):
    body = admin_client.get("/api/projects/colors/").json()

    assert body["accuracy"] == counted_in_the_test()
    assert body["accuracy"]["1"] == {"agreed": 2, "total": 4, "share": 0.5}


def test_anyone_sees_no_accuracy_of_a_public_project(client, project):
    body = client.get("/api/projects/colors/").json()

    assert body["slug"] == "colors" and "accuracy" not in body


def test_a_private_projects_token_holder_sees_its_accuracy(client, project):
    Project.objects.filter(pk=project.pk).update(is_public=False)

    assert client.get("/api/projects/colors/").status_code == 403
    body = client.get(f"/api/projects/colors/?token={support.SECRET_TOKEN}").json()
    assert body["accuracy"] == counted_in_the_test()


def test_the_admin_page_shows_accuracy_and_the_active_versions_confusions(admin_client, project):
    text = admin_client.get(f"/admin/predictions/project/{project.pk}/change/").content.decode()

    assert "<tr><td>v1</td><td>2</td><td>4</td><td>50%</td></tr>" in text
    assert "<tr><td>v2</td><td>3</td><td>4</td><td>75%</td></tr>" in text
    assert "v2 answered wrongly:" in text
    assert "<tr><td>blue</td><td>green</td><td>1</td></tr>" in text
