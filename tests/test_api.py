"""The HTTP API, health and metrics, through Django's async test client."""

import base64

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from predictions.models import Project
from tests import support
from tests.support import COLOR_LABELS, SECRET_TOKEN, encode, solid_image

pytestmark = pytest.mark.django_db(transaction=True)
PREDICT = "/api/projects/{}/predict"


def register(slug, path, **options):
    return support.register(slug, path, **options).project


@pytest.fixture
def colors(trained):
    return register("colors", trained.colors)


@pytest.fixture
def secret(trained):
    return register("secret", trained.colors, is_public=False)


async def test_raw_image_body(async_client, colors):
    png = encode(solid_image("red"), "PNG")
    response = await async_client.post(PREDICT.format("colors"), png, content_type="image/png")
    assert response.status_code == 200
    body = response.json()
    assert (body["type"], body["id"], body["model_version"]) == ("prediction", None, 1)
    assert body["labels"][0]["label"] == "red"


async def test_multipart_image_file(async_client, colors):
    upload = SimpleUploadedFile("frame.jpg", encode(solid_image("blue"), "JPEG"), "image/jpeg")
    response = await async_client.post(PREDICT.format("colors"), {"image": upload})
    assert response.status_code == 200
    assert response.json()["labels"][0]["label"] == "blue"


async def test_json_text_frame(async_client, colors):
    image = base64.b64encode(encode(solid_image("green"), "WEBP")).decode()
    response = await async_client.post(
        PREDICT.format("colors"),
        {"id": "x", "image": image, "top_k": 2},
        content_type="application/json",
    )
    body = response.json()
    assert response.status_code == 200
    assert body["id"] == "x" and [label["label"] for label in body["labels"]][:1] == ["green"]
    assert len(body["labels"]) == 2


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        (b"garbage", "image/png", 400, "bad_image"),
        (b"{broken", "application/json", 400, "bad_request"),
        (b'{"id": 1, "pixels": [[0]]}', "application/json", 400, "bad_shape"),
        (b"<xml/>", "application/xml", 400, "bad_request"),
    ],
)
async def test_errors_have_the_contract_status_and_code(
    async_client, colors, body, content_type, status, code
):
    response = await async_client.post(PREDICT.format("colors"), body, content_type=content_type)
    assert response.status_code == status
    error = response.json()
    assert (error["type"], error["code"]) == ("error", code)
    assert len(error["message"].split()) >= 3


async def test_oversize_body_is_413(async_client, colors, settings):
    settings.MAX_IMAGE_BYTES = 1000
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2000
    response = await async_client.post(
        PREDICT.format("colors"), b"\0" * 5000, content_type="image/png"
    )
    assert response.status_code == 413
    assert response.json()["code"] == "too_large"


async def test_no_active_model_is_503(async_client, db):
    await Project.objects.acreate(slug="empty", name="Empty")
    png = encode(solid_image("red"), "PNG")
    response = await async_client.post(PREDICT.format("empty"), png, content_type="image/png")
    assert response.status_code == 503
    assert response.json()["code"] == "model_unavailable"


async def test_unknown_project_is_404(async_client, db):
    response = await async_client.post(PREDICT.format("nope"), b"x", content_type="image/png")
    assert response.status_code == 404
    assert (await async_client.get("/api/projects/nope/")).status_code == 404


async def test_private_project_takes_its_token_in_query_or_header(async_client, secret):
    png = encode(solid_image("red"), "PNG")
    url = PREDICT.format("secret")
    assert (await async_client.post(url, png, content_type="image/png")).status_code == 403
    wrong = await async_client.post(f"{url}?token=wrong", png, content_type="image/png")
    assert wrong.status_code == 403
    by_query = await async_client.post(f"{url}?token={SECRET_TOKEN}", png, content_type="image/png")
    assert by_query.status_code == 200
    by_header = await async_client.post(
        url, png, content_type="image/png", headers={"Authorization": f"Bearer {SECRET_TOKEN}"}
    )
    assert by_header.status_code == 200


async def test_project_list_shows_public_projects_only(async_client, colors, secret):
    response = await async_client.get("/api/projects/")
    assert response.status_code == 200
    projects = response.json()["projects"]
    assert [project["slug"] for project in projects] == ["colors"]
    assert projects[0]["model"] == {
        "version": 1,
        "input_shape": [16, 16, 3],
        "labels": COLOR_LABELS,
    }


async def test_project_detail(async_client, colors, secret):
    detail = (await async_client.get("/api/projects/colors/")).json()
    assert (detail["slug"], detail["name"], detail["model"]["version"]) == ("colors", "Colors", 1)
    assert (await async_client.get("/api/projects/secret/")).status_code == 403
    allowed = await async_client.get(f"/api/projects/secret/?token={SECRET_TOKEN}")
    assert allowed.status_code == 200


async def test_api_needs_no_csrf_token(colors):
    from django.test import AsyncClient

    client = AsyncClient(enforce_csrf_checks=True)
    png = encode(solid_image("red"), "PNG")
    response = await client.post(PREDICT.format("colors"), png, content_type="image/png")
    assert response.status_code == 200


async def test_other_sites_allowed_by_the_project_may_read_replies(async_client, colors):
    await Project.objects.filter(pk=colors.pk).aupdate(allowed_origins="https://app.example.com")
    png = encode(solid_image("red"), "PNG")
    path = PREDICT.format("colors")

    allowed = await async_client.post(
        path, png, content_type="image/png", headers={"Origin": "https://app.example.com"}
    )
    assert allowed.status_code == 200
    assert allowed["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert "Origin" in allowed["Vary"]
    other = await async_client.post(
        path, png, content_type="image/png", headers={"Origin": "https://evil.example"}
    )
    assert other.status_code == 200  # a script may still call it; a browser may not read it
    assert "Access-Control-Allow-Origin" not in other

    preflight = await async_client.options(
        path,
        headers={
            "Origin": "https://app.example.com",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert preflight.status_code == 204
    assert preflight["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert preflight["Access-Control-Allow-Methods"] == "POST"
    assert "Content-Type" in preflight["Access-Control-Allow-Headers"]
    refused = await async_client.options(path, headers={"Origin": "https://evil.example"})
    assert refused.status_code == 403 and "Access-Control-Allow-Origin" not in refused
    assert refused.json()["code"] == "forbidden"

    detail = await async_client.get(
        "/api/projects/colors/", headers={"Origin": "https://app.example.com"}
    )
    assert detail["Access-Control-Allow-Origin"] == "https://app.example.com"


async def test_health_ready_and_metrics(async_client, colors, settings):
    settings.METRICS_TOKEN = "metrics-secret"
    assert (await async_client.get("/healthz")).status_code == 200
    ready = await async_client.get("/readyz")
    assert ready.status_code == 200 and ready.json() == {"status": "ok"}
    png = encode(solid_image("red"), "PNG")
    await async_client.post(PREDICT.format("colors"), png, content_type="image/png")
    auth = {"Authorization": "Bearer metrics-secret"}
    metrics = (await async_client.get("/metrics", headers=auth)).content.decode()
    assert 'modelserver_predictions_total{project="colors",transport="http"}' in metrics


async def test_readyz_names_an_unreachable_model_storage(async_client, db, settings):
    settings.AWS_STORAGE_BUCKET_NAME = "models"
    settings.AWS_S3_ENDPOINT_URL = "http://127.0.0.1:9"  # Nothing listens on the discard port.
    settings.AWS_ACCESS_KEY_ID = settings.AWS_SECRET_ACCESS_KEY = "test"
    settings.STORAGES = {
        **settings.STORAGES,
        "models": {"BACKEND": "storages.backends.s3.S3Storage"},
    }
    response = await async_client.get("/readyz")
    assert response.status_code == 503
    # Which dependency, not its error text (which names hosts and ports).
    assert response.json()["problems"] == ["model storage: does not answer"]


async def test_metrics_with_debug_off_need_the_token(async_client, db, settings):
    settings.DEBUG = False
    settings.METRICS_TOKEN = ""
    off = await async_client.get("/metrics")
    assert off.status_code == 404 and "METRICS_TOKEN" in off.json()["error"]

    settings.METRICS_TOKEN = "metrics-secret"
    for header in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "metrics-secret"}):
        refused = await async_client.get("/metrics", headers=header)
        assert refused.status_code == 401 and refused["WWW-Authenticate"].startswith("Bearer")
        assert b"modelserver_" not in refused.content
    allowed = await async_client.get("/metrics", headers={"Authorization": "Bearer metrics-secret"})
    assert allowed.status_code == 200 and b"modelserver_" in allowed.content


async def test_https_behind_the_router(async_client, db):
    """Heroku's router ends TLS and says so; the app must treat the request as secure."""
    response = await async_client.get("/healthz", headers={"X-Forwarded-Proto": "https"})
    assert response.asgi_request.is_secure()
