"""The pages for people, rendered by Django's test client: the gallery and the demo page's
"Use this model" snippets (run for real against a live server in test_snippets.py)."""

import html
import re

import pytest

from predictions import snippets
from predictions.models import ModelVersion, Project

pytestmark = pytest.mark.django_db

HOST = "models.example.com"


@pytest.fixture(autouse=True)
def allowed_host(settings):
    settings.ALLOWED_HOSTS = [HOST, "testserver"]


def project(slug, *, labels=(), resize=ModelVersion.Resize.STRETCH, versions=1, **fields):
    """A project whose latest of `versions` versions is in service (rows only: no files)."""
    made = Project.objects.create(slug=slug, name=fields.pop("name", slug.title()), **fields)
    for number in range(1, versions + 1):
        version = ModelVersion.objects.create(
            project=made,
            number=number,
            file=f"models/{slug}-{number}.tflite",
            labels=list(labels),
            resize=resize,
            input_shape=[8, 8, 1],
            status=ModelVersion.Status.READY,
        )
    if versions:
        made.active_version = version
        made.save()
    return made


def cards(page: str) -> dict[str, str]:
    """Each card's text (tags stripped, spaces squeezed) by its slug."""
    found = re.findall(r'<li class="card" data-slug="([^"]+)"[^>]*>(.*?)</a>\s*</li>', page, re.S)
    return {slug: " ".join(re.sub(r"<[^>]+>", " ", body).split()) for slug, body in found}


def test_the_gallery_shows_a_card_per_public_project(client, django_assert_num_queries):
    project("digits", labels="0123456789", resize=ModelVersion.Resize.FIT_INK, versions=3,
            name="Handwritten digits", description="Draw a digit.")  # fmt: skip
    project("colors", labels=["red", "green", "blue"])
    project("embed")  # no labels: raw outputs
    project("empty", versions=0)
    project("secret", labels=["a"], is_public=False)

    with django_assert_num_queries(1):  # the cards in one query, whatever their number
        page = client.get("/").content.decode()

    found = cards(page)
    assert list(found) == ["colors", "digits", "embed", "empty"]  # not the private one
    assert re.fullmatch(
        r"Handwritten digits Drawing Draw a digit\. 0 1 2 3 4 \+ 5 more "
        r"v3 · 10 labels · updated \d+ \w{3} \d{4} Try it",
        found["digits"],
    ), found["digits"]
    assert "Photo red green blue v1 · 3 labels" in found["colors"]
    assert "Photo raw outputs v1 · updated" in found["embed"]
    assert "No model yet" in found["empty"] and "v1" not in found["empty"]
    assert re.search(
        r'<time datetime="\d{4}-\d\d-\d\dT[^"]+" title="[^"]+">\d+ \w{3} \d{4}</time>', page
    )
    assert 'href="/projects/digits/"' in page


def demo_snippets(page: str) -> dict[str, str]:
    found = re.findall(r'<code id="[^"]+" data-snippet="([^"]+)">(.*?)</code>', page, re.S)
    return {language: html.unescape(code) for language, code in found}


def test_the_demo_page_shows_snippets_for_this_server_and_project(client):
    project("colors", labels=["red", "green", "blue"])
    page = client.get("/projects/colors/", HTTP_HOST=HOST).content.decode()

    shown = demo_snippets(page)
    target = snippets.Target(
        server=f"http://{HOST}",
        client_url=f"http://{HOST}/static/predictions/modelserver.js",
        slug="colors",
        private=False,
        labelled=True,
    )
    assert shown == {snippet.language: snippet.code for snippet in snippets.snippets(target)}
    assert {"curl", "python", "javascript"} <= set(shown)
    assert f'"http://{HOST}/api/projects/colors/predict"' in shown["curl"]
    assert "photo.jpg" in shown["python"] and "YOUR_TOKEN" not in shown["python"]
    client_url = f"http://{HOST}/static/predictions/modelserver.js"
    assert f'import {{ connect }} from "{client_url}"' in shown["javascript"]
    assert page.count('class="copy" data-copy="snippet-') == len(shown)
    assert "<script>" not in page  # the copy buttons' code is in demo.js (no inline script)


def test_behind_herokus_router_the_snippets_say_https(client):
    project("digits", labels="0123456789", resize=ModelVersion.Resize.FIT_INK)
    response = client.get("/projects/digits/", HTTP_HOST=HOST, HTTP_X_FORWARDED_PROTO="https")
    shown = demo_snippets(response.content.decode())
    assert f'"https://{HOST}/api/projects/digits/predict"' in shown["curl"]
    assert f'"wss://{HOST}/ws/projects/digits/"' in shown["python-websockets"]
    assert "drawing.png" in shown["curl"]  # a drawing model's placeholder image
    assert "http://" not in "".join(shown.values())


def test_a_private_projects_snippets_hold_a_token_placeholder_never_a_token(client):
    secret = project("secret", labels=["a", "b"], is_public=False)
    token = secret.rotate_token()
    secret.save()
    page = client.get(f"/projects/secret/?token={token}", HTTP_HOST=HOST).content.decode()

    shown = demo_snippets(page)
    assert token not in page
    assert '-H "Authorization: Bearer YOUR_TOKEN"' in shown["curl"]
    assert '"Authorization": "Bearer YOUR_TOKEN"' in shown["python"]
    assert "/ws/projects/secret/?token=YOUR_TOKEN" in shown["python-websockets"]
    assert '{ token: "YOUR_TOKEN" }' in shown["javascript"]


def test_a_model_without_labels_prints_its_outputs(client):
    project("embed")
    shown = demo_snippets(client.get("/projects/embed/", HTTP_HOST=HOST).content.decode())
    assert 'print(prediction["outputs"])' in shown["python"]
    assert "console.log(reply.outputs)" in shown["javascript"]


def test_a_card_dates_the_version_in_service_from_its_activation(client):
    """A version registered long ago and put back in service (a rollback) is dated today."""
    from datetime import UTC, datetime

    from django.utils import timezone

    from predictions import services

    made = project("colors", labels=["red", "green", "blue"], versions=2)
    first = made.versions.get(number=1)
    ModelVersion.objects.filter(pk=first.pk).update(created_at=datetime(2020, 3, 1, tzinfo=UTC))
    first.refresh_from_db()

    services.version_activate(version=first)

    card = cards(client.get("/").content.decode())["colors"]
    assert "v1 · 3 labels" in card
    assert f"updated {timezone.now():%-d %b %Y}" in card and "2020" not in card


def test_every_page_links_to_the_api_docs(client):
    project("colors", labels=["red", "green", "blue"])
    for url in ("/", "/projects/colors/", "/api/docs"):
        page = client.get(url).content.decode()
        assert re.search(r'<header>.*<a href="/api/docs">API docs</a>.*</header>', page), url
