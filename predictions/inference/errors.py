"""Errors that become the contract's error replies, and the one table of their codes."""

BAD_IMAGE = "bad_image"
TOO_LARGE = "too_large"
BAD_REQUEST = "bad_request"
BAD_SHAPE = "bad_shape"
MODEL_UNAVAILABLE = "model_unavailable"
BUSY = "busy"
FORBIDDEN = "forbidden"
NOT_FOUND = "not_found"

# Every error code and the HTTP status it answers with.
HTTP_STATUS = {
    BAD_IMAGE: 400,
    BAD_REQUEST: 400,
    BAD_SHAPE: 400,
    FORBIDDEN: 403,
    NOT_FOUND: 404,
    TOO_LARGE: 413,
    BUSY: 429,
    MODEL_UNAVAILABLE: 503,
}


class PredictionError(Exception):
    """A frame that cannot be answered with a prediction; `code` is one of the contract's codes."""

    def __init__(self, code: str, message: str, *, frame_id=None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.frame_id = frame_id  # set where the frame's own id is known (JSON frames)


class ModelUnavailable(PredictionError):
    """The project has no active version, or its file cannot be fetched or loaded right now."""

    def __init__(self, message: str):
        super().__init__(MODEL_UNAVAILABLE, message)


class Busy(PredictionError):
    """Too much waiting work: the frame was not queued (over HTTP, 429 with Retry-After)."""

    def __init__(self, message: str):
        super().__init__(BUSY, message)


def error_reply(frame_id, code: str, message: str) -> dict:
    return {"type": "error", "id": frame_id, "code": code, "message": message}


class ModelValidationError(ValueError):
    """A model file that cannot be served; the message says why, in words."""


def one_line(exc: Exception) -> str:
    """An exception's text on one line of at most 300 characters, for messages to people."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."
