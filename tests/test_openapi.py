"""The API's description: `/api/openapi.json` is valid OpenAPI 3.1 and covers every HTTP
route; real requests to a live daphne and its replies match it (openapi-core); `/api/docs`
works from local static files, with the WebSocket protocols from `/api/asyncapi.json`."""

import base64
import json
import re
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field

import jsonschema
import pytest
from django.urls import URLPattern, URLResolver, get_resolver
from openapi_core import OpenAPI
from openapi_core.datatypes import RequestParameters
from openapi_core.exceptions import OpenAPIError
from openapi_spec_validator import OpenAPIV31SpecValidator
from werkzeug.datastructures import Headers, ImmutableMultiDict

from predictions.inference import errors
from predictions.openapi.asyncapi import asyncapi_document
from predictions.openapi.document import openapi_document
from predictions.openapi.schemas import SCHEMAS
from tests import browser, support
from tests.support import COLOR_LABELS, SECRET_TOKEN, encode, solid_image

TIMEOUT = 60
METRICS_TOKEN = "metrics-token-for-tests"
MAX_IMAGE_BYTES = 200_000  # the 413 case sends a little more than the server reads
FEEDBACK_PER_MINUTE = 12
# Routes that are not the API: the pages, and the docs themselves.
UNDOCUMENTED = {"project-index", "project-demo", "api-openapi", "api-docs", "api-asyncapi"}


# --- The documents, in this process -------------------------------------------------------------


def test_the_document_is_valid_openapi_3_1():
    document = openapi_document(server_url="http://testserver")
    assert document["openapi"] == "3.1.0"
    errors_found = [error.message for error in OpenAPIV31SpecValidator(document).iter_errors()]
    assert errors_found == []


def _served_routes():
    """(name, OpenAPI path) of every route of this project's app, walked here independently of
    `predictions.openapi.document`."""

    def walk(patterns, prefix):
        for entry in patterns:
            if isinstance(entry, URLResolver):
                yield from walk(entry.url_patterns, prefix + str(entry.pattern))
            elif isinstance(entry, URLPattern) and entry.callback.__module__.startswith(
                "predictions.views."
            ):
                yield entry.name, prefix + str(entry.pattern)

    for name, route in walk(get_resolver().url_patterns, ""):
        route = re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", route.replace("^", "").replace("$", ""))
        yield name, "/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route)


def test_every_route_but_the_pages_is_documented():
    documented = openapi_document(server_url="http://testserver")["paths"]
    expected = {path for name, path in _served_routes() if name not in UNDOCUMENTED}
    assert "/api/projects/{slug}/predict" in expected and "/models/{name}/input_shape" in expected
    assert set(documented) == expected
    for path in expected:
        assert documented[path], f"{path} has no operation"


def test_the_error_enum_holds_every_error_code():
    codes = {
        value for name, value in vars(errors).items() if name.isupper() and isinstance(value, str)
    }
    assert len(codes) >= 8
    enum = SCHEMAS["Error"]["properties"]["code"]["enum"]
    assert codes <= set(enum)


def _validate(instance, schema: dict) -> None:
    """Validate against a schema that may refer to the shared components."""
    jsonschema.Draft202012Validator(
        {**schema, "components": {"schemas": SCHEMAS}},
        format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
    ).validate(instance)


def test_every_schema_example_fits_its_schema():
    for name, schema in SCHEMAS.items():
        for example in schema.get("examples", []):
            _validate(example, {"$ref": f"#/components/schemas/{name}"})


def test_the_asyncapi_document_reuses_the_schemas_and_resolves():
    document = asyncapi_document(host="127.0.0.1:8000", secure=False)
    assert document["asyncapi"] == "3.0.0"
    assert document["components"]["schemas"] is SCHEMAS
    messages = document["components"]["messages"]
    for channel in document["channels"].values():
        for message in channel["messages"].values():
            assert message["$ref"].removeprefix("#/components/messages/") in messages
        assert {close["code"] for close in channel["x-close-codes"]} == {4403, 4404, 4013}
    for name, operation in document["operations"].items():
        channel = operation["channel"]["$ref"].removeprefix("#/channels/")
        refs = [*operation["messages"], *operation.get("reply", {}).get("messages", [])]
        for item in refs:
            prefix = f"#/channels/{channel}/messages/"
            assert item["$ref"].startswith(prefix), name
            assert item["$ref"].removeprefix(prefix) in document["channels"][channel]["messages"]
    for message in messages.values():
        _validate(message["examples"][0]["payload"], message["payload"])
    # The WebSocket carries what its contract says.
    project = document["channels"]["project"]["messages"]
    assert {"ready", "binaryImage", "textFrame", "options", "feedback", "prediction"} <= set(
        project
    )
    assert {"feedbackSaved", "error", "modelChanged", "optionsSet"} <= set(project)


# --- A live server, and openapi-core's view of its requests and replies ---------------------


@dataclass
class Request:
    """An HTTP request as openapi-core reads one (`openapi_core.protocols.Request`)."""

    host_url: str
    path: str
    method: str
    body: bytes | None = None
    content_type: str = ""
    query: dict = field(default_factory=dict)
    headers: dict = field(default_factory=dict)

    def __post_init__(self):
        # openapi-core writes the path parameters it resolves into this object.
        self.parameters = RequestParameters(
            query=ImmutableMultiDict(list(self.query.items())), header=Headers(self.headers)
        )

    @property
    def url(self) -> str:
        query = f"?{urllib.parse.urlencode(self.query)}" if self.query else ""
        return f"{self.host_url}{self.path}{query}"


@dataclass
class Response:
    """A reply as openapi-core reads one (`openapi_core.protocols.Response`)."""

    status_code: int
    headers: Headers
    data: bytes

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "").lower()

    def json(self):
        return json.loads(self.data)


def send(request: Request) -> Response:
    headers = dict(request.headers)
    if request.content_type:
        headers["Content-Type"] = request.content_type
    outgoing = urllib.request.Request(
        request.url, data=request.body, headers=headers, method=request.method.upper()
    )
    try:
        with urllib.request.urlopen(outgoing, timeout=TIMEOUT) as reply:
            return Response(reply.status, Headers(list(reply.headers.items())), reply.read())
    except urllib.error.HTTPError as error:
        return Response(error.code, Headers(list(error.headers.items())), error.read())


def multipart(fields: dict, files: dict) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    ]
    for name, (file_name, content, content_type) in files.items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
            f'filename="{file_name}"\r\nContent-Type: {content_type}\r\n\r\n'.encode()
            + content
            + b"\r\n"
        )
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


class Live:
    def __init__(self, server):
        self.server = server
        self.url = server.url
        self._openapi = None

    @property
    def openapi(self) -> OpenAPI:
        """openapi-core on the document the live server serves."""
        if self._openapi is None:
            document = send(self.request("get", "/api/openapi.json")).json()
            self._openapi = OpenAPI.from_dict(document)
        return self._openapi

    def request(self, method: str, path: str, **options) -> Request:
        return Request(self.url, path, method, **options)

    def exchange(self, request: Request, *, status: int, valid_request: bool = True) -> Response:
        """Send the request; check it against the document (valid, or refused by it as
        `valid_request` says), the reply's status, and the reply against the document."""
        if valid_request:
            self.openapi.validate_request(request)
        else:
            with pytest.raises(OpenAPIError):
                self.openapi.validate_request(request)
        response = send(request)
        assert response.status_code == status, response.data[:500]
        self.openapi.validate_response(request, response)
        return response


@pytest.fixture(scope="module")
def live(tmp_path_factory, trained):
    """daphne with production settings and a metrics token: `colors` (public), `secret`
    (private) and `empty` (public, no version), the fast LiteRT colours model on both."""
    folder = tmp_path_factory.mktemp("openapi")
    with support.migrated_env(
        folder,
        production=True,
        METRICS_TOKEN=METRICS_TOKEN,
        MAX_IMAGE_BYTES=MAX_IMAGE_BYTES,
        FEEDBACK_PER_MINUTE=FEEDBACK_PER_MINUTE,
    ) as env:
        support.register_colour_model(env, folder, trained.tflite, "colors", "secret")
        script = (
            "from predictions.models import Project;"
            "Project.objects.create(slug='empty', name='Empty');"
            f"{support.MAKE_SECRET_PRIVATE}"
        )
        support.manage("shell", "-c", script, env=env)
        server = support.DaphneServer(env, folder / "daphne.log")
        with support.running(server):
            yield Live(server)


PNG = encode(solid_image("red"), "PNG")
PNG_URL = "data:image/png;base64," + base64.b64encode(PNG).decode()
BEARER = {"Authorization": f"Bearer {SECRET_TOKEN}"}


def _json(value) -> dict:
    return {"body": json.dumps(value).encode(), "content_type": "application/json"}


def _form(fields=None) -> dict:
    body, content_type = multipart(fields or {}, {"image": ("red.png", PNG, "image/png")})
    return {"body": body, "content_type": content_type}


RAW = {"body": PNG, "content_type": "image/png"}


@pytest.mark.parametrize(
    ("slug", "options"),
    [
        pytest.param("colors", RAW, id="raw"),
        pytest.param("colors", _form(), id="multipart"),
        pytest.param("colors", _json({"id": "a", "image": PNG_URL, "top_k": 2}), id="json-image"),
        pytest.param(
            "colors", _json({"id": 7, "pixels": [[[0.9, 0.1, 0.1]] * 16] * 16}), id="json-pixels"
        ),
        pytest.param("secret", {**RAW, "query": {"token": SECRET_TOKEN}}, id="token-query"),
        pytest.param("secret", {**RAW, "headers": BEARER}, id="token-bearer"),
    ],
)
def test_predict(live, slug, options):
    request = live.request("post", f"/api/projects/{slug}/predict", **options)
    reply = live.exchange(request, status=200).json()
    assert reply["type"] == "prediction" and reply["model_version"] == 1
    assert reply["labels"][0]["label"] == "red"


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({**RAW, "query": {"preview": "1"}}, id="query"),
        pytest.param(_json({"image": PNG_URL, "preview": True}), id="json"),
    ],
)
def test_predict_with_preview(live, options):
    request = live.request("post", "/api/projects/colors/predict", **options)
    reply = live.exchange(request, status=200).json()
    assert reply["input_preview"].startswith("data:image/png;base64,")


@pytest.mark.parametrize(
    ("slug", "options", "status", "code", "valid_request"),
    [
        pytest.param("colors", {"body": b"not an image", "content_type": "image/png"}, 400,
                     "bad_image", True, id="bad-image"),
        pytest.param("colors", _json({"id": 1}), 400, "bad_request", False, id="no-image"),
        pytest.param("colors", _json({"pixels": [[1, 2]]}), 400, "bad_shape", True,
                     id="bad-shape"),
        pytest.param("colors", {"body": b"x", "content_type": "text/csv"}, 400, "bad_request",
                     False, id="unsupported-type"),
        pytest.param("nope", RAW, 404, "not_found", True, id="unknown-project"),
        pytest.param("secret", RAW, 403, "forbidden", True, id="no-token"),
        pytest.param("secret", {**RAW, "query": {"token": "wrong"}}, 403, "forbidden", True,
                     id="wrong-token"),
        pytest.param("colors", {"body": b"\0" * (MAX_IMAGE_BYTES * 2), "content_type": "image/png"},
                     413, "too_large", True, id="too-large"),
        pytest.param("empty", RAW, 503, "model_unavailable", True, id="no-model"),
    ],
)  # fmt: skip
def test_predict_refusals(live, slug, options, status, code, valid_request):
    request = live.request("post", f"/api/projects/{slug}/predict", **options)
    reply = live.exchange(request, status=status, valid_request=valid_request).json()
    assert (reply["type"], reply["code"]) == ("error", code)


def test_predict_with_another_method_is_405(live):
    response = send(live.request("put", "/api/projects/colors/predict", **RAW))
    assert response.status_code == 405
    # The document declares that reply on POST, the route's one method.
    live.openapi.validate_response(live.request("post", "/api/projects/colors/predict"), response)
    assert response.json()["code"] == "bad_request"


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({**RAW, "query": {"label": "green", "predicted": "red"}}, id="raw"),
        pytest.param(_form({"label": "green", "model_version": "1", "predicted": "red"}),
                     id="multipart"),
        pytest.param(_json({"image": PNG_URL, "label": "blue", "model_version": 1}), id="json"),
    ],
)  # fmt: skip
def test_feedback(live, options):
    request = live.request("post", "/api/projects/colors/feedback", **options)
    reply = live.exchange(request, status=201).json()
    assert reply["type"] == "feedback_saved" and len(reply["example"]) == 64


@pytest.mark.parametrize(
    ("slug", "options", "status", "code", "valid_request"),
    [
        pytest.param("colors", {**RAW, "query": {"label": "purple"}}, 400, "bad_request", True,
                     id="unknown-label"),
        pytest.param("colors", _form(), 400, "bad_request", False, id="no-label"),
        pytest.param("nope", {**RAW, "query": {"label": "red"}}, 404, "not_found", True,
                     id="unknown-project"),
        pytest.param("secret", {**RAW, "query": {"label": "red"}}, 403, "forbidden", True,
                     id="no-token"),
    ],
)  # fmt: skip
def test_feedback_refusals(live, slug, options, status, code, valid_request):
    request = live.request("post", f"/api/projects/{slug}/feedback", **options)
    reply = live.exchange(request, status=status, valid_request=valid_request).json()
    assert (reply["type"], reply["code"]) == ("error", code)


@pytest.mark.parametrize(
    ("path", "options", "status"),
    [
        pytest.param("/api/projects/", {}, 200, id="list"),
        pytest.param("/api/projects/colors/", {}, 200, id="public"),
        pytest.param("/api/projects/secret/", {"query": {"token": SECRET_TOKEN}}, 200,
                     id="private-query"),
        pytest.param("/api/projects/secret/", {"headers": BEARER}, 200, id="private-bearer"),
        pytest.param("/api/projects/secret/", {}, 403, id="private-no-token"),
        pytest.param("/api/projects/nope/", {}, 404, id="unknown"),
        pytest.param("/healthz", {}, 200, id="healthz"),
        pytest.param("/readyz", {}, 200, id="readyz"),
        pytest.param("/models", {}, 200, id="legacy-list"),
        pytest.param("/models/colors/input_shape", {}, 200, id="legacy-shape"),
        pytest.param("/models/secret/input_shape", {"query": {"token": SECRET_TOKEN}}, 200,
                     id="legacy-shape-token"),
        pytest.param("/models/secret/input_shape", {}, 403, id="legacy-shape-no-token"),
        pytest.param("/models/nope/input_shape", {}, 404, id="legacy-shape-unknown"),
        pytest.param("/models/empty/input_shape", {}, 503, id="legacy-shape-no-model"),
    ],
)  # fmt: skip
def test_reads(live, path, options, status):
    live.exchange(live.request("get", path, **options), status=status)


def test_project_replies_carry_the_model(live):
    listed = live.exchange(live.request("get", "/api/projects/"), status=200).json()
    assert {project["slug"] for project in listed["projects"]} == {"colors", "empty"}
    detail = live.exchange(live.request("get", "/api/projects/colors/"), status=200).json()
    assert detail["model"] == {"version": 1, "input_shape": [16, 16, 3], "labels": COLOR_LABELS}
    shape = live.exchange(live.request("get", "/models/colors/input_shape"), status=200).json()
    assert shape == {"width": 16, "height": 16, "channels": 3}


def test_metrics_take_the_bearer_token(live):
    headers = {"Authorization": f"Bearer {METRICS_TOKEN}"}
    response = live.exchange(live.request("get", "/metrics", headers=headers), status=200)
    assert response.content_type.startswith("text/plain")
    refused = live.exchange(
        live.request("get", "/metrics", headers={"Authorization": "Bearer wrong"}), status=401
    )
    assert refused.headers["WWW-Authenticate"].startswith("Bearer")
    live.exchange(live.request("get", "/metrics"), status=401, valid_request=False)


def test_feedback_past_the_rate_limit_is_429_with_retry_after(live):
    request = live.request("post", "/api/projects/colors/feedback", **RAW, query={"label": "red"})
    live.openapi.validate_request(request)
    for _ in range(FEEDBACK_PER_MINUTE * 3):  # a burst may pass more than the minute's share
        response = send(request)
        if response.status_code == 429:
            break
        assert response.status_code == 201
    assert response.status_code == 429
    live.openapi.validate_response(request, response)
    assert int(response.headers["Retry-After"]) >= 1 and response.json()["code"] == "busy"


# --- The docs page --------------------------------------------------------------------------


def test_the_documents_are_served_for_the_host_asked(live):
    openapi = send(live.request("get", "/api/openapi.json")).json()
    assert openapi["servers"] == [{"url": live.url}]
    asyncapi = send(live.request("get", "/api/asyncapi.json")).json()
    assert asyncapi["servers"]["this"] == {
        "host": live.url.removeprefix("http://"),
        "protocol": "ws",
    }
    assert asyncapi["components"]["schemas"] == openapi["components"]["schemas"]


def test_the_docs_page_uses_local_static_files_only(live):
    page = send(live.request("get", "/api/docs"))
    assert page.status_code == 200 and page.content_type.startswith("text/html")
    html = page.data.decode()
    assets = re.findall(r'<(?:script|link)\b[^>]*?\b(?:src|href)="([^"]+)"', html)
    assert any("swagger-ui-bundle.js" in url for url in assets)
    assert any("swagger-ui.css" in url for url in assets)
    for url in assets:
        assert url.startswith("/") and not url.startswith("//"), url
        assert send(live.request("get", url)).status_code == 200, url
    assert not re.search(r"""(?:src|href)=["']?(?:https?:)?//""", html)
    # The WebSocket section, rendered here from the AsyncAPI document.
    for text in ("/ws/projects/{slug}/", "/models/{name}/get_predictions", "4403", "4404",
                 "4013", "model_changed", "feedback_saved", "input_preview"):  # fmt: skip
        assert text in html, text


@pytest.mark.skipif(bool(browser.missing()), reason=browser.missing() or "")
def test_swagger_ui_renders_offline(live):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = browser.launch(playwright)
        try:
            context = chromium.new_context(viewport={"width": 1200, "height": 900})
            offsite = []

            def only_loopback(route):
                if urllib.parse.urlsplit(route.request.url).hostname == "127.0.0.1":
                    route.continue_()
                else:
                    offsite.append(route.request.url)
                    route.abort()

            context.route("**/*", only_loopback)
            page = context.new_page()
            page_errors = []
            page.on("pageerror", lambda error: page_errors.append(str(error)))
            page.goto(f"{live.url}/api/docs")
            page.wait_for_selector(".opblock-summary-path", timeout=30_000)
            paths = page.locator(".opblock-summary-path").all_inner_texts()
            browser.screenshot(page, "api-docs")
        finally:
            chromium.close()
    paths = {path.replace("\u200b", "").strip() for path in paths}
    assert "/api/projects/{slug}/predict" in paths and "/models/{name}/input_shape" in paths
    assert len(paths) == 9
    assert offsite == [] and page_errors == []


def test_the_websocket_speaks_its_asyncapi_messages(live):
    """Each message a client sends fits its schema in the AsyncAPI document, and each reply
    of the live server fits the schema of the message it is; an options message off the
    schema is refused by the server too. (Not feedback: this module spends the address's
    feedback budget on purpose.)"""
    from websockets.sync.client import connect

    document = send(live.request("get", "/api/asyncapi.json")).json()
    messages = document["channels"]["project"]["messages"]
    components = document["components"]["messages"]

    def fits(payload, name):
        _validate(payload, components[messages[name]["$ref"].rsplit("/", 1)[-1]]["payload"])

    host = live.url.removeprefix("http://")
    with connect(f"ws://{host}/ws/projects/colors/", open_timeout=10) as socket:

        def exchange(message: dict, name: str, reply_name: str) -> dict:
            fits(message, name)
            socket.send(json.dumps(message))
            reply = json.loads(socket.recv(timeout=10))
            fits(reply, reply_name)
            return reply

        fits(json.loads(socket.recv(timeout=10)), "ready")
        exchange({"type": "options", "preview": True}, "options", "optionsSet")
        socket.send(PNG)
        fits(PNG, "binaryImage")
        first = json.loads(socket.recv(timeout=10))
        fits(first, "prediction")
        assert first["input_preview"].startswith("data:image/png;base64,")
        reply = exchange({"id": "a", "image": PNG_URL}, "textFrame", "prediction")
        assert reply["labels"][0]["label"] == "red"
        exchange({"id": "b", "pixels": [[[0.1]]]}, "textFrame", "error")

        off_schema = {"type": "options", "colour": "blue"}
        with pytest.raises(jsonschema.ValidationError):
            fits(off_schema, "options")
        socket.send(json.dumps(off_schema))
        refused = json.loads(socket.recv(timeout=10))
        fits(refused, "error")
        assert refused["code"] == errors.BAD_REQUEST
