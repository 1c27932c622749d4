"""A real browser for the page tests: Debian's chromium driven by Playwright, never a download.

Chromium runs headless with a fake camera that plays a clip the test writes (a Y4M file), and
with host rules that send the made-up hosts of "other sites" to loopback.
"""

import functools
import http.server
import os
import threading
from pathlib import Path

import numpy as np

from tests.support import PROJECT_DIR

CHROMIUM = "/usr/bin/chromium"
SCREENSHOT_DIR = Path(
    os.environ.get("SCREENSHOT_DIR", PROJECT_DIR / "test-artifacts" / "screenshots")
)


def missing() -> str | None:
    """Why browser tests cannot run here, or None."""
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} is missing (apt-get install chromium; .ci/run does it)"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "playwright is not installed (requirements-test.txt)"
    return None


def launch(playwright, *, camera_clip: Path | None = None, cameras: int = 1,
           other_hosts: tuple[str, ...] = ()):  # fmt: skip
    """Headless chromium whose camera plays `camera_clip`, or, without a clip, `cameras`
    generated test patterns; `other_hosts` resolve to 127.0.0.1."""
    rules = ", ".join(f"MAP {host} 127.0.0.1" for host in other_hosts)
    camera = (
        [f"--use-file-for-fake-video-capture={camera_clip}"]
        if camera_clip
        else [f"--use-fake-device-for-media-stream=device-count={cameras}"]
    )
    return playwright.chromium.launch(
        executable_path=CHROMIUM,
        headless=True,
        args=[
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--use-fake-device-for-media-stream",
            "--use-fake-ui-for-media-stream",
            *camera,
            *([f"--host-resolver-rules={rules}"] if rules else []),
        ],
    )


def screenshot(page, name: str) -> Path:
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOT_DIR / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


# --- A fake camera clip ------------------------------------------------------------------------


def write_y4m(path: Path, colours: list[tuple[int, int, int]], *, seconds_each=1, fps=10,
              size=(320, 240)) -> Path:  # fmt: skip
    """A Y4M clip showing each RGB colour in turn for `seconds_each` (Chromium loops it)."""
    width, height = size
    with open(path, "wb") as clip:
        clip.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for rgb in colours:
            y, u, v = _yuv(rgb)
            frame = (
                np.full(width * height, y, np.uint8).tobytes()
                + np.full(width * height // 4, u, np.uint8).tobytes()
                + np.full(width * height // 4, v, np.uint8).tobytes()
            )
            for _ in range(seconds_each * fps):
                clip.write(b"FRAME\n" + frame)
    return path


def _yuv(rgb):
    """Full-range BT.601, as C420jpeg means."""
    r, g, b = rgb
    y = 0.299 * r + 0.587 * g + 0.114 * b
    u = 128 - 0.168736 * r - 0.331264 * g + 0.5 * b
    v = 128 + 0.5 * r - 0.418688 * g - 0.081312 * b
    return (round(min(255, max(0, c))) for c in (y, u, v))


# --- Another site: a page on another origin -----------------------------------------------------


class OtherSite:
    """Static files from `folder` over HTTP on 127.0.0.1:`port`, for pages of "another site"
    (the browser reaches it under made-up host names mapped to loopback)."""

    def __init__(self, folder: Path, port: int):
        handler = functools.partial(_QuietHandler, directory=str(folder))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc_info):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass
