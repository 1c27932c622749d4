"""The JSON Schemas (2020-12, as OpenAPI 3.1 and AsyncAPI 3.0 take them) of what the server
takes and answers, over HTTP and the WebSocket alike: one dictionary, `SCHEMAS`, that both
documents carry as `components.schemas`."""

from ..inference.errors import HTTP_STATUS


def ref(name: str) -> dict:
    """A reference to one of `SCHEMAS`."""
    if name not in SCHEMAS:
        raise KeyError(f"No schema named {name!r}.")
    return {"$ref": f"#/components/schemas/{name}"}


def _ref(name: str) -> dict:  # for use inside SCHEMAS itself, before it exists
    return {"$ref": f"#/components/schemas/{name}"}


# Every error code, from the one table of them.
ERROR_CODES = tuple(HTTP_STATUS)

_CODE_MEANINGS = {
    "bad_image": "not decodable, or a format not accepted",
    "too_large": "over the pixel or byte limit",
    "bad_request": "malformed JSON or fields, or an unsupported body",
    "bad_shape": "pixels that do not fit the model",
    "model_unavailable": "no active model, or its file cannot be fetched right now",
    "busy": "too much waiting work, or past a rate limit: try again later",
    "forbidden": "a private project's token is missing or wrong (HTTP only)",
    "not_found": "no project of that name (HTTP only)",
}

_IMAGE_STRING = {
    "type": "string",
    "description": "An encoded image (PNG, JPEG, WebP, BMP or GIF): a data URL "
    '("data:image/png;base64,...") or bare base64.',
    "examples": ["data:image/png;base64,iVBORw0KGgo..."],
}
_FRAME_ID = {
    "description": "Any JSON value: the reply carries it back. Over HTTP, null for raw bytes "
    "and forms."
}
_VERSION_NUMBER = {
    "description": "The version number that answered (as the prediction's `model_version`).",
    "anyOf": [{"type": "integer", "minimum": 1}, {"type": "string", "pattern": "^[0-9]{1,9}$"}],
}

SCHEMAS: dict[str, dict] = {
    # --- Models and projects ---------------------------------------------------------------------
    "ModelMetadata": {
        "type": "object",
        "description": "A model version as clients see it.",
        "required": ["version", "input_shape", "labels"],
        "properties": {
            "version": {"type": "integer", "minimum": 1, "description": "The version number."},
            "input_shape": {
                "type": "array",
                "description": "height, width, channels",
                "items": {"type": "integer", "minimum": 1},
                "minItems": 3,
                "maxItems": 3,
            },
            "labels": {
                "type": "array",
                "description": "One per output class, in order; empty for a model whose raw "
                "outputs are the answer.",
                "items": {"type": "string"},
            },
        },
        "examples": [{"version": 3, "input_shape": [28, 28, 1], "labels": ["0", "1", "2"]}],
    },
    "Accuracy": {
        "type": "object",
        "description": "How often a version's answer was the label people gave.",
        "required": ["agreed", "total", "share"],
        "properties": {
            "agreed": {"type": "integer", "minimum": 0},
            "total": {"type": "integer", "minimum": 1},
            "share": {"type": "number", "minimum": 0, "maximum": 1},
        },
    },
    "Project": {
        "type": "object",
        "required": ["slug", "name", "description", "model"],
        "properties": {
            "slug": {"type": "string", "pattern": "^[-a-zA-Z0-9_]+$"},
            "name": {"type": "string"},
            "description": {"type": "string"},
            "model": {
                "description": "The version in service, or null while there is none.",
                "oneOf": [_ref("ModelMetadata"), {"type": "null"}],
            },
            "accuracy": {
                "type": "object",
                "description": "Per version number: feedback accuracy. Only for staff and a "
                "private project's token holders.",
                "additionalProperties": _ref("Accuracy"),
            },
        },
    },
    "ProjectList": {
        "type": "object",
        "required": ["projects"],
        "properties": {
            "projects": {
                "type": "array",
                "description": "The public projects.",
                "items": _ref("Project"),
            }
        },
    },
    # --- Frames a client sends (HTTP bodies and WebSocket frames) ------------------------------
    "NestedNumbers": {
        "description": "A number, or a nested array of numbers.",
        "oneOf": [{"type": "number"}, {"type": "array", "items": _ref("NestedNumbers")}],
    },
    "TextFrame": {
        "type": "object",
        "description": "One image or pixel grid to predict: exactly one of `image` or `pixels`.",
        "properties": {
            "id": _FRAME_ID,
            "image": _IMAGE_STRING,
            "pixels": {
                "type": "array",
                "description": "The model's input layout, height x width x channels, fed as "
                "it is (no scaling).",
                "items": _ref("NestedNumbers"),
            },
            "top_k": {
                "type": "integer",
                "minimum": 1,
                "default": 5,
                "description": "How many labels to answer.",
            },
            "preview": {
                "type": "boolean",
                "description": "Answer `input_preview` too.",
                "default": False,
            },
        },
        "oneOf": [{"required": ["image"]}, {"required": ["pixels"]}],
        "examples": [{"id": 1, "image": "data:image/png;base64,iVBORw0KGgo...", "top_k": 3}],
    },
    # Binary content has no `type` in OpenAPI 3.1 (bytes are no JSON string): a media type.
    "RawImage": {
        "description": "The bytes of one encoded image (PNG, JPEG, WebP, BMP or GIF).",
        "contentMediaType": "image/*",
    },
    "MultipartImage": {
        "type": "object",
        "required": ["image"],
        "properties": {
            "image": {
                "contentMediaType": "application/octet-stream",
                "description": "The image file.",
            }
        },
    },
    "FeedbackForm": {
        "type": "object",
        "required": ["image", "label"],
        "properties": {
            "image": {
                "contentMediaType": "application/octet-stream",
                "description": "The image file.",
            },
            "label": {"type": "string", "description": "The right label, among the version's."},
            "model_version": {
                "type": "string",
                "pattern": "^[0-9]{1,9}$",
                "description": _VERSION_NUMBER["description"],
            },
            "predicted": {"type": "string", "description": "The label the model answered."},
        },
    },
    "FeedbackJson": {
        "type": "object",
        "required": ["image", "label"],
        "properties": {
            "id": _FRAME_ID,
            "image": _IMAGE_STRING,
            "label": {"type": "string", "description": "The right label, among the version's."},
            "model_version": _VERSION_NUMBER,
            "predicted": {"type": "string", "description": "The label the model answered."},
        },
        "examples": [
            {"image": "data:image/png;base64,iVBORw0KGgo...", "label": "7", "predicted": "1"}
        ],
    },
    # --- Replies -----------------------------------------------------------------------------------
    "LabelScore": {
        "type": "object",
        "required": ["label", "score"],
        "properties": {"label": {"type": "string"}, "score": {"type": "number"}},
    },
    "Timings": {
        "type": "object",
        "description": "Milliseconds per stage of the frame.",
        "required": ["decode", "preprocess", "inference", "total"],
        "properties": {
            name: {"type": "number", "minimum": 0}
            for name in ("decode", "preprocess", "inference", "total")
        },
    },
    "Prediction": {
        "type": "object",
        "description": "One frame's answer: `labels` (sorted by score, highest first), or "
        "`outputs` (the raw output) for a version registered without labels.",
        "required": ["type", "id", "model_version", "timings_ms"],
        "properties": {
            "type": {"const": "prediction"},
            "id": {
                "description": "The frame's id; over the WebSocket a binary frame's 0-based "
                "number among the connection's binary frames; over HTTP null unless the JSON "
                "body had one."
            },
            "labels": {"type": "array", "items": _ref("LabelScore")},
            "outputs": {"type": "array", "items": _ref("NestedNumbers")},
            "model_version": {"type": "integer", "minimum": 1},
            "timings_ms": _ref("Timings"),
            "input_preview": {
                "type": "string",
                "pattern": "^data:image/png;base64,",
                "description": "The preprocessed model input as a PNG, upscaled "
                "nearest-neighbour to at least 112 px; only when asked for (preview).",
            },
        },
        "oneOf": [{"required": ["labels"]}, {"required": ["outputs"]}],
        "examples": [
            {
                "type": "prediction",
                "id": 1,
                "labels": [{"label": "7", "score": 0.93}, {"label": "1", "score": 0.04}],
                "model_version": 3,
                "timings_ms": {"decode": 0.4, "preprocess": 0.2, "inference": 1.1, "total": 2.0},
            }
        ],
    },
    "Error": {
        "type": "object",
        "description": "Why a frame or request got no answer. Codes: "
        + "; ".join(f"`{code}`: {_CODE_MEANINGS.get(code, code)}" for code in ERROR_CODES)
        + ".",
        "required": ["type", "id", "code", "message"],
        "properties": {
            "type": {"const": "error"},
            "id": {"description": "The frame's id where known, else null."},
            "code": {"type": "string", "enum": list(ERROR_CODES)},
            "message": {"type": "string", "description": "What went wrong, in words."},
        },
        "examples": [
            {
                "type": "error",
                "id": None,
                "code": "bad_image",
                "message": "The image could not be decoded.",
            }
        ],
    },
    "FeedbackSaved": {
        "type": "object",
        "required": ["type", "example"],
        "properties": {
            "type": {"const": "feedback_saved"},
            "id": {"description": "Over the WebSocket: the image frame's id."},
            "example": {
                "type": "string",
                "pattern": "^[0-9a-f]{64}$",
                "description": "The stored image's sha256.",
            },
        },
        "examples": [{"type": "feedback_saved", "example": "9f86d081" + "0" * 56}],
    },
    # --- Health ------------------------------------------------------------------------------------
    "Health": {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"const": "ok"}},
    },
    "Unready": {
        "type": "object",
        "required": ["status", "problems"],
        "properties": {
            "status": {"const": "unavailable"},
            "problems": {
                "type": "array",
                "description": "Each dependency that does not answer, named.",
                "items": {"type": "string"},
            },
        },
    },
    # --- The WebSocket's own messages ----------------------------------------------------------
    "Ready": {
        "type": "object",
        "required": ["type", "project", "model"],
        "properties": {
            "type": {"const": "ready"},
            "project": {"type": "string", "description": "The project's slug."},
            "model": {
                "description": "The version this connection is served by; null while the "
                "project has none.",
                "oneOf": [_ref("ModelMetadata"), {"type": "null"}],
            },
        },
        "examples": [
            {
                "type": "ready",
                "project": "digits",
                "model": {"version": 3, "input_shape": [28, 28, 1], "labels": ["0", "1", "2"]},
            }
        ],
    },
    "ModelChanged": {
        "type": "object",
        "required": ["type", "model"],
        "properties": {
            "type": {"const": "model_changed"},
            "model": {"oneOf": [_ref("ModelMetadata"), {"type": "null"}]},
        },
        "examples": [
            {
                "type": "model_changed",
                "model": {"version": 4, "input_shape": [28, 28, 1], "labels": ["0", "1", "2"]},
            }
        ],
    },
    "Options": {
        "type": "object",
        "description": "Options for the connection's later frames (a field left out keeps its "
        "value; another field is `bad_request`).",
        "required": ["type"],
        "properties": {
            "type": {"const": "options"},
            "preview": {"type": "boolean", "description": "Answer `input_preview` on each frame."},
        },
        "additionalProperties": False,
        "examples": [{"type": "options", "preview": True}],
    },
    "OptionsSet": {
        "type": "object",
        "description": "The options in force, after an options message.",
        "required": ["type", "preview"],
        "properties": {"type": {"const": "options"}, "preview": {"type": "boolean"}},
        "examples": [{"type": "options", "preview": True}],
    },
    "FeedbackFrame": {
        "type": "object",
        "required": ["type", "id", "label"],
        "properties": {
            "type": {"const": "feedback"},
            "id": {
                "description": "The id of an image frame this connection sent (among its last "
                "32 answered ones)."
            },
            "label": {"type": "string", "description": "The right label, among the version's."},
        },
        "examples": [{"type": "feedback", "id": 1, "label": "7"}],
    },
    "BinaryImage": {
        "description": "A binary frame: one encoded image (PNG, JPEG, WebP, BMP or GIF).",
        "contentMediaType": "image/*",
        "examples": ["<the bytes of a PNG file>"],
    },
    # --- The original service's API --------------------------------------------------------------
    "LegacyModelList": {
        "type": "object",
        "required": ["models"],
        "properties": {"models": {"type": "array", "items": {"type": "string"}}},
        "examples": [{"models": ["digits", "colors"]}],
    },
    "LegacyInputShape": {
        "type": "object",
        "required": ["width", "height", "channels"],
        "properties": {
            name: {"type": "integer", "minimum": 1} for name in ("width", "height", "channels")
        },
        "examples": [{"width": 28, "height": 28, "channels": 1}],
    },
    "ErrorMessage": {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"type": "string", "description": "What went wrong, in words."}},
        "examples": [{"error": "No project or model file is named 'mnist'."}],
    },
    "LegacyPixels": {
        "type": "array",
        "description": "A bare JSON array of numbers (nested or flat) whose element count is "
        "the model's input size, reshaped to the input and fed as it is.",
        "items": _ref("NestedNumbers"),
        "examples": [[[0, 0.5, 1.0], [0.2, 0.1, 0]]],
    },
    "LegacyScores": {
        "type": "array",
        "description": "The output scores in label order (a model with one output: that "
        "output, flattened).",
        "items": _ref("NestedNumbers"),
        "examples": [[0.01, 0.9, 0.09]],
    },
}
