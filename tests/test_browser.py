"""The pages in a real browser: Debian's chromium (headless, fake camera) driven by Playwright,
against a live daphne process with its own database and models in a real S3 server.

Each test leaves a screenshot in tests/browser.SCREENSHOT_DIR (test-artifacts/screenshots).
"""

import hashlib
import itertools
import json
import re

import pytest

from tests import browser, support
from tests.drawings import strokes_on_canvas
from tests.support import COLOR_LABELS, COLORS, encode, solid_image

pytestmark = pytest.mark.skipif(bool(browser.missing()), reason=browser.missing() or "")

TOKEN = support.SECRET_TOKEN
ADMIN = ("admin", "admin-password-1")
OTHER_HOSTS = ("allowed.test", "refused.test")
WAIT_MS = 30_000
MIN_DIGITS_RIGHT = 7


class Site:
    def __init__(self, server, other_port, bucket):
        self.server, self.other_port, self.bucket = server, other_port, bucket
        self.url = server.url


@pytest.fixture(scope="module")
def site(tmp_path_factory, s3_server, trained, digits_model_path):
    """daphne with production settings: `colors` (stretch), `digits` (fit_ink, the demo's model),
    `secret` (private), an admin user, and `colors` allowing http://allowed.test:<port>."""
    folder = tmp_path_factory.mktemp("browser")
    bucket = s3_server.create_bucket()
    (folder / "colors.txt").write_text("\n".join(COLOR_LABELS))
    (folder / "digits.txt").write_text("\n".join("0123456789"))
    other_port = support.free_port()
    with support.migrated_env(
        folder, s3=bucket, production=True, admin=ADMIN, MAX_PENDING_FRAMES=4
    ) as env:
        for slug in ("colors", "secret"):
            support.manage(
                "register_model", slug, "--file", str(trained.colors),
                "--labels-file", str(folder / "colors.txt"), "--activate", env=env,
            )  # fmt: skip
        support.manage(
            "register_model", "digits", "--file", str(digits_model_path),
            "--labels-file", str(folder / "digits.txt"), "--resize", "fit_ink",
            "--scale", "0", "16", "--name", "Handwritten digits", "--activate", env=env,
        )  # fmt: skip
        script = (
            "from predictions.models import Project;"
            f"Project.objects.filter(slug='secret').update(is_public=False, token_hash='{support.SECRET_TOKEN_HASH}');"
            "Project.objects.filter(slug='colors').update("
            f"allowed_origins='http://allowed.test:{other_port}')"
        )
        support.manage("shell", "-c", script, env=env)
        server = support.DaphneServer(env, folder / "daphne.log")
        worker = support.WorkerProcess(env, folder / "worker.log")  # versions added in the admin
        with support.running(server, worker):
            yield Site(server, other_port, bucket)


@pytest.fixture(scope="module")
def playwright():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        yield playwright


@pytest.fixture(scope="module")
def chromium(playwright, tmp_path_factory):
    # Red for a second, then blue: the labels must follow the picture.
    clip = browser.write_y4m(
        tmp_path_factory.mktemp("camera") / "clip.y4m", [COLORS["red"], COLORS["blue"]]
    )
    chromium = browser.launch(playwright, camera_clip=clip, other_hosts=OTHER_HOSTS)
    yield chromium
    chromium.close()


@pytest.fixture
def context(chromium):
    context = chromium.new_context(viewport={"width": 1100, "height": 900})
    context.set_default_timeout(WAIT_MS)
    yield context
    context.close()


@pytest.fixture
def page(context, request):
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    browser.screenshot(page, request.node.name)
    assert not errors, f"JavaScript errors on the page: {errors}"


def open_demo(page, site, slug, query=""):
    page.goto(f"{site.url}/projects/{slug}/{query}")
    page.wait_for_selector("#status[data-state=open]")


def replies(page) -> int:
    return int(page.locator("#rtt").get_attribute("data-replies") or 0)


def wait_for_replies(page, count: int) -> None:
    page.wait_for_function(
        "n => Number(document.querySelector('#rtt').dataset.replies || 0) >= n", arg=count
    )


def top_label(page) -> str:
    return page.locator("#labels li .label").first.inner_text()


def upload(page, colour: str) -> str:
    """Choose an image of one colour in the upload pane; the top label of its reply."""
    before = replies(page)
    page.click("#tab-upload")
    image = {"name": f"{colour}.png", "mimeType": "image/png",
             "buffer": encode(solid_image(colour), "PNG")}  # fmt: skip
    page.set_input_files("#upload", files=[image])
    wait_for_replies(page, before + 1)
    return top_label(page)


# --- The pages ---------------------------------------------------------------------------------


def test_the_gallery_shows_a_card_per_public_project(page, site):
    page.goto(site.url + "/")
    cards = page.locator(".gallery .card")
    slugs = sorted(cards.evaluate_all("cards => cards.map(card => card.dataset.slug)"))
    assert slugs == ["colors", "digits"]  # `secret` is private
    card = lambda slug: page.locator(f".card[data-slug={slug}]")  # noqa: E731
    chips = lambda slug: card(slug).locator(".chips li").all_text_contents()  # noqa: E731
    digits, colors = card("digits"), card("colors")
    assert digits.locator("h2").inner_text() == "Handwritten digits"
    assert digits.locator(".kind").text_content() == "Drawing"
    assert colors.locator(".kind").text_content() == "Photo"
    assert chips("digits") == ["0", "1", "2", "3", "4", "+ 5 more"]
    assert chips("colors") == ["red", "green", "blue"]
    assert digits.locator(".label-count").inner_text() == "10 labels"
    assert digits.locator(".version").inner_text() == "v1"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT.+", digits.locator("time").get_attribute("datetime"))
    browser.screenshot(page, "gallery")
    digits.get_by_role("link", name="Try it").click()
    page.wait_for_url("**/projects/digits/")
    assert page.locator("#status").inner_text().startswith(("Connecting", "Connected"))


def test_on_a_phone_the_gallery_is_one_column(chromium, site):
    context = chromium.new_context(
        viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True
    )
    try:
        page = context.new_page()
        page.goto(site.url + "/")
        overflow = page.evaluate("document.documentElement.scrollWidth - innerWidth")
        assert overflow <= 0, f"{overflow}px wider than the screen"
        boxes = [card.bounding_box() for card in page.locator(".gallery .card").all()]
        assert len(boxes) == 2
        assert boxes[0]["x"] == boxes[1]["x"] and boxes[0]["y"] < boxes[1]["y"]  # one column
        assert all(box["x"] + box["width"] <= 390 for box in boxes)
        browser.screenshot(page, "gallery-phone")
    finally:
        context.close()


def test_the_demo_shows_what_the_model_sees_and_how_to_call_it(context, page, site):
    open_demo(page, site, "digits")
    snippet = lambda language: page.locator(f"code[data-snippet={language}]").inner_text()  # noqa: E731
    assert f'"{site.url}/api/projects/digits/predict"' in snippet("curl")
    assert f'"{site.url}/api/projects/digits/predict"' in snippet("python")
    assert f'from "{site.url}/static/predictions/modelserver.js"' in snippet("javascript")
    assert f'connect("{site.url}", "digits")' in snippet("javascript")
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=site.url)
    page.click("button[data-copy=snippet-curl]")
    page.wait_for_selector("#copy-status:has-text('Copied')")
    assert page.evaluate("navigator.clipboard.readText()") == snippet("curl")

    # What the model sees: its input, beside the scores, on by default.
    assert page.locator("#preview-toggle").is_checked()
    draw_digit(page, 3)
    view = page.locator("#model-input")
    page.wait_for_selector("#model-view:not([hidden])")
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=view.element_handle())
    assert view.evaluate("img => img.naturalWidth") >= 112
    assert view.evaluate("img => getComputedStyle(img).imageRendering") == "pixelated"
    assert page.locator(".answer h2").inner_text() != "What the model sees"  # it shows scores
    browser.screenshot(page, "demo-preview-snippets")

    # Turned off: the image goes, and later replies bring none back.
    page.uncheck("#preview-toggle")
    assert page.locator("#model-view").is_hidden()
    draw_digit(page, 1)
    assert page.locator("#model-view").is_hidden()


def test_webcam_labels_follow_the_camera_and_keep_updating(page, site):
    open_demo(page, site, "colors")
    assert page.locator("#pane-webcam").is_visible()  # a photo model opens on the webcam
    page.click("#camera-toggle")
    wait_for_replies(page, 3)
    seen, start = set(), replies(page)
    for _ in range(40):  # about 6 s: the clip alternates red and blue every second
        seen.add(top_label(page))
        page.wait_for_timeout(150)
    assert {"red", "blue"} <= seen, seen
    assert replies(page) - start >= 10
    assert re.fullmatch(r"Round trip \d+ ms", page.locator("#rtt").inner_text())
    assert re.search(r"[\d.]+ frames/s", page.locator("#fps").inner_text())
    bars = page.locator("#labels li").count()
    assert bars == 3
    browser.screenshot(page, "webcam-live")
    page.click("#camera-toggle")  # stop: no more frames
    page.wait_for_timeout(500)
    stopped = replies(page)
    page.wait_for_timeout(700)
    assert replies(page) == stopped


def test_a_device_with_two_cameras_can_switch_between_them(playwright, site, request):
    two_cameras = browser.launch(playwright, cameras=2)
    try:
        page = two_cameras.new_page()
        page.set_default_timeout(WAIT_MS)
        open_demo(page, site, "colors")
        page.click("#camera-toggle")
        page.wait_for_selector("#camera-choice:not([hidden])")
        options = page.locator("#camera-select option")
        assert options.count() == 2
        current = lambda: page.evaluate(  # noqa: E731
            "document.querySelector('#camera-video').srcObject"
            "?.getVideoTracks()[0].getSettings().deviceId"
        )
        first = current()
        other = [value for value in options.evaluate_all("os => os.map(o => o.value)")
                 if value != first]  # fmt: skip
        page.select_option("#camera-select", other[0])
        page.wait_for_function(
            "id => document.querySelector('#camera-video').srcObject"
            "?.getVideoTracks()[0].getSettings().deviceId === id",
            arg=other[0],
        )
        before = replies(page)
        wait_for_replies(page, before + 3)  # frames keep flowing from the other camera
        assert current() != first
        browser.screenshot(page, request.node.name)
    finally:
        two_cameras.close()


def draw_digit(page, digit: int) -> str:
    """Draw a digit on a cleared canvas, stroke by stroke; the top label of the last reply."""
    box = page.locator("#canvas").bounding_box()
    scale = box["width"] / 280
    page.click("#clear")
    for stroke in strokes_on_canvas(digit):
        before = replies(page)
        points = [(box["x"] + x * scale, box["y"] + y * scale) for x, y in stroke]
        page.mouse.move(*points[0])
        page.mouse.down()
        for point in points[1:]:
            page.mouse.move(*point, steps=4)
        page.mouse.up()
        wait_for_replies(page, before + 1)  # labels after each stroke
    return top_label(page)


def test_drawn_digits_are_recognised(page, site):
    open_demo(page, site, "digits")
    assert page.locator("#pane-draw").is_visible()  # the digits demo opens on the canvas
    guesses = {}
    for digit in range(10):
        guesses[digit] = draw_digit(page, digit)
        browser.screenshot(page, f"draw-{digit}")
    right = [digit for digit, guess in guesses.items() if guess == str(digit)]
    print("drawn -> recognised:", guesses)
    assert len(right) >= MIN_DIGITS_RIGHT, guesses


def test_a_drawn_digit_is_corrected_on_the_page(page, site, tmp_path):
    open_demo(page, site, "digits")
    guess = draw_digit(page, 7)
    right = "7" if guess != "7" else "1"  # the truth, or another label when it was right
    page.select_option("#feedback-label", right)
    page.click("#feedback-actually")
    page.wait_for_selector("#feedback-status[data-state=saved]")
    assert page.locator("#feedback-status").inner_text().startswith("Thanks: saved")
    script = (
        "import json; from predictions.models import FeedbackExample as F;"
        "print(json.dumps(list(F.objects.filter(project__slug='digits')"
        ".values_list('label', 'predicted', 'source', 'storage_name'))))"
    )
    output = support.manage("shell", "-c", script, env=site.server.env).stdout
    [(label, predicted, source, name)] = json.loads(output.splitlines()[-1])
    assert (label, predicted, source) == (right, guess, "page")
    assert name.startswith(f"feedback/digits/{right}/") and name.endswith(".png")
    stored = site.bucket.client.get_object(Bucket=site.bucket.name, Key=name)["Body"].read()
    assert hashlib.sha256(stored).hexdigest() == name.rsplit("/", 1)[1].removesuffix(".png")
    exported = tmp_path / "export"
    support.manage("export_feedback", "digits", str(exported), env=site.server.env)
    assert (exported / right / name.rsplit("/", 1)[1]).read_bytes() == stored


def test_an_uploaded_or_dropped_image_gets_labels(page, site, tmp_path):
    open_demo(page, site, "colors")
    page.click("#tab-upload")
    image = tmp_path / "green.png"
    image.write_bytes(encode(solid_image("green", (300, 200)), "PNG"))
    page.set_input_files("#upload", str(image))
    wait_for_replies(page, 1)
    assert top_label(page) == "green"
    assert page.locator("#preview").evaluate("img => img.complete && img.naturalWidth") == 300

    # Dropped: a real drop event carrying a file, as the browser makes it.
    blue = list(encode(solid_image("blue"), "JPEG"))
    page.locator("#dropzone").evaluate(
        """(zone, bytes) => {
            const data = new DataTransfer();
            data.items.add(new File([new Uint8Array(bytes)], "blue.jpg", {type: "image/jpeg"}));
            zone.dispatchEvent(new DragEvent("drop", {dataTransfer: data, bubbles: true}));
        }""",
        blue,
    )
    wait_for_replies(page, 2)
    assert top_label(page) == "blue"

    page.set_input_files(
        "#upload", files=[{"name": "x.png", "mimeType": "image/png", "buffer": b"not a png"}]
    )
    page.wait_for_selector("#error:has-text('could not read')")
    assert "bad_image" not in page.locator("#error").inner_text()  # in words, not a code


def test_a_private_project_asks_for_its_token(page, site):
    page.goto(f"{site.url}/projects/secret/")
    page.wait_for_selector("#token-form:not([hidden])")
    page.fill("#token-input", "wrong")
    page.click("#token-form button")
    page.wait_for_selector("#status[data-state=closed]")
    assert "private" in page.locator("#status").inner_text()
    page.fill("#token-input", TOKEN)
    page.click("#token-form button")
    page.wait_for_selector("#status[data-state=open]")
    assert page.locator("#token-form").is_hidden()


def test_on_a_phone_the_pages_fit_and_a_finger_draws(chromium, site, request):
    context = chromium.new_context(
        viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True
    )
    try:
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        for slug in ("colors", "digits"):
            open_demo(page, site, slug)
            overflow = page.evaluate("document.documentElement.scrollWidth - innerWidth")
            assert overflow <= 0, f"{slug}: {overflow}px wider than the screen"
        box = page.locator("#canvas").bounding_box()
        assert box["width"] <= 390
        # A finger: real touch events through the DevTools protocol, a "1" down the middle.
        touch = context.new_cdp_session(page)
        scale = box["width"] / 280
        points = [(box["x"] + x * scale, box["y"] + y * scale) for x, y in strokes_on_canvas(1)[0]]
        steps = [p for a, b in itertools.pairwise(points) for p in _between(a, b, 8)]
        touch.send(
            "Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [_at(points[0])]}
        )
        for point in steps:
            touch.send(
                "Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [_at(point)]}
            )
        touch.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
        wait_for_replies(page, 1)
        assert top_label(page) == "1"
        browser.screenshot(page, request.node.name)
    finally:
        context.close()


def _between(a, b, count):
    return [(a[0] + (b[0] - a[0]) * i / count, a[1] + (b[1] - a[1]) * i / count)
            for i in range(1, count + 1)]  # fmt: skip


def _at(point):
    return {"x": point[0], "y": point[1]}


# --- The embeddable client ---------------------------------------------------------------------


def test_the_client_keeps_frames_under_the_servers_limit(page, site):
    # The server lets 4 frames wait (MAX_PENDING_FRAMES); 12 predict() calls at once must all
    # be answered, in order, because the client sends at most 2 before replies come.
    open_demo(page, site, "colors")
    result = page.evaluate(
        """async () => {
            const { connect } = await import("/static/predictions/modelserver.js");
            const client = connect(location.origin, "colors");
            await new Promise((ready) => client.addEventListener("ready", ready, { once: true }));
            const canvas = Object.assign(document.createElement("canvas"), { width: 64, height: 48 });
            const ctx = canvas.getContext("2d");
            const calls = [];
            for (let i = 0; i < 12; i++) {
                ctx.fillStyle = i % 2 ? "rgb(30,40,220)" : "rgb(220,30,30)";
                ctx.fillRect(0, 0, 64, 48);
                calls.push(client.predict(canvas));
            }
            const replies = await Promise.allSettled(calls);
            client.close();
            return replies.map((r) => r.status === "fulfilled"
                ? [r.value.id, r.value.labels[0].label] : ["rejected", r.reason.code]);
        }"""
    )
    assert result == [[i, "blue" if i % 2 else "red"] for i in range(12)]


def test_the_client_reconnects_after_a_server_restart(page, site):
    open_demo(page, site, "colors")
    site.server.stop()
    page.wait_for_selector("#status[data-state=reconnecting]")
    assert "reconnecting" in page.locator("#status").inner_text().lower()
    site.server.start()  # the same port
    page.wait_for_selector("#status[data-state=open]", timeout=60_000)
    assert upload(page, "red") == "red"


# --- Other sites ----------------------------------------------------------------------------------


def test_only_the_projects_allowed_origins_may_use_it_from_their_pages(page, site, tmp_path):
    # A page of another site imports the client from this server (WhiteNoise serves static
    # files with CORS), connects, and also POSTs to the HTTP API (a preflighted fetch); the
    # project allows allowed.test, not refused.test.
    (tmp_path / "index.html").write_text(
        f"""<!doctype html><p id="out">waiting</p><p id="http">waiting</p>
        <script type="module">
          import {{ connect }} from "{site.url}/static/predictions/modelserver.js";
          const canvas = Object.assign(document.createElement("canvas"), {{ width: 8, height: 8 }});
          const ctx = canvas.getContext("2d");
          ctx.fillStyle = "rgb(30,200,40)";
          ctx.fillRect(0, 0, 8, 8);
          const out = document.getElementById("out");
          const client = connect("{site.url}", "colors", {{ maxDelayMs: 1000 }});
          client.addEventListener("ready", async () => {{
            const reply = await client.predict(canvas);
            out.textContent = "answered " + reply.labels[0].label;
          }});
          client.addEventListener("state", ({{ detail }}) => {{
            if (detail.state === "reconnecting" && detail.closeCode) out.textContent = "refused";
          }});
          const http = document.getElementById("http");
          canvas.toBlob(async (png) => {{
            try {{
              const response = await fetch("{site.url}/api/projects/colors/predict", {{
                method: "POST", body: png, headers: {{ "Content-Type": "image/png" }},
              }});
              http.textContent = "answered " + (await response.json()).labels[0].label;
            }} catch (error) {{
              http.textContent = "refused";
            }}
          }}, "image/png");
        </script>"""
    )
    with browser.OtherSite(tmp_path, site.other_port):
        page.goto(f"http://allowed.test:{site.other_port}/")
        page.wait_for_selector("#out:has-text('answered')")
        page.wait_for_selector("#http:not(:has-text('waiting'))")
        assert page.locator("#out").inner_text() == "answered green"
        assert page.locator("#http").inner_text() == "answered green"

        page.goto(f"http://refused.test:{site.other_port}/")
        page.wait_for_selector("#out:has-text('refused')")
        page.wait_for_selector("#http:not(:has-text('waiting'))")
        page.wait_for_timeout(1500)  # and it never gets in on a retry
        assert page.locator("#out").inner_text() == "refused"
        assert page.locator("#http").inner_text() == "refused"


# --- The admin --------------------------------------------------------------------------------


def test_an_admin_registers_and_activates_a_version_seen_live_on_the_demo(
    context, page, site, trained, tmp_path
):
    page.goto(f"{site.url}/admin/")
    page.fill("#id_username", ADMIN[0])
    page.fill("#id_password", ADMIN[1])
    page.click("input[type=submit]")
    page.wait_for_selector("#site-name")

    page.goto(f"{site.url}/admin/predictions/project/add/")
    page.locator("#id_name").press_sequentially("Paint colours")
    assert page.input_value("#id_slug") == "paint-colours"  # the admin's prepopulated slug
    page.check("#id_is_public")
    page.click("input[name=_save]")
    page.wait_for_selector(".messagelist .success")

    def add_version(labels, *, activate, number):
        page.goto(f"{site.url}/admin/predictions/modelversion/add/")
        page.select_option("#id_project", label="Paint colours")
        page.set_input_files("#id_upload", str(trained.colors))
        page.fill("#id_labels_text", "\n".join(labels))
        page.set_checked("#id_activate", activate)
        page.click("input[name=_save]")
        page.wait_for_selector(".messagelist .success:has-text('pending')")
        # The list shows the version pending, and its cells follow the worker's check live.
        row = page.locator("#result_list tr", has_text=f"paint-colours v{number}")
        status = row.locator("span[data-field=status]")
        assert status.inner_text() in ("pending", "checking")
        browser.screenshot(page, f"admin-version-{number}-pending")
        page.wait_for_function(
            "cell => cell.textContent === 'ready'", arg=status.element_handle(), timeout=120_000
        )
        # The list shows the message's start; the whole of it is the cell's tooltip.
        message = row.locator("span[data-field=message]")
        assert "Compiled to LiteRT" in message.get_attribute("title")
        assert row.locator("span[data-field=runtime]").inner_text() == "litert"

    # A file that is not a model: a form error in words, nothing registered.
    page.goto(f"{site.url}/admin/predictions/modelversion/add/")
    page.select_option("#id_project", label="Paint colours")
    page.set_input_files("#id_upload", str(trained.lambda_model))
    page.click("input[name=_save]")
    error = page.locator(".errornote, .errorlist").first
    error.wait_for(timeout=120_000)
    assert "was refused" in page.locator("#modelversion_form").inner_text()

    add_version(COLOR_LABELS, activate=True, number=1)
    demo = context.new_page()
    open_demo(demo, site, "paint-colours")
    assert "version 1" in demo.locator("#status").inner_text()

    add_version(["rouge", "vert", "bleu"], activate=False, number=2)
    page.goto(f"{site.url}/admin/predictions/project/")
    page.get_by_role("link", name="paint-colours", exact=True).click()
    page.wait_for_url("**/change/")
    table = page.locator(".inline-group")
    assert table.locator("tbody tr.has_original").count() == 2
    text = table.inner_text()
    assert "litert" in text.lower() and re.search(r"\b[0-9a-f]{12}\b", text)
    browser.screenshot(page, "admin-versions")

    page.goto(f"{site.url}/admin/predictions/modelversion/?project__id__exact=")
    row = page.locator("#result_list tr", has_text="paint-colours v2")
    row.locator("input[type=checkbox]").check()
    page.select_option("select[name=action]", "activate_version")
    page.click("button[name=index]")
    page.wait_for_selector(".messagelist .success")

    demo.wait_for_selector("#notice:has-text('Model changed: now version 2')")
    assert upload(demo, "blue") == "bleu"
    assert demo.locator("#labels").get_attribute("data-model-version") == "2"
    browser.screenshot(demo, "admin-swap-demo")
