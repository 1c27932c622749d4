"""Feedback: HTTP feedback through Django's async client and a real daphne with S3, the storage
layout, and the export."""

import base64
import csv
import hashlib
import io
import json
import urllib.error
import urllib.request
import zipfile

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command

from predictions.models import FeedbackExample, model_storage
from predictions.ratelimit import RateLimiter
from predictions.services import label_segment
from tests import support
from tests.support import COLOR_LABELS, SECRET_TOKEN, encode, solid_image

pytestmark = pytest.mark.django_db(transaction=True)
FEEDBACK = "/api/projects/{}/feedback"


def register(slug, path, **options):
    return support.register(slug, path, **options).project


@pytest.fixture(autouse=True)
def generous_rate(settings):
    """Tests other than the rate limit's must not run into it."""
    settings.FEEDBACK_PER_MINUTE = 100_000


@pytest.fixture
def colors(trained):
    return register("colors", trained.colors)


@pytest.fixture
def secret(trained):
    return register("secret", trained.colors, is_public=False)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def test_raw_image_with_query_label(async_client, colors):
    png = encode(solid_image("red"), "PNG")
    response = await async_client.post(
        FEEDBACK.format("colors"), png, content_type="image/png", query_params={"label": "green"}
    )
    assert response.status_code == 201
    assert response.json() == {"type": "feedback_saved", "example": sha(png)}
    example = await FeedbackExample.objects.select_related("version").aget()
    assert (example.label, example.predicted, example.source) == ("green", "", "api")
    assert example.version.number == 1 and not example.reviewed
    key = f"feedback/colors/green/{sha(png)}.png"
    assert example.storage_name == key
    with model_storage().open(key, "rb") as stored:
        assert stored.read() == png


async def test_multipart_form_with_predicted_and_version(async_client, colors):
    jpeg = encode(solid_image("blue"), "JPEG")
    upload = SimpleUploadedFile("frame.jpg", jpeg, "image/jpeg")
    response = await async_client.post(
        FEEDBACK.format("colors"),
        {"image": upload, "label": "blue", "predicted": "red", "model_version": "1"},
    )
    assert response.status_code == 201
    example = await FeedbackExample.objects.aget()
    assert (example.label, example.predicted, example.image_format) == ("blue", "red", "jpg")
    assert model_storage().exists(f"feedback/colors/blue/{sha(jpeg)}.jpg")


async def test_json_body_with_a_data_url(async_client, colors):
    gif = encode(solid_image("green"), "GIF")
    image = "data:image/gif;base64," + base64.b64encode(gif).decode()
    response = await async_client.post(
        FEEDBACK.format("colors"),
        {"image": image, "label": "green", "model_version": 1},
        content_type="application/json",
    )
    assert response.status_code == 201
    assert response.json()["example"] == sha(gif)
    assert model_storage().exists(f"feedback/colors/green/{sha(gif)}.gif")


async def test_the_same_image_twice_is_one_file_and_one_row(async_client, colors, model_folders):
    png = encode(solid_image("red", (20, 20)), "PNG")
    for _ in range(2):
        response = await async_client.post(
            FEEDBACK.format("colors"), png, content_type="image/png", query_params={"label": "red"}
        )
        assert response.status_code == 201
        assert response.json()["example"] == sha(png)
    assert await FeedbackExample.objects.acount() == 1
    folder = model_folders / "model-storage" / "feedback" / "colors" / "red"
    assert [path.name for path in folder.iterdir()] == [f"{sha(png)}.png"]


@pytest.mark.parametrize(
    ("content_type", "body", "query", "code", "words"),
    [
        ("image/png", "red-png", {"label": "purple"}, "bad_request", "not one of version 1"),
        ("image/png", "red-png", {}, "bad_request", 'needs a "label"'),
        ("image/png", b"not an image", {"label": "red"}, "bad_image", "not an image"),
        ("image/png", "red-png", {"label": "red", "model_version": "7"}, "bad_request", "no model version 7"),
        ("image/png", "red-png", {"label": "red", "model_version": "x"}, "bad_request", "version number"),
        ("image/png", "red-png", {"label": "red", "model_version": "9" * 30}, "bad_request", "version number"),
        ("application/json", b'{"pixels": [[0]], "label": "red"}', {}, "bad_request", "not \"pixels\""),
        ("application/xml", b"<x/>", {"label": "red"}, "bad_request", "Unsupported Content-Type"),
    ],
)  # fmt: skip
async def test_refusals_have_the_contract_status_and_code(
    async_client, colors, content_type, body, query, code, words
):
    if body == "red-png":
        body = encode(solid_image("red"), "PNG")
    response = await async_client.post(
        FEEDBACK.format("colors"), body, content_type=content_type, query_params=query
    )
    assert response.status_code == 400
    error = response.json()
    assert (error["type"], error["code"]) == ("error", code)
    assert words in error["message"]
    assert await FeedbackExample.objects.acount() == 0


async def test_unknown_project_is_404(async_client, db):
    response = await async_client.post(
        FEEDBACK.format("nope"), b"x", content_type="image/png", query_params={"label": "red"}
    )
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


async def test_private_project_needs_its_token(async_client, secret):
    png = encode(solid_image("red"), "PNG")
    url = FEEDBACK.format("secret")
    refused = await async_client.post(
        url, png, content_type="image/png", query_params={"label": "red"}
    )
    assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
    accepted = await async_client.post(
        url,
        png,
        content_type="image/png",
        query_params={"label": "red"},
        headers={"Authorization": f"Bearer {SECRET_TOKEN}"},
    )
    assert accepted.status_code == 201
    assert await FeedbackExample.objects.filter(project__slug="secret").acount() == 1


async def test_past_the_rate_limit_is_busy_with_retry_after(async_client, colors, settings):
    settings.FEEDBACK_PER_MINUTE = 2  # a limiter of its own: no other test uses this value
    statuses = []
    for color in ("red", "green", "blue"):
        response = await async_client.post(
            FEEDBACK.format("colors"),
            encode(solid_image(color), "PNG"),
            content_type="image/png",
            query_params={"label": color},
        )
        statuses.append(response.status_code)
    assert statuses == [201, 201, 429]
    assert response.json()["code"] == "busy"
    assert int(response["Retry-After"]) >= 1
    assert await FeedbackExample.objects.acount() == 2


def test_rate_limiter_keeps_a_budget_per_key_and_refills():
    now = [0.0]
    limiter = RateLimiter(2, clock=lambda: now[0])
    assert [limiter.take("a") for _ in range(2)] == [0, 0]
    assert limiter.take("a") == pytest.approx(30)  # one request every 30 s at 2 a minute
    assert limiter.take("b") == 0
    now[0] = 30.0
    assert limiter.take("a") == 0
    assert limiter.take("a") > 0


async def test_cap_of_examples_per_project(async_client, colors, settings):
    settings.FEEDBACK_MAX_EXAMPLES_PER_PROJECT = 1
    for color, status in (("red", 201), ("green", 400)):
        response = await async_client.post(
            FEEDBACK.format("colors"),
            encode(solid_image(color), "PNG"),
            content_type="image/png",
            query_params={"label": color},
        )
        assert response.status_code == status
    assert "as many feedback examples as it may (1)" in response.json()["message"]
    assert await FeedbackExample.objects.acount() == 1


def test_unsafe_labels_are_percent_encoded_in_the_key(trained, client):
    labels = ["red/ish", "dark green", ".."]
    register("odd", trained.colors, labels=labels)
    keys = {}
    for color, label in zip(("red", "green", "blue"), labels, strict=True):
        png = encode(solid_image(color), "PNG")
        response = client.post(
            FEEDBACK.format("odd"), png, content_type="image/png", query_params={"label": label}
        )
        assert response.status_code == 201, response.content
        keys[label] = FeedbackExample.objects.get(label=label).storage_name
        assert model_storage().exists(keys[label])
    segments = {label: key.split("/")[2] for label, key in keys.items()}
    assert segments == {
        "red/ish": "red%2Fish",
        "dark green": "dark%20green",
        "..": "%2E.",
    }
    assert all(len(key.split("/")) == 4 for key in keys.values())
    assert label_segment("plain-label.1") == "plain-label.1"
    assert label_segment("50%") == "50%25"  # never read back as a plain label's segment


def save_examples(project, colors_and_labels):
    from predictions import services

    examples = []
    for color, label in colors_and_labels:
        data = encode(solid_image(color, (16, 16)), "PNG")
        examples.append(
            services.feedback_save(
                project=project, image_bytes=data, label=label, source="page", predicted="red"
            )
        )
    return examples


def test_export_writes_the_dataset_keras_reads(colors, tmp_path):
    import keras

    save_examples(
        colors, [("red", "red"), ((200, 20, 20), "red"), ("blue", "blue"), ("green", "green")]
    )
    target = tmp_path / "dataset"
    call_command("export_feedback", "colors", str(target))
    files = sorted(str(p.relative_to(target)) for p in target.rglob("*.png"))
    assert [name.split("/")[0] for name in files] == ["blue", "green", "red", "red"]
    with open(target / "manifest.csv", newline="") as manifest:
        rows = list(csv.DictReader(manifest))
    assert list(rows[0]) == [
        "path", "label", "predicted", "version", "source", "created_at", "reviewed",
    ]  # fmt: skip
    assert sorted(row["path"] for row in rows) == files
    assert {(row["version"], row["source"], row["reviewed"]) for row in rows} == {
        ("1", "page", "False")
    }
    # The version's label order, not the folders' alphabetical one.
    dataset = keras.utils.image_dataset_from_directory(
        target, class_names=COLOR_LABELS, image_size=(16, 16), batch_size=8, shuffle=False
    )
    assert dataset.class_names == ["red", "green", "blue"]
    images, labels = next(iter(dataset))
    assert images.shape == (4, 16, 16, 3)
    assert labels.numpy().tolist() == [0, 0, 1, 2]


def test_export_reviewed_only(colors, tmp_path):
    _, blue = save_examples(colors, [("red", "red"), ("blue", "blue")])
    FeedbackExample.objects.filter(pk=blue.pk).update(reviewed=True)
    target = tmp_path / "dataset"
    call_command("export_feedback", "colors", str(target), "--reviewed")
    assert [str(p.relative_to(target)) for p in target.rglob("*.png")] == [
        f"blue/{blue.sha256}.png"
    ]
    with open(target / "manifest.csv", newline="") as manifest:
        rows = list(csv.DictReader(manifest))
    assert [(row["label"], row["reviewed"]) for row in rows] == [("blue", "True")]


def test_export_of_an_unknown_project_fails_in_one_line(db, tmp_path):
    with pytest.raises(CommandError, match=r"^No project named 'nope'\.$"):
        call_command("export_feedback", "nope", str(tmp_path))


# --- The admin. -------------------------------------------------------------------------------

EXAMPLES = "/admin/predictions/feedbackexample/"


def test_admin_lists_examples_with_thumbnails_served_to_staff(admin_client, colors):
    red, blue = save_examples(colors, [("red", "red"), ("blue", "blue")])
    page = admin_client.get(EXAMPLES).content.decode()
    for example in (red, blue):
        assert f'<img src="{EXAMPLES}{example.pk}/image/"' in page
    image = admin_client.get(f"{EXAMPLES}{red.pk}/image/")
    assert image.status_code == 200 and image["Content-Type"] == "image/png"
    assert hashlib.sha256(b"".join(image.streaming_content)).hexdigest() == red.sha256
    filtered = admin_client.get(EXAMPLES, {"label": "blue"}).content.decode()
    assert f"{blue.pk}/image/" in filtered and f"{red.pk}/image/" not in filtered


def test_the_image_view_refuses_anonymous_users_and_staff_without_permission(client, colors):
    from django.contrib.auth.models import User

    (example,) = save_examples(colors, [("red", "red")])
    url = f"{EXAMPLES}{example.pk}/image/"
    anonymous = client.get(url)
    assert anonymous.status_code == 302 and anonymous["Location"].startswith("/admin/login/")
    client.force_login(User.objects.create_user("staff", is_staff=True))
    assert client.get(url).status_code == 403


def test_admin_marks_reviewed_and_deletes_with_the_file(admin_client, colors):
    red, blue = save_examples(colors, [("red", "red"), ("blue", "blue")])
    admin_client.post(EXAMPLES, {"action": "mark_reviewed", "_selected_action": [red.pk]})
    assert list(FeedbackExample.objects.filter(reviewed=True)) == [red]
    admin_client.post(
        EXAMPLES, {"action": "delete_selected", "_selected_action": [blue.pk], "post": "yes"}
    )
    assert list(FeedbackExample.objects.all()) == [red]
    assert not model_storage().exists(blue.storage_name)
    assert model_storage().exists(red.storage_name)


def test_admin_downloads_a_project_as_the_export_layout_in_a_zip(admin_client, colors):
    red, _ = save_examples(colors, [("red", "red"), ("blue", "blue")])
    FeedbackExample.objects.filter(pk=red.pk).update(reviewed=True)
    response = admin_client.post(
        "/admin/predictions/project/",
        {"action": "download_reviewed_feedback", "_selected_action": [colors.pk]},
    )
    assert response.status_code == 200
    assert "colors-feedback-reviewed.zip" in response["Content-Disposition"]
    with zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content))) as archive:
        names = sorted(archive.namelist())
        assert names == ["blue/", "green/", "manifest.csv", "red/", f"red/{red.sha256}.png"]
        manifest = archive.read("manifest.csv").decode().splitlines()
    assert manifest[1].startswith(f"red/{red.sha256}.png,red,red,1,page,")


# --- Through a real daphne, with the images in a real S3 bucket. ------------------------------


@pytest.fixture(scope="module")
def live(tmp_path_factory, s3_server, trained):
    folder = tmp_path_factory.mktemp("feedback-e2e")
    bucket = s3_server.create_bucket()
    with support.migrated_env(folder, s3=bucket, production=True, FEEDBACK_PER_MINUTE=100) as env:
        support.register_colour_model(env, folder, trained.colors, "colors")
        server = support.DaphneServer(env, folder / "daphne.log")
        with support.running(server):
            yield server, bucket, env


def test_feedback_lands_in_the_bucket_and_exports_from_it(live, tmp_path):
    server, bucket, env = live
    jpeg = encode(solid_image("blue", (64, 48)), "JPEG", quality=90)
    request = urllib.request.Request(
        f"{server.url}/api/projects/colors/feedback?label=blue&predicted=red&model_version=1",
        data=jpeg,
        headers={"Content-Type": "image/jpeg"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            status, body = response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        status, body = error.code, json.loads(error.read())
    assert (status, body) == (201, {"type": "feedback_saved", "example": sha(jpeg)})
    key = f"feedback/colors/blue/{sha(jpeg)}.jpg"
    stored = bucket.client.get_object(Bucket=bucket.name, Key=key)["Body"].read()
    assert stored == jpeg
    support.manage("export_feedback", "colors", str(tmp_path / "out"), env=env)
    assert (tmp_path / "out" / "blue" / f"{sha(jpeg)}.jpg").read_bytes() == jpeg
