"""The prediction WebSocket: frames in, one reply per frame out, in order."""

import asyncio
import json
import logging
import re
import time
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from . import metrics, selectors, serving, shutdown, swaps
from .inference.errors import (
    BAD_REQUEST,
    BUSY,
    MODEL_UNAVAILABLE,
    Busy,
    PredictionError,
    error_reply,
)
from .inference.frames import Frame
from .models import FeedbackExample, Project
from .origins import origin_allowed
from .ratelimit import RateLimiter, address_busy_message, feedback_limiter
from .recent_frames import FrameBudget, FrameNotKept, KeptFrame, RecentFrames
from .services import feedback_save, project_group_name

logger = logging.getLogger(__name__)

CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
CLOSE_TRY_LATER = 4013  # the process holds MAX_CONNECTIONS sockets (autobahn sends 1000, 3000-4999)


class ProjectConsumer(AsyncWebsocketConsumer):
    """A WebSocket serving one project: the Origin and token checks in `connect()`, frames
    bounded and rate-limited, replies sent in the order their frames arrived, and version
    swaps followed through the project's group. A connection is given its version on connect
    (a canary's candidate, by its share) and keeps it while that version serves.

    Subclasses name the project (`project_slug`), turn frames into answers in `receive`
    (`busy_message`, then `queue_answer` or `queue_reply`), and say what the client hears on
    connect (`announce_ready`), on a refusal (`refuse`) and on a swap (`announce_swap`).
    `receive` never waits for inference: it queues the job and returns, so the number of
    frames waiting per connection stays bounded (`MAX_PENDING_FRAMES`, `busy` beyond) even
    though daphne would buffer every incoming frame; so does the process's (the pool's and
    batchers' queues). A process holding `MAX_CONNECTIONS` sockets closes new ones with 4013.
    """

    project: selectors.ProjectInfo | None = None
    transport = "websocket"  # the metrics' label

    async def project_slug(self) -> str | None:
        """The slug of the project the URL names, or None when it names none."""
        raise NotImplementedError

    async def dispatch(self, message):
        """As channels dispatches, less its hop to the sync thread before every frame: channels
        closes stale database connections there before each message, which costs each frame
        a round trip through another thread (waiting its turn behind any database call). No
        frame touches the database on the event loop, and `database_sync_to_async` closes
        stale connections around each call that does."""
        if message["type"] == "websocket.receive":
            await self.websocket_receive(message)
            return
        await super().dispatch(message)

    async def announce_ready(self) -> None:
        """What the client hears once its connection is accepted and its project found."""

    async def announce_swap(self) -> None:
        """What the client hears when another version of its project goes into service."""

    async def refuse(self, code: int) -> None:
        """Close an accepted connection (CLOSE_NOT_FOUND, CLOSE_FORBIDDEN or CLOSE_TRY_LATER)."""
        await self.close(code=code)

    async def __call__(self, scope, receive, send):
        try:
            await super().__call__(scope, receive, send)
        finally:  # also when connect() raised, or daphne cancelled the consumer
            CONNECTIONS.let_go(self)

    async def connect(self):
        self.group = None
        self.pending = 0
        self.rate = RateLimit(settings.MAX_FRAMES_PER_SECOND)
        self.replies: asyncio.Queue = asyncio.Queue()
        self.sender: asyncio.Task | None = None
        # Counted before anything is awaited, so the limit holds however many handshakes come
        # at once; refused sockets count too until they are gone.
        if not CONNECTIONS.let_in(self):
            await self.accept()
            await self.refuse(CLOSE_TRY_LATER)
            return

        self.slug = await self.project_slug()
        project = None
        if self.slug is not None:
            self.group = project_group_name(self.slug)
            # Join the group before reading the active version, so no swap falls in between.
            await self.channel_layer.group_add(self.group, self.channel_name)
            project = await database_sync_to_async(selectors.project_get_info)(slug=self.slug)
        origins = project.allowed_origins if project else ()
        if not origin_allowed(_header(self.scope, b"origin"), project_origins=origins):
            await self.close()  # before accept: the handshake is refused (HTTP 403)
            return
        # Accept first: a close code only reaches the client on an accepted socket.
        await self.accept()
        if project is None:
            await self.refuse(CLOSE_NOT_FOUND)
            return
        if not project.token_matches(_query_token(self.scope)):
            await self.refuse(CLOSE_FORBIDDEN)
            return
        self.project = project.assigned()  # a canary's candidate, by its share, or not
        swaps.watch_activations()
        shutdown.track(self)
        metrics.WEBSOCKETS.inc()
        self.sender = asyncio.create_task(self._send_replies())
        self._preload()
        await self.announce_ready()

    async def disconnect(self, code):
        CONNECTIONS.let_go(self)
        shutdown.forget(self)
        if self.group is not None:
            await self.channel_layer.group_discard(self.group, self.channel_name)
        if self.sender is not None:
            self.sender.cancel()
            metrics.WEBSOCKETS.dec()
        # Frames still waiting are dropped (a batch skips cancelled ones).
        while not self.replies.empty():
            self.replies.get_nowait()[0].cancel()

    def busy_message(self) -> str | None:
        """Why a frame arriving now is answered `busy`, or None when it may be answered."""
        if self.pending >= settings.MAX_PENDING_FRAMES:
            return (
                f"Too many frames waiting ({self.pending}); wait for replies before sending more."
            )
        if not self.rate.allow():
            return f"Over {self.rate.per_second:g} frames a second; send fewer frames."
        return None

    def queue_answer(self, answer) -> None:
        """Queue a frame's answer (a coroutine returning the reply); it counts as waiting."""
        self.pending += 1
        self.replies.put_nowait((asyncio.ensure_future(answer), True))

    def queue_reply(self, reply, *, busy: bool = False) -> None:
        """Queue a reply known already, behind the answers still coming."""
        if busy:
            metrics.observe_error(
                BUSY,
                project=self.slug,
                transport=self.transport,
                version=serving.version_number(self.project),
            )
        done = asyncio.get_running_loop().create_future()
        done.set_result(reply)
        self.replies.put_nowait((done, False))

    async def model_changed(self, event):
        """A version was activated (in any process): serve it and tell the client."""
        await self._follow_project()

    async def project_changed(self, event):
        """The project was saved (token, origins, privacy...): a socket that would no longer
        be let in is closed (4403)."""
        await self._follow_project()

    async def _follow_project(self) -> None:
        if self.project is None:  # not accepted (or refused and closing): hears nothing
            return
        project = await database_sync_to_async(selectors.project_get_info)(slug=self.slug)
        if project is None:
            self.project = None
            await self.refuse(CLOSE_NOT_FOUND)
            return
        if not _still_allowed(self.scope, project):
            self.project = None
            await self.refuse(CLOSE_FORBIDDEN)
            return
        # Kept while it is in service or the candidate; moved to the one in service otherwise.
        project = project.following(_version_id(self.project))
        unchanged = _version_id(project) == _version_id(self.project)
        new_artifact = not selectors.same_artifact(project.model, self.project.model)
        self.project = project
        if new_artifact:  # another version, or the same one served as another variant
            self._preload()
        if unchanged:  # announced twice, or only the variant changed: the client hears nothing
            return
        await self.announce_swap()

    def _preload(self) -> None:
        """Start loading the model in the pool so the first frame does not wait for it."""
        spec = self.project.model
        if spec is None or serving.model_cache().is_loaded(spec):
            return  # the pool's threads are for frames
        self.preloading = asyncio.ensure_future(
            serving.run_in_inference_pool(serving.preload, spec)
        )

    async def _send_replies(self):
        """Send replies in the order their frames arrived."""
        while True:
            future, counted = await self.replies.get()
            try:
                reply = await future
            finally:
                if counted:
                    self.pending -= 1
            await self.send(text_data=json.dumps(reply))


class PredictionConsumer(ProjectConsumer):
    """The contract's protocol on `/ws/projects/<slug>/`: `ready`, image and pixel frames,
    prediction objects, `model_changed`, feedback on the images it keeps (`recent`), and the
    connection's options (`preview`: every frame's reply shows its model input)."""

    binary_frames = 0  # binary frames received so far: each one's id is its number
    recent: RecentFrames | None = None  # the image frames kept for feedback
    preview = False  # set by an options message

    async def project_slug(self) -> str:
        return self.scope["url_route"]["kwargs"]["slug"]

    async def connect(self):
        self.answering: set[asyncio.Future] = set()  # frames' answers not come yet
        self.feedback_rate = RateLimiter(settings.FEEDBACK_PER_MINUTE)
        await super().connect()
        if self.project is not None:
            self.recent = RecentFrames(
                budget=frame_budget(), max_bytes=settings.FEEDBACK_FRAMES_PER_CONNECTION_BYTES
            )

    async def disconnect(self, code):
        await super().disconnect(code)
        if self.recent is not None:
            self.recent.close()

    async def announce_ready(self) -> None:
        model = self.project.model.meta() if self.project.model else None
        await self.send(
            text_data=json.dumps({"type": "ready", "project": self.slug, "model": model})
        )

    async def announce_swap(self) -> None:
        model = self.project.model.meta() if self.project.model else None
        self.queue_reply({"type": "model_changed", "model": model})

    async def receive(self, text_data=None, bytes_data=None):
        if self.project is None:
            return
        received = time.perf_counter()
        frame_id = None
        if bytes_data is not None:
            frame_id = self.binary_frames
            self.binary_frames += 1
        control = _control_request(text_data) if bytes_data is None else None
        if control is not None and control["type"] == OPTIONS:
            # Costs no work, so never `busy`; answered in order behind earlier frames, and
            # frames from here on are queued with the new setting.
            self.queue_reply(self._set_options(control))
            return
        feedback = control
        message = self.busy_message()
        if not message and feedback is not None:
            message = self._feedback_busy_message()
        if not message:
            try:
                if feedback is not None:
                    self.queue_answer(self._feedback(feedback, earlier=set(self.answering)))
                    return
                if bytes_data is not None:
                    frames = [Frame(id=frame_id, image=bytes_data)]
                    answer = serving.answer_binary(
                        bytes_data,
                        frame_id=frame_id,
                        project=self.project,
                        received=received,
                        preview=self.preview,
                    )
                else:
                    frames = []  # the pool adds the frame once it is parsed
                    answer = serving.answer_text(
                        text_data,
                        project=self.project,
                        received=received,
                        parsed=frames.append,
                        preview=self.preview,
                    )
            except Busy as exc:  # the process has as much waiting work as it takes
                message = exc.message
            else:
                self._queue_remembered(answer, frames)
                return
        if bytes_data is None:
            frame_id = feedback.get("id") if feedback is not None else _text_frame_id(text_data)
        self.queue_reply(error_reply(frame_id, BUSY, message), busy=True)

    def _set_options(self, request: dict) -> dict:
        """Apply `{"type": "options", "preview"?: bool}`; the reply states the options now."""
        unknown = sorted(set(request) - {"type", "preview"})
        if unknown:
            message = f"Unknown options field(s): {', '.join(unknown)}; the one known is preview."
            return self._error(None, PredictionError(BAD_REQUEST, message))
        preview = request.get("preview", self.preview)
        if not isinstance(preview, bool):
            return self._error(
                None, PredictionError(BAD_REQUEST, '"preview" must be true or false.')
            )
        self.preview = preview
        return {"type": OPTIONS, "preview": preview}

    def _queue_remembered(self, answer, frames: list[Frame]) -> None:
        """Queue a frame's answer, keeping its image for feedback once it is answered."""
        task = asyncio.ensure_future(self._remember(answer, frames))
        self.answering.add(task)
        task.add_done_callback(self.answering.discard)
        self.queue_answer(task)

    async def _remember(self, answer, frames: list[Frame]) -> dict:
        reply = await answer
        if reply["type"] == "prediction" and self.recent is not None and frames:
            frame = frames[0]
            if frame.image is None:
                self.recent.keep_pixels(reply["id"])
            elif not reply.get("labels"):
                self.recent.keep_unlabelled(reply["id"])
            else:
                self.recent.keep(
                    reply["id"],
                    frame.image,
                    version=reply["model_version"],
                    predicted=reply["labels"][0]["label"],
                )
        return reply

    def _feedback_busy_message(self) -> str | None:
        """Why a feedback frame is `busy`: over the connection's budget, or over its client
        address's (shared with HTTP feedback and the address's other sockets)."""
        if self.feedback_rate.take(""):
            return (
                f"Over {settings.FEEDBACK_PER_MINUTE} feedback frames a minute on this "
                "connection; send this one again later."
            )
        client = self.scope.get("client") or ("",)
        wait = feedback_limiter().take(client[0] or "")
        return address_busy_message(wait) if wait else None

    async def _feedback(self, request: dict, *, earlier: set[asyncio.Future]) -> dict:
        """Store the image of an earlier frame with the label the client gives it."""
        frame_id = request.get("id")
        if earlier:  # the frames sent before this one are answered first, as replies are
            await asyncio.wait(earlier)
        try:
            kept = self.recent.find(frame_id)
            sha256 = await database_sync_to_async(_save_feedback, thread_sensitive=False)(
                slug=self.slug, frame=kept, label=request.get("label", "")
            )
        except FrameNotKept as exc:
            return self._error(frame_id, PredictionError(BAD_REQUEST, str(exc)))
        except PredictionError as exc:
            return self._error(frame_id, exc)
        except Exception:  # the database or the storage failing: one reply, never the socket
            logger.exception("could not save feedback for %s", self.slug)
            message = "The feedback could not be stored right now; it is logged. Try again later."
            return self._error(frame_id, PredictionError(MODEL_UNAVAILABLE, message))
        return {"type": "feedback_saved", "id": frame_id, "example": sha256}

    def _error(self, frame_id, exc: PredictionError) -> dict:
        metrics.observe_error(
            exc.code,
            project=self.slug,
            transport=self.transport,
            version=serving.version_number(self.project),
        )
        return error_reply(frame_id, exc.code, exc.message)


_frame_budget = FrameBudget(0)


def frame_budget() -> FrameBudget:
    """The process's budget of bytes kept for feedback (its limit read afresh: tests vary it)."""
    _frame_budget.limit = settings.FEEDBACK_FRAMES_BUDGET_BYTES
    return _frame_budget


def _save_feedback(*, slug: str, frame: KeptFrame, label) -> str:
    """In a thread: store a kept frame's image under `label`; returns the example's sha256."""
    project = Project.objects.filter(slug=slug).first()
    if project is None:  # deleted since the connection opened
        raise PredictionError(MODEL_UNAVAILABLE, f"The project {slug!r} no longer exists.")
    example = feedback_save(
        project=project,
        image_bytes=frame.image,
        label=label,
        predicted=frame.predicted,
        version=frame.version,
        source=FeedbackExample.Source.PAGE,
    )
    return example.sha256


# Feedback and options frames are small: only a text frame this short whose text names one of
# their types is parsed on the event loop to look; anything else goes to the pool as a
# prediction frame.
FEEDBACK, OPTIONS = "feedback", "options"
CONTROL_FRAME_CHARS = 4096
_CONTROL_TYPE = re.compile(r'"type"\s*:\s*"(?:feedback|options)"')


def _control_request(text: str | None) -> dict | None:
    """The JSON object of a feedback or options frame, or None for any other frame."""
    if not text or len(text) > CONTROL_FRAME_CHARS or not _CONTROL_TYPE.search(text):
        return None
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) and data.get("type") in (FEEDBACK, OPTIONS) else None


class ConnectionLimit:
    """The WebSockets this process holds, against MAX_CONNECTIONS: a consumer is let in first
    thing in `connect()` and let go in `disconnect()` or when it ends any other way (letting go
    twice does nothing). Used on the event loop only."""

    def __init__(self):
        self._held: set[ProjectConsumer] = set()

    def __len__(self) -> int:
        return len(self._held)

    def let_in(self, consumer: ProjectConsumer) -> bool:
        if len(self._held) >= settings.MAX_CONNECTIONS:
            return False
        self._held.add(consumer)
        return True

    def let_go(self, consumer: ProjectConsumer) -> None:
        self._held.discard(consumer)


CONNECTIONS = ConnectionLimit()


class RateLimit:
    """A token bucket: `per_second` frames a second on average, bursts of two seconds' worth."""

    BURST_SECONDS = 2.0

    def __init__(self, per_second: float):
        self.per_second = per_second
        self.tokens = per_second * self.BURST_SECONDS
        self.updated = time.monotonic()

    def allow(self) -> bool:
        if self.per_second <= 0:  # no limit
            return True
        now = time.monotonic()
        capacity = self.per_second * self.BURST_SECONDS
        self.tokens = min(capacity, self.tokens + (now - self.updated) * self.per_second)
        self.updated = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


def _still_allowed(scope, project: selectors.ProjectInfo) -> bool:
    """The connect-time checks, again, against the project as it is now."""
    origin = _header(scope, b"origin")
    return origin_allowed(origin, project_origins=project.allowed_origins) and (
        project.token_matches(_query_token(scope))
    )


def _version_id(project: selectors.ProjectInfo | None) -> int | None:
    return project.model.version_id if project is not None and project.model else None


def _header(scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


def _query_token(scope) -> str | None:
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token")
    return values[0] if values else None


# A frame answered `busy` is never parsed whole on the event loop (a 1 MiB frame costs tens of
# ms there): its id is read from its first characters, found when "id" is its first key (as the
# client and most JSON writers put it); otherwise the reply's id is null.
ID_PREFIX_CHARS = 256
_LEADING_ID = re.compile(
    r'\s*\{\s*"id"\s*:\s*("(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?|true|false|null)\s*[,}]'
)


def _text_frame_id(text: str | None):
    """The id of a frame answered `busy`, from its first ID_PREFIX_CHARS characters."""
    match = _LEADING_ID.match((text or "")[:ID_PREFIX_CHARS])
    if match is None:
        return None
    try:
        return json.loads(match.group(1))
    except ValueError:
        return None


class EchoConsumer(AsyncWebsocketConsumer):
    """Sends every frame straight back: the transport's own round trip, for `make bench`.

    Routed only when `ECHO_WEBSOCKET` is true.
    """

    async def receive(self, text_data=None, bytes_data=None):
        await self.send(text_data=text_data, bytes_data=bytes_data)
