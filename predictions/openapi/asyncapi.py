"""The AsyncAPI 3.0 document of the WebSocket protocols (`/ws/projects/<slug>/` and the
original service's `/models/<name>/get_predictions`), carrying the same schema components as the
OpenAPI document, and its summary for the docs page."""

import functools
import json

from ..consumers import CLOSE_FORBIDDEN, CLOSE_NOT_FOUND, CLOSE_TRY_LATER
from .document import API_VERSION
from .schemas import SCHEMAS, ref


def _message(name: str, title: str, summary: str, schema: str, *, content_type="") -> dict:
    """A message whose payload is one of the schemas, with that schema's first example."""
    message = {
        "name": name,
        "title": title,
        "summary": summary,
        "payload": ref(schema),
        "examples": [{"name": name, "payload": SCHEMAS[schema]["examples"][0]}],
    }
    if content_type:
        message["contentType"] = content_type
    return message


MESSAGES = {
    "ready": _message(
        "ready",
        "Ready",
        "Sent once on connect: the project and the version this connection is served by.",
        "Ready",
    ),
    "binaryImage": _message(
        "binaryImage",
        "Binary image frame",
        "A binary frame holding one encoded image; its reply's id is its 0-based number "
        "among the connection's binary frames.",
        "BinaryImage",
        content_type="application/octet-stream",
    ),
    "textFrame": _message(
        "textFrame",
        "Text frame",
        'A JSON object with "image" (a data URL or base64) or "pixels" (the model\'s input '
        'layout, fed as it is); optional "top_k" (default 5) and "preview".',
        "TextFrame",
    ),
    "options": _message(
        "options",
        "Options",
        'Sets options for later frames: "preview": true adds "input_preview" to every prediction.',
        "Options",
    ),
    "optionsSet": _message(
        "optionsSet", "Options set", "The answer to an options message.", "OptionsSet"
    ),
    "feedback": _message(
        "feedback",
        "Feedback",
        "The right label of an image frame this connection sent (one of its last 32 answered "
        "image frames; not a pixels frame).",
        "FeedbackFrame",
    ),
    "prediction": _message(
        "prediction",
        "Prediction",
        "One reply per image frame, in order: the labels sorted by score (or the raw "
        '"outputs" for a version without labels), the version that answered, timings.',
        "Prediction",
    ),
    "feedbackSaved": _message(
        "feedbackSaved", "Feedback saved", "The feedback's image is stored.", "FeedbackSaved"
    ),
    "error": _message(
        "error",
        "Error",
        "Instead of a reply when a frame cannot be answered; the connection stays open.",
        "Error",
    ),
    "modelChanged": _message(
        "modelChanged",
        "Model changed",
        "Another version now serves this connection (an activation, or a canary promoted or "
        "ended).",
        "ModelChanged",
    ),
    "legacyPixels": _message(
        "legacyPixels",
        "Pixels",
        "A text frame holding a bare JSON array of numbers, as many as the model's input size.",
        "LegacyPixels",
    ),
    "legacyScores": _message(
        "legacyScores", "Scores", "The model's output scores, in label order.", "LegacyScores"
    ),
    "legacyError": _message(
        "legacyError",
        "Error",
        "Instead of scores for a bad frame (the connection stays open), and before a refusal "
        "closes the socket.",
        "ErrorMessage",
    ),
}

CLOSE_CODES = {
    CLOSE_FORBIDDEN: "A private project's token is missing or wrong, or the Origin is not "
    "allowed (also when a project's saved settings no longer let the connection in).",
    CLOSE_NOT_FOUND: "No project of that name.",
    CLOSE_TRY_LATER: "The process holds MAX_CONNECTIONS sockets: try again later.",
}

_TOKEN_QUERY = {
    "type": "object",
    "properties": {
        "token": {"type": "string", "description": "A private project's token."},
    },
}


def _channel(address, title, description, parameter, messages, close_codes) -> dict:
    return {
        "address": address,
        "title": title,
        "description": description,
        "parameters": {parameter[0]: {"description": parameter[1]}},
        "messages": {name: {"$ref": f"#/components/messages/{name}"} for name in messages},
        "bindings": {"ws": {"query": _TOKEN_QUERY}},
        "x-close-codes": [
            {"code": code, "reason": CLOSE_CODES[code]} for code in sorted(close_codes)
        ],
    }


CHANNELS = {
    "project": _channel(
        "/ws/projects/{slug}/",
        "A project's predictions",
        "Frames in, one reply per frame in the order the frames came. Private projects take "
        "?token=...; a browser's Origin must be among the allowed hosts.",
        ("slug", "The project's slug."),
        [
            "ready",
            "binaryImage",
            "textFrame",
            "options",
            "feedback",
            "prediction",
            "optionsSet",
            "feedbackSaved",
            "error",
            "modelChanged",
        ],
        [CLOSE_FORBIDDEN, CLOSE_NOT_FOUND, CLOSE_TRY_LATER],
    ),
    "legacy": _channel(
        "/models/{name}/get_predictions",
        "The original service's predictions",
        "A bare JSON array of numbers in, the output scores out. A refusal sends "
        '{"error": "..."} and then closes.',
        (
            "name",
            "A project slug, or the file name or S3 key (may hold /) of exactly one "
            "project's active model file.",
        ),
        ["legacyPixels", "legacyScores", "legacyError"],
        [CLOSE_FORBIDDEN, CLOSE_NOT_FOUND, CLOSE_TRY_LATER],
    ),
}


def _messages(channel: str, *names: str) -> list[dict]:
    return [{"$ref": f"#/channels/{channel}/messages/{name}"} for name in names]


def _operation(action, channel, title, messages, reply=()) -> dict:
    operation = {
        "action": action,
        "channel": {"$ref": f"#/channels/{channel}"},
        "title": title,
        "messages": _messages(channel, *messages),
    }
    if reply:
        operation["reply"] = {
            "channel": {"$ref": f"#/channels/{channel}"},
            "messages": _messages(channel, *reply),
        }
    return operation


# As AsyncAPI 3 has it, from the server's side: it receives the client's frames, sends the rest.
OPERATIONS = {
    "sendReady": _operation("send", "project", "Greet a new connection", ["ready"]),
    "receiveImage": _operation(
        "receive",
        "project",
        "Predict one image or pixel grid",
        ["binaryImage", "textFrame"],
        ["prediction", "error"],
    ),
    "receiveOptions": _operation(
        "receive", "project", "Set the connection's options", ["options"], ["optionsSet", "error"]
    ),
    "receiveFeedback": _operation(
        "receive",
        "project",
        "Keep a frame's image with its right label",
        ["feedback"],
        ["feedbackSaved", "error"],
    ),
    "sendModelChanged": _operation("send", "project", "Announce a model swap", ["modelChanged"]),
    "receiveLegacyPixels": _operation(
        "receive",
        "legacy",
        "Predict one pixel array",
        ["legacyPixels"],
        ["legacyScores", "legacyError"],
    ),
}


@functools.lru_cache(maxsize=16)
def asyncapi_document(*, host: str, secure: bool) -> dict:
    """The AsyncAPI document for clients reaching the server at `host` (callers must not
    change it)."""
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Model server WebSockets",
            "version": API_VERSION,
            "description": "Predictions over a WebSocket. The HTTP API is described by "
            "/api/openapi.json; both documents carry the same schemas.",
        },
        "defaultContentType": "application/json",
        "servers": {
            "this": {"host": host, "protocol": "wss" if secure else "ws"},
        },
        "channels": CHANNELS,
        "operations": OPERATIONS,
        "components": {"schemas": SCHEMAS, "messages": MESSAGES},
    }


def channel_summaries(document: dict) -> list[dict]:
    """What the docs page shows of each channel: its address, close codes, and each message
    with who sends it, what it answers, and a JSON example."""
    messages = document["components"]["messages"]
    senders = {}  # (channel, message name) -> "client" or "server"
    answers = {}  # (channel, message name) -> the names of its possible replies
    for operation in document["operations"].values():
        channel = operation["channel"]["$ref"].rsplit("/", 1)[-1]
        names = [item["$ref"].rsplit("/", 1)[-1] for item in operation["messages"]]
        replies = [
            item["$ref"].rsplit("/", 1)[-1]
            for item in operation.get("reply", {}).get("messages", [])
        ]
        for name in names:
            senders[channel, name] = "client" if operation["action"] == "receive" else "server"
            answers[channel, name] = replies
        for name in replies:
            senders[channel, name] = "server"
    summaries = []
    for key, channel in document["channels"].items():
        shown = []
        for name in channel["messages"]:
            message = messages[name]
            example = message["examples"][0]["payload"]
            shown.append(
                {
                    "name": name,
                    "title": message["title"],
                    "summary": message["summary"],
                    "sender": senders.get((key, name), "server"),
                    "answers": [messages[reply]["title"] for reply in answers.get((key, name), [])],
                    "schema": message["payload"]["$ref"].rsplit("/", 1)[-1],
                    "binary": message.get("contentType") == "application/octet-stream",
                    "example": example
                    if isinstance(example, str)
                    else json.dumps(example, indent=2),
                }
            )
        summaries.append(
            {
                "key": key,
                "address": channel["address"],
                "title": channel["title"],
                "description": channel["description"],
                "close_codes": channel["x-close-codes"],
                "messages": shown,
            }
        )
    return summaries
