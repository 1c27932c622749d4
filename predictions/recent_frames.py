"""The image frames a WebSocket connection sent lately, kept so that feedback can name them by id.

Each connection keeps its last `MAX_FRAMES` answered image frames within its own byte cap; all
connections of the process together stay within one byte budget. Past either, the oldest frames
go first (the budget's oldest across every connection). Used on the event loop only.
"""

import json
from collections import OrderedDict
from dataclasses import dataclass, field

MAX_FRAMES = 32
# A frame's id is kept as its JSON text; a longer one is not kept (a feedback frame is small).
MAX_ID_CHARS = 200
# Ids remembered without an image (pixels frames, repeated or dropped ids), for the reply's words.
MAX_NOTES = 2 * MAX_FRAMES

_PIXELS = "it was a pixels frame, and feedback needs an image"
_REPEATED = "several frames of this connection had it"
_EXPIRED = "its image is no longer kept (only the latest image frames are, within a byte budget)"
_NO_LABELS = "the version that answered it has no labels"


class FrameNotKept(LookupError):
    """Feedback names a frame whose image is not kept; the message says why, in words."""


@dataclass(eq=False)
class KeptFrame:
    """One answered image frame: its bytes as sent, the version number that answered it and
    the top label it gave."""

    key: str
    image: bytes
    version: int
    predicted: str
    owner: "RecentFrames | None" = field(default=None, repr=False)


class FrameBudget:
    """The bytes of kept frames across the process, against `limit`; taking more than is
    free drops the oldest frames, whichever connection holds them."""

    def __init__(self, limit: int):
        self.limit = limit
        self.used = 0
        self._order: OrderedDict[KeptFrame, None] = OrderedDict()

    def take(self, frame: KeptFrame) -> bool:
        """Count `frame` in (dropping the oldest as needed); False when it alone is too big."""
        size = len(frame.image)
        if size > self.limit:
            return False
        while self.used + size > self.limit:
            oldest = next(iter(self._order))
            oldest.owner.drop(oldest)
        self._order[frame] = None
        self.used += size
        return True

    def give_back(self, frame: KeptFrame) -> None:
        if frame in self._order:
            del self._order[frame]
            self.used -= len(frame.image)


class RecentFrames:
    """One connection's kept frames: the last `MAX_FRAMES` answered image frames within
    `max_bytes` and the process's `budget`; `close()` gives their bytes back."""

    def __init__(self, *, budget: FrameBudget, max_bytes: int):
        self.budget = budget
        self.max_bytes = max_bytes
        self.bytes = 0
        self.closed = False
        self._frames: OrderedDict[str, KeptFrame] = OrderedDict()
        self._notes: OrderedDict[str, str] = OrderedDict()  # id -> why it has no frame

    def __len__(self) -> int:
        return len(self._frames)

    def keep(self, frame_id, image: bytes, *, version: int, predicted: str) -> None:
        """Keep an answered image frame (unless its id was seen already: then none is kept)."""
        key = _key(frame_id)
        if self.closed or key is None or self._seen_again(key):
            return
        if len(image) > self.max_bytes:
            self._note(key, _EXPIRED)
            return
        while self._frames and (
            len(self._frames) >= MAX_FRAMES or self.bytes + len(image) > self.max_bytes
        ):
            self.drop(next(iter(self._frames.values())))
        frame = KeptFrame(key, image, version, predicted, owner=self)
        if not self.budget.take(frame):
            self._note(key, _EXPIRED)
            return
        self._frames[key] = frame
        self.bytes += len(image)

    def keep_pixels(self, frame_id) -> None:
        """Note an answered pixels frame, so that feedback naming it hears why it fails."""
        self._note_unless_seen(frame_id, _PIXELS)

    def keep_unlabelled(self, frame_id) -> None:
        """Note a frame answered by a version without labels (it takes no feedback)."""
        self._note_unless_seen(frame_id, _NO_LABELS)

    def find(self, frame_id) -> KeptFrame:
        """The kept frame with this id; raises FrameNotKept saying why there is none."""
        key = _key(frame_id)
        shown = key if key is not None and len(key) <= 40 else "given"
        if key is not None and key in self._frames:
            return self._frames[key]
        why = self._notes.get(key) if key is not None else None
        if why is None:
            why = f"it is not among the last {MAX_FRAMES} image frames answered on this connection"
        raise FrameNotKept(f"No image to label for the frame id {shown}: {why}.")

    def drop(self, frame: KeptFrame) -> None:
        """Forget a kept frame (the oldest, to make room) and give its bytes back."""
        if self._frames.get(frame.key) is not frame:
            return
        del self._frames[frame.key]
        self.bytes -= len(frame.image)
        self.budget.give_back(frame)
        self._note(frame.key, _EXPIRED)

    def close(self) -> None:
        """Give every kept frame's bytes back to the budget; nothing is kept from now on."""
        self.closed = True
        for frame in list(self._frames.values()):
            self.drop(frame)
        self._notes.clear()

    def _note_unless_seen(self, frame_id, why: str) -> None:
        key = _key(frame_id)
        if not self.closed and key is not None and not self._seen_again(key):
            self._note(key, why)

    def _seen_again(self, key: str) -> bool:
        """Whether the id was had by an earlier frame; if so, it names none from now on."""
        frame = self._frames.get(key)
        if frame is not None:
            self.drop(frame)
        elif key not in self._notes:
            return False
        self._note(key, _REPEATED)
        return True

    def _note(self, key: str, why: str) -> None:
        self._notes.pop(key, None)
        self._notes[key] = why
        while len(self._notes) > MAX_NOTES:
            self._notes.popitem(last=False)


def _key(frame_id) -> str | None:
    """A frame id as its JSON text (`1`, `1.0`, `true` and `"1"` are four ids), or None when
    it is too long to keep."""
    key = json.dumps(frame_id, sort_keys=True, separators=(",", ":"))
    return key if len(key) <= MAX_ID_CHARS else None
