"""The image frames a connection keeps for feedback: counts, byte caps, the process budget."""

import pytest

from predictions.recent_frames import MAX_FRAMES, FrameBudget, FrameNotKept, RecentFrames


def frames(budget_bytes=10_000, max_bytes=1_000):
    budget = FrameBudget(budget_bytes)
    return budget, RecentFrames(budget=budget, max_bytes=max_bytes)


def keep(recent, frame_id, size=10, predicted="7"):
    recent.keep(frame_id, bytes(size), version=3, predicted=predicted)


def test_a_kept_frame_is_found_by_its_id():
    _, recent = frames()
    keep(recent, "a", predicted="1")
    keep(recent, 0, predicted="2")
    found = recent.find("a")
    assert (found.image, found.version, found.predicted) == (bytes(10), 3, "1")
    assert recent.find(0).predicted == "2"


def test_ids_of_other_json_types_are_other_ids():
    _, recent = frames()
    keep(recent, 1)
    for other in ("1", 1.0, True, [1]):
        with pytest.raises(FrameNotKept, match="not among the last 32"):
            recent.find(other)


def test_only_the_last_frames_are_kept():
    _, recent = frames(max_bytes=10**6)
    for index in range(MAX_FRAMES + 3):
        keep(recent, index)
    assert len(recent) == MAX_FRAMES
    with pytest.raises(FrameNotKept, match="no longer kept"):
        recent.find(2)
    assert recent.find(3) and recent.find(MAX_FRAMES + 2)


def test_the_connections_byte_cap_drops_the_oldest():
    _, recent = frames(max_bytes=100)
    for index in range(4):
        keep(recent, index, size=40)
    assert recent.bytes == 80
    with pytest.raises(FrameNotKept):
        recent.find(1)
    assert recent.find(2) and recent.find(3)
    keep(recent, "huge", size=101)  # over the cap alone: not kept, the others stay
    with pytest.raises(FrameNotKept, match="no longer kept"):
        recent.find("huge")
    assert recent.find(3)


def test_the_process_budget_drops_the_oldest_of_any_connection():
    budget, first = frames(budget_bytes=100, max_bytes=100)
    second = RecentFrames(budget=budget, max_bytes=100)
    keep(first, "a", size=40)
    keep(second, "b", size=40)
    keep(second, "c", size=40)  # 120 > 100: the process's oldest, first's "a", goes
    assert budget.used == 80
    with pytest.raises(FrameNotKept):
        first.find("a")
    assert (first.bytes, second.bytes) == (0, 80)
    second.close()
    assert budget.used == 0
    keep(second, "d")  # a closed connection keeps nothing more
    assert budget.used == 0


def test_a_repeated_id_names_no_frame():
    _, recent = frames()
    keep(recent, "x")
    keep(recent, "x")
    with pytest.raises(FrameNotKept, match="several frames"):
        recent.find("x")
    assert recent.bytes == 0
    recent.keep_pixels("p")
    keep(recent, "p")
    with pytest.raises(FrameNotKept, match="several frames"):
        recent.find("p")


def test_a_pixels_frame_has_no_image():
    _, recent = frames()
    recent.keep_pixels(5)
    with pytest.raises(FrameNotKept, match="pixels frame"):
        recent.find(5)


def test_an_id_too_long_is_not_kept():
    budget, recent = frames()
    keep(recent, "z" * 300)
    assert budget.used == 0 and len(recent) == 0
