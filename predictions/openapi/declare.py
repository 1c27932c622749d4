"""What an HTTP view takes and answers, declared on the view itself; `document.py` reads the
declarations into the OpenAPI document. A view without one is left out of it.

    @api_operation(
        "post",
        summary="Predict one image",
        tags=("projects",),
        path_parameters=SLUG,
        request_bodies=IMAGE_BODIES,
        responses={200: json_reply("The prediction.", "Prediction"), **PROJECT_ERRORS},
        token=True,
    )
    async def predict(request, slug): ...
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from ..inference.errors import (
    BAD_IMAGE,
    BAD_REQUEST,
    BAD_SHAPE,
    BUSY,
    FORBIDDEN,
    MODEL_UNAVAILABLE,
    NOT_FOUND,
    TOO_LARGE,
)
from .schemas import ref

# The names of the security schemes in `document.SECURITY_SCHEMES`.
BEARER_TOKEN = "bearerToken"
TOKEN_QUERY = "tokenQuery"
METRICS_TOKEN = "metricsToken"
# A project route: public projects need no token, private ones take either form of theirs.
PROJECT_TOKEN_SECURITY = ({}, {BEARER_TOKEN: []}, {TOKEN_QUERY: []})


@dataclass(frozen=True)
class Reply:
    """One response: what it means, its body's schema by media type, and its headers."""

    description: str
    content: Mapping[str, dict] = field(default_factory=dict)
    headers: Mapping[str, dict] = field(default_factory=dict)


@dataclass(frozen=True)
class Operation:
    """One view's declaration (`api_operation` makes it)."""

    method: str
    summary: str
    description: str
    tags: tuple[str, ...]
    path_parameters: Mapping[str, str]  # name -> description; the schema comes from the route
    parameters: tuple[dict, ...]  # query and header parameters, as OpenAPI writes them
    request_bodies: Mapping[str, dict]  # media type -> schema
    responses: Mapping[int, Reply]
    security: tuple[Mapping[str, list], ...] | None


def api_operation(
    method: str = "get",
    *,
    summary: str,
    description: str = "",
    tags: tuple[str, ...] = (),
    path_parameters: Mapping[str, str] | None = None,
    parameters: tuple[dict, ...] = (),
    request_bodies: Mapping[str, dict] | None = None,
    responses: Mapping[int, Reply],
    token: bool = False,
    security: tuple[Mapping[str, list], ...] | None = None,
):
    """Declare what the view takes and answers (`token`: a project's optional token, as
    `PROJECT_TOKEN_SECURITY`). The view itself is returned unchanged, the declaration set as
    its `api_operation` attribute; the description defaults to the view's docstring."""
    if token and security is not None:
        raise ValueError("Give `token` or `security`, not both.")

    def attach(view):
        view.api_operation = Operation(
            method=method.lower(),
            summary=summary,
            description=description or _docstring(view),
            tags=tuple(tags),
            path_parameters=MappingProxyType(dict(path_parameters or {})),
            parameters=tuple(parameters),
            request_bodies=MappingProxyType(dict(request_bodies or {})),
            responses=MappingProxyType(dict(responses)),
            security=PROJECT_TOKEN_SECURITY if token else security,
        )
        return view

    return attach


def operation_of(view) -> Operation | None:
    """The view's declaration, or None."""
    return getattr(view, "api_operation", None)


def _docstring(view) -> str:
    return " ".join((view.__doc__ or "").split())


# --- Building blocks ----------------------------------------------------------------------------


def query(name: str, schema: dict, description: str, *, required: bool = False) -> dict:
    """A query parameter."""
    return {
        "name": name,
        "in": "query",
        "required": required,
        "description": description,
        "schema": schema,
    }


def json_reply(description: str, schema_name: str, **headers: dict) -> Reply:
    """A JSON reply whose body is one of the schemas."""
    return Reply(description, {"application/json": ref(schema_name)}, headers)


def error_reply(description: str, *codes: str, **headers: dict) -> Reply:
    """The contract's error object, with its `code` one of `codes`."""
    schema = {"allOf": [ref("Error")], "properties": {"code": {"enum": list(codes)}}}
    return Reply(description, {"application/json": schema}, headers)


RETRY_AFTER = {
    "description": "Seconds to wait before trying again.",
    "required": True,
    "schema": {"type": "integer", "minimum": 1},
}

SLUG = {"slug": "The project's slug."}

# The body of a prediction: raw image bytes, a form with an `image` file, or a text frame.
IMAGE_BODIES = {
    "image/*": ref("RawImage"),
    "application/octet-stream": ref("RawImage"),
    "multipart/form-data": ref("MultipartImage"),
    "application/json": ref("TextFrame"),
}
FEEDBACK_BODIES = {
    "image/*": ref("RawImage"),
    "application/octet-stream": ref("RawImage"),
    "multipart/form-data": ref("FeedbackForm"),
    "application/json": ref("FeedbackJson"),
}
# Beside a raw image body, the feedback's fields go in the query.
FEEDBACK_QUERY = (
    query("label", {"type": "string"}, "With a raw image body: the right label."),
    query(
        "model_version",
        {"type": "string", "pattern": "^[0-9]{1,9}$"},
        "With a raw image body: the version number that answered.",
    ),
    query("predicted", {"type": "string"}, "With a raw image body: the label the model answered."),
)
PREVIEW_QUERY = query(
    "preview",
    {"type": "string", "enum": ["1", "0", "true", "false"], "default": "0"},
    "`1` (or `true`) adds `input_preview` (the preprocessed model input as a PNG data URL) to "
    "the prediction, as a text frame's `preview` does.",
)

# Every project route's refusals.
PROJECT_ERRORS = {
    403: error_reply("The project is private and the token is missing or wrong.", FORBIDDEN),
    404: error_reply("No project of that name.", NOT_FOUND),
}
# What a POST of an image may answer besides its success and PROJECT_ERRORS.
IMAGE_POST_ERRORS = {
    400: error_reply(
        "The image cannot be decoded, the body or its fields are malformed, or the pixels do "
        "not fit the model.",
        BAD_IMAGE,
        BAD_REQUEST,
        BAD_SHAPE,
    ),
    413: error_reply("The image is over the byte or pixel limit.", TOO_LARGE),
    429: error_reply(
        "Too much waiting work, or past the rate limit.", BUSY, **{"Retry-After": RETRY_AFTER}
    ),
    503: error_reply(
        "No model in service, or it cannot be fetched or stored to right now.", MODEL_UNAVAILABLE
    ),
}
METHOD_NOT_ALLOWED = {405: error_reply("Use POST (or OPTIONS for a CORS preflight).", BAD_REQUEST)}

# The original service's refusals, `{"error": "..."}`.
LEGACY_ERRORS = {
    403: json_reply("The project is private and `?token=` is missing or wrong.", "ErrorMessage"),
    404: json_reply(
        "No project or model file of that name, or several model files match it.", "ErrorMessage"
    ),
    503: json_reply("The project has no model in service yet.", "ErrorMessage"),
}
