"""The original service's WebSocket, `/models/<name>/get_predictions`: a bare JSON array of
numbers in, the model's output scores (a bare JSON array, in label order) out."""

import functools
import json
import time

import numpy as np
from channels.db import database_sync_to_async

from . import selectors, serving
from .consumers import CLOSE_FORBIDDEN, CLOSE_TRY_LATER, ProjectConsumer
from .inference.errors import BUSY, PredictionError
from .inference.frames import parse_pixels_array

BINARY_REFUSED = (
    "Binary frames are not accepted: send a text frame holding a JSON array of numbers."
)


class LegacyPredictionConsumer(ProjectConsumer):
    """Answers each frame with the model's raw output, or `{"error": "..."}`; one reply per
    frame, in order. The original protocol has no greeting and no swap message: a newly
    activated version simply answers the next frames."""

    transport = serving.LEGACY_WEBSOCKET
    refusal = "No project or model file has this name."  # the reason given on closing

    async def project_slug(self) -> str | None:
        name = self.scope["url_route"]["kwargs"]["name"]
        try:
            project = await database_sync_to_async(selectors.project_find_by_model_name)(name=name)
        except selectors.AmbiguousModelName as exc:
            self.refusal = str(exc)
            return None
        if project is None:
            self.refusal = f"No project or model file is named {name!r}."
            return None
        return project.slug

    async def refuse(self, code: int) -> None:
        """Say why in the original protocol's words, then close with the code."""
        if code == CLOSE_FORBIDDEN:
            self.refusal = "This project is private: send its token as ?token=."
        elif code == CLOSE_TRY_LATER:
            self.refusal = "busy: the server holds as many connections as it takes; try later."
        await self.send(text_data=json.dumps({"error": self.refusal}))
        await self.close(code=code)

    async def receive(self, text_data=None, bytes_data=None):
        if self.project is None:
            return
        received = time.perf_counter()
        message = self.busy_message()
        if message:
            self.queue_reply({"error": f"busy: {message}"}, busy=True)
        elif bytes_data is not None:
            self.queue_reply({"error": BINARY_REFUSED})
        else:
            self.queue_answer(self._answer(text_data, project=self.project, received=received))

    @staticmethod
    async def _answer(text: str, *, project: selectors.ProjectInfo, received: float):
        shape = project.model.input_shape if project.model else None
        parse = functools.partial(parse_pixels_array, text, input_shape=shape)
        try:
            output = await serving.answer_outputs(parse, project=project, received=received)
        except PredictionError as exc:
            return {"error": f"busy: {exc.message}" if exc.code == BUSY else exc.message}
        return np.ravel(output).tolist()
