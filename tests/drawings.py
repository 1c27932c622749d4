"""Digits as pen strokes, shared by the server-side drawing test and the browser test.

Each stroke is a list of points in a glyph box, x and y in 0..1 with y pointing down.
"""

import math


def _arc(cx, cy, rx, ry, start, end, steps=24):
    """Points along an ellipse from `start` to `end` degrees (0 = right, 90 = down)."""
    return [
        (
            cx + rx * math.cos(math.radians(start + (end - start) * i / steps)),
            cy + ry * math.sin(math.radians(start + (end - start) * i / steps)),
        )
        for i in range(steps + 1)
    ]


STROKES = {
    0: [_arc(0.5, 0.5, 0.42, 0.5, -90, 270, steps=48)],
    1: [[(0.2, 0.22), (0.55, 0.0), (0.55, 1.0)]],
    2: [[*_arc(0.5, 0.27, 0.4, 0.27, 190, 380), (0.08, 1.0), (0.95, 1.0)]],
    3: [_arc(0.48, 0.25, 0.4, 0.25, 200, 450) + _arc(0.48, 0.74, 0.44, 0.26, -90, 160)],
    4: [[(0.68, 1.0), (0.68, 0.0), (0.05, 0.66), (0.95, 0.66)]],
    5: [[(0.88, 0.0), (0.2, 0.0), (0.14, 0.45), *_arc(0.5, 0.7, 0.4, 0.3, -140, 150)]],
    6: [[(0.8, 0.02), (0.45, 0.25), *_arc(0.5, 0.7, 0.4, 0.3, 200, 560, steps=40)]],
    7: [[(0.05, 0.0), (0.95, 0.0), (0.35, 1.0)]],
    8: [
        _arc(0.5, 0.24, 0.34, 0.24, 90, 450, steps=36),
        _arc(0.5, 0.74, 0.42, 0.26, -90, 270, steps=36),
    ],
    9: [[*_arc(0.5, 0.3, 0.4, 0.3, 0, 360, steps=36), (0.9, 0.3), (0.85, 1.0)]],
}


def strokes_on_canvas(digit, canvas=280, *, box_height=0.65, centre=(0.5, 0.5)):
    """`digit`'s strokes in pixels of a `canvas` x `canvas` drawing area: the glyph box is
    `box_height` of the canvas high and 0.7 of that wide, centred at `centre` (fractions of
    the canvas), as a person fills most of a drawing box."""
    height = box_height * canvas
    width = 0.7 * height
    left = centre[0] * canvas - width / 2
    top = centre[1] * canvas - height / 2
    return [[(left + x * width, top + y * height) for x, y in stroke] for stroke in STROKES[digit]]
