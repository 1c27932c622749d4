"""The OpenAPI 3.1 document of the HTTP API, built from the URL patterns whose views carry a
declaration (`declare.api_operation`): what is served and what is documented cannot part."""

import functools
import re
from dataclasses import dataclass

from django.core.exceptions import ImproperlyConfigured
from django.urls import URLPattern, URLResolver, get_resolver
from django.urls.converters import IntConverter
from django.urls.resolvers import RegexPattern, RoutePattern

from .declare import BEARER_TOKEN, METRICS_TOKEN, TOKEN_QUERY, Operation, Reply, operation_of
from .schemas import SCHEMAS

API_VERSION = "1"

TAGS = [
    {"name": "projects", "description": "Projects, predictions and feedback."},
    {"name": "health", "description": "Liveness, readiness and Prometheus metrics."},
    {
        "name": "legacy",
        "description": "The original service's API, for its clients: they switch by changing "
        "the host.",
    },
]

SECURITY_SCHEMES = {
    BEARER_TOKEN: {
        "type": "http",
        "scheme": "bearer",
        "description": "A private project's token: `Authorization: Bearer <token>`.",
    },
    TOKEN_QUERY: {
        "type": "apiKey",
        "in": "query",
        "name": "token",
        "description": "A private project's token: `?token=<token>`.",
    },
    METRICS_TOKEN: {
        "type": "http",
        "scheme": "bearer",
        "description": "`Authorization: Bearer $METRICS_TOKEN`; with debug on, none is asked.",
    },
}

DESCRIPTION = (
    "The model server's HTTP API. It takes no CSRF token. A private project's token goes in "
    "`?token=` or `Authorization: Bearer <token>`; public projects need none. The WebSocket "
    "protocol is described by the AsyncAPI document at `/api/asyncapi.json` and on `/api/docs`."
)


@dataclass(frozen=True)
class Route:
    """A URL pattern whose view is declared: its OpenAPI path and its path parameters."""

    path: str  # as OpenAPI writes it: /api/projects/{slug}/
    name: str  # the URL pattern's name
    parameters: dict[str, dict]  # path parameter name -> its schema
    operation: Operation


def declared_routes(resolver: URLResolver | None = None) -> list[Route]:
    """Every URL pattern under `resolver` (the project's, by default), through its includes,
    whose view carries a declaration."""
    return list(_walk(resolver or get_resolver(), prefix=()))


def _walk(resolver: URLResolver, *, prefix: tuple):
    for entry in resolver.url_patterns:
        if isinstance(entry, URLResolver):
            yield from _walk(entry, prefix=(*prefix, entry.pattern))
        elif isinstance(entry, URLPattern) and (operation := operation_of(entry.callback)):
            # Only declared routes are turned into paths: the admin's regexes are none.
            texts, parameters = [], {}
            for pattern in (*prefix, entry.pattern):
                text, found = _pattern_path(pattern)
                texts.append(text)
                parameters.update(found)
            yield Route(
                path="/" + "".join(texts),
                name=entry.name or entry.callback.__name__,
                parameters=parameters,
                operation=operation,
            )


_ROUTE_PARAMETER = re.compile(r"<(?:(?P<converter>[^>:]+):)?(?P<name>\w+)>")
_REGEX_GROUP = re.compile(r"\(\?P<(?P<name>\w+)>(?P<regex>[^()]*)\)")
_REGEX_SPECIALS = re.compile(r"[\\^$.|?*+()\[\]{}]")


def _pattern_path(pattern) -> tuple[str, dict[str, dict]]:
    """A route or regex pattern as OpenAPI path text, and its parameters' schemas."""
    if isinstance(pattern, RoutePattern):
        route = str(pattern)
        converters = pattern.converters
        text = _ROUTE_PARAMETER.sub(lambda m: "{" + m["name"] + "}", route)
        return text, {name: _converter_schema(conv) for name, conv in converters.items()}
    if isinstance(pattern, RegexPattern):
        regex = str(pattern).removeprefix("^").removesuffix("$").removesuffix(r"\Z")
        found = {m["name"]: {"type": "string"} for m in _REGEX_GROUP.finditer(regex)}
        text = _REGEX_GROUP.sub(lambda m: "{" + m["name"] + "}", regex)
        if _REGEX_SPECIALS.search(_REGEX_GROUP.sub("", regex)):
            raise ImproperlyConfigured(f"The URL regex {str(pattern)!r} is no OpenAPI path.")
        return text, found
    raise ImproperlyConfigured(f"Unknown URL pattern type: {type(pattern).__name__}.")


def _converter_schema(converter) -> dict:
    if isinstance(converter, IntConverter):
        return {"type": "integer", "minimum": 0}
    return {"type": "string", "pattern": f"^{converter.regex}$"}


@functools.lru_cache(maxsize=16)
def openapi_document(*, server_url: str) -> dict:
    """The OpenAPI document for clients reaching the server at `server_url`; built once per
    URL (callers must not change it)."""
    paths: dict[str, dict] = {}
    for route in declared_routes():
        item = paths.setdefault(route.path, {})
        method = route.operation.method
        if method in item:
            raise ImproperlyConfigured(f"Two views declare {method.upper()} {route.path}.")
        item[method] = _operation(route)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Model server", "version": API_VERSION, "description": DESCRIPTION},
        "servers": [{"url": server_url}],
        "tags": TAGS,
        "paths": paths,
        "components": {"schemas": SCHEMAS, "securitySchemes": SECURITY_SCHEMES},
    }


def _operation(route: Route) -> dict:
    operation = route.operation
    if unknown := set(operation.path_parameters) - set(route.parameters):
        raise ImproperlyConfigured(f"{route.path} has no path parameter {sorted(unknown)}.")
    parameters = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "description": operation.path_parameters.get(name, ""),
            "schema": schema,
        }
        for name, schema in route.parameters.items()
    ]
    result = {
        "operationId": route.name,
        "summary": operation.summary,
        "description": operation.description,
        "tags": list(operation.tags),
        "parameters": [*parameters, *operation.parameters],
        "responses": {
            str(status): _response(reply) for status, reply in sorted(operation.responses.items())
        },
    }
    if operation.request_bodies:
        result["requestBody"] = {
            "required": True,
            "content": {
                media_type: {"schema": schema}
                for media_type, schema in operation.request_bodies.items()
            },
        }
    if operation.security is not None:
        result["security"] = [dict(requirement) for requirement in operation.security]
    return result


def _response(reply: Reply) -> dict:
    response = {"description": reply.description}
    if reply.headers:
        response["headers"] = dict(reply.headers)
    if reply.content:
        response["content"] = {
            media_type: {"schema": schema} for media_type, schema in reply.content.items()
        }
    return response
