"""Usage in the admin: `usage.usage_series` (per version, hour and day, from `UsageMinute` rows),
the inline SVG charts of predictions/usage_charts.py, the project's change page that shows them,
and the whole path through a live daphne: frames answered, flushed, seen in a real browser."""

import json
import re
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from predictions import usage, usage_charts
from predictions.models import Project, UsageMinute
from tests import browser, support
from tests.support import COLOR_LABELS, encode, solid_image

SINCE = datetime(2024, 5, 1, tzinfo=UTC)  # a Wednesday
UNTIL = SINCE + timedelta(days=7)
BUCKETS = len(usage.LATENCY_BUCKETS_MS)


def buckets(**counts) -> list[int]:
    """Bucket counts by index, e.g. buckets(b0=2, b9=1)."""
    values = [0] * BUCKETS
    for name, count in counts.items():
        values[int(name[1:])] = count
    return values


def row(project, version, minute, answered=0, errors=None, latency=None):
    return UsageMinute.objects.create(
        project=project,
        version_number=version,
        minute=minute,
        answered=answered,
        errors=errors or {},
        latency_buckets=latency if latency is not None else buckets(),
    )


@pytest.fixture
def project(db):
    return Project.objects.create(slug="charts", name="Charts")


@pytest.fixture
def week(project):
    """Rows of three versions over the week starting at SINCE, and some just outside it."""
    at = SINCE.replace
    # Two minutes of one hour (rows several processes added into): 5 frames, 1 error.
    row(project, 1, at(hour=10, minute=5), 3, latency=buckets(b0=3))
    row(project, 1, at(hour=10, minute=40), 2, {"bad_image": 1}, buckets(b3=2))
    row(project, 1, at(day=3, hour=23, minute=59), 5, {"busy": 2}, buckets(b4=5))
    row(project, 2, at(day=7), 10, {"bad_image": 1, "too_large": 1}, buckets(b1=10))
    row(project, 0, at(day=2, hour=12), 0, {"model_unavailable": 4}, latency=[])  # no version
    # Outside the window: the minute before it, eight days before, and its end (excluded).
    row(project, 2, SINCE - timedelta(minutes=1), 100, {"bad_image": 9}, buckets(b0=100))
    row(project, 1, SINCE - timedelta(days=8), 100, latency=buckets(b0=100))
    row(project, 1, UNTIL, 100, latency=buckets(b0=100))
    return project


# --- usage_series ------------------------------------------------------------------------------


def test_series_sum_the_rows_per_version_hour_and_day_in_one_query(week, django_assert_num_queries):
    with django_assert_num_queries(1):
        window = usage.usage_series(project=week, since=SINCE, until=UNTIL)

    assert list(window.versions) == [0, 1, 2]
    one = window.versions[1]
    assert len(one.hours) == 168 and len(one.days) == 7
    assert one.hours[0].start == SINCE and one.days[6].start == SINCE + timedelta(days=6)
    busy_hour = one.hours[10]  # the two rows of 10:00 added up
    assert (busy_hour.answered, busy_hour.errors) == (5, {"bad_image": 1})
    assert busy_hour.latency == buckets(b0=3, b3=2)
    assert one.hours[2 * 24 + 23].answered == 5
    assert [day.answered for day in one.days] == [5, 0, 5, 0, 0, 0, 0]
    assert [day.error_total for day in one.days] == [1, 0, 2, 0, 0, 0, 0]
    assert (one.total.answered, one.total.errors) == (10, {"bad_image": 1, "busy": 2})

    two = window.versions[2]
    assert [day.answered for day in two.days] == [0, 0, 0, 0, 0, 0, 10]  # nothing before SINCE
    assert two.total.errors == {"bad_image": 1, "too_large": 1}
    assert window.versions[0].total.errors == {"model_unavailable": 4}

    every = window.project
    assert every.version_number is None
    assert every.total.answered == 20
    assert every.total.errors == {"bad_image": 2, "busy": 2, "too_large": 1, "model_unavailable": 4}
    assert every.total.latency == buckets(b0=3, b1=10, b3=2, b4=5)
    assert [day.answered for day in every.days] == [5, 0, 5, 0, 0, 0, 10]
    assert sum(hour.answered for hour in every.hours) == 20


def test_percentiles_come_from_the_summed_buckets_and_an_empty_period_has_none(week):
    one = usage.usage_series(project=week, since=SINCE, until=UNTIL).versions[1]

    # 10:00: 3 frames in 0-5 ms, 2 in 25-50 ms. p50: the 2.5th of 5, 2.5/3 into 0-5 ms;
    # p95: the 4.75th, 1.75/2 into 25-50 ms.
    assert one.hours[10].p50_ms == pytest.approx(5 * 2.5 / 3)
    assert one.hours[10].p95_ms == pytest.approx(25 + 25 * 1.75 / 2)
    # The week: 3 in 0-5, 2 in 25-50, 5 in 50-100 ms. p50: the 5th, the top of 25-50 ms;
    # p95: the 9.5th, 4.5/5 into 50-100 ms.
    assert one.total.p50_ms == pytest.approx(50)
    assert one.total.p95_ms == pytest.approx(95)
    assert one.hours[11].p50_ms is None and one.days[1].p95_ms is None


def test_the_window_is_the_last_seven_utc_days_today_included():
    now = datetime(2024, 5, 7, 15, 30, tzinfo=UTC)
    assert usage.usage_window(now=now) == (SINCE, UNTIL)
    assert usage.usage_window(now=now.replace(hour=0, minute=0)) == (SINCE, UNTIL)


# --- The charts --------------------------------------------------------------------------------


def charts(page: str) -> dict[str, str]:
    """Each `<svg data-chart=...>` of a page (or chart) by its name."""
    found = re.findall(r'<svg class="usage-chart[^"]*" data-chart="([^"]+)".*?</svg>', page, re.S)
    bodies = re.findall(r'<svg class="usage-chart[^"]*" data-chart="[^"]+".*?</svg>', page, re.S)
    return dict(zip(found, bodies, strict=True))


def bars(svg: str) -> int:
    return len(re.findall(r"<rect data-bar=", svg))


def test_each_chart_draws_a_bar_per_period_with_its_tooltip(week):
    window = usage.usage_series(project=week, since=SINCE, until=UNTIL)
    now = SINCE + timedelta(days=6, hours=12)

    section = usage_charts.usage_section(window, now=now, roles={2: "in service"})

    assert [panel.title for panel in section.panels] == [
        "All versions",
        "No version (frames answered while none was in service)",
        "v1",
        "v2 (in service)",
    ]
    every, _, one, _ = section.panels
    assert bars(one.frames_by_hour) == 168 and bars(one.frames_by_day) == 7
    assert bars(one.latency_by_hour) == 2  # the hours with frames; the others are gaps
    assert bars(one.errors_by_day) == 2  # one segment per day and code
    assert bars(every.errors_by_day) == 5  # day 1: bad_image; 2: model_unavailable; 3: busy; 7: two
    assert "<title>Wed 1 May, 10:00-11:00 UTC: 5 frames</title>" in one.frames_by_hour
    assert 'aria-label="Frames answered per day, last 7 days: 10 frames' in one.frames_by_day
    assert 'role="img"' in one.latency_by_hour
    assert "p50 4.2 ms, p95 47 ms (5 frames)" in one.latency_by_hour
    assert 'class="future"' in one.frames_by_hour  # the rest of today
    assert one.summary == (
        "10 frames answered; latency p50 50 ms, p95 95 ms over the week; "
        "3 errors (bad_image 1, busy 2)."
    )
    # Each code keeps its colour in every panel.
    colours = {entry.code: entry.colour for entry in every.error_codes}
    assert {entry.code: entry.colour for entry in one.error_codes} == {
        code: colours[code] for code in ("bad_image", "busy")
    }


def test_an_empty_window_has_no_panels(project):
    window = usage.usage_series(project=project, since=SINCE, until=UNTIL)
    assert usage_charts.usage_section(window, now=UNTIL, roles={}).panels == []


# --- The admin page ----------------------------------------------------------------------------


def change_page(client, project) -> str:
    response = client.get(f"/admin/predictions/project/{project.pk}/change/")
    assert response.status_code == 200
    return response.content.decode()


def test_the_project_page_shows_each_versions_charts_and_totals(admin_client, project):
    hour = timezone.now().replace(minute=0, second=0, microsecond=0)
    row(project, 1, hour - timedelta(hours=30), 4, {"bad_image": 2}, buckets(b2=4))
    row(project, 1, hour - timedelta(hours=30) + timedelta(minutes=1), 2, latency=buckets(b2=2))
    row(project, 2, hour, 3, latency=buckets(b5=3))
    row(project, 2, hour - timedelta(days=9), 50, latency=buckets(b0=50))  # pruned soon: unseen

    page = change_page(admin_client, project)

    assert "Usage, last 7 days" in page and "hours and days in UTC" in page
    assert re.search(r'data-series="all">\s*<h3>All versions</h3>', page)
    assert '<p class="usage-totals" data-frames="9" data-errors="2">9 frames answered;' in page
    assert '<p class="usage-totals" data-frames="6" data-errors="2">6 frames answered;' in page
    assert "3 frames answered; latency p50 " in page and "; no errors." in page
    found = charts(page)
    for key in ("all", "v1", "v2"):
        assert bars(found[f"{key}-frames-hour"]) == 168
        assert bars(found[f"{key}-frames-day"]) == 7
    # One hour with frames each: one latency bar each.
    assert bars(found["v1-latency-hour"]) == 1 and bars(found["v2-latency-hour"]) == 1
    assert bars(found["v1-errors-day"]) == 1 and bars(found["v2-errors-day"]) == 0
    assert '<tr data-code="bad_image">' in page
    assert "predictions/usage_charts.css" in page
    assert "<script" not in "".join(found.values())


def test_a_project_without_usage_says_so(admin_client, project):
    row(project, 1, timezone.now() - timedelta(days=8), 5, latency=buckets(b0=5))

    page = change_page(admin_client, project)

    assert "No frames in the last 7 days." in page and not charts(page)


# --- End to end: a live daphne, real frames, a real browser ------------------------------------

ADMIN = ("usage-admin", "usage-password-1")
FRAMES = 7
BAD_IMAGES = 3


@pytest.fixture(scope="module")
def served(tmp_path_factory, trained):
    """daphne in production settings serving the LiteRT colours model, flushing its usage every
    half second, after FRAMES frames and BAD_IMAGES undecodable ones over HTTP."""
    folder = tmp_path_factory.mktemp("usage-charts")
    with support.migrated_env(
        folder, production=True, admin=ADMIN, USAGE_FLUSH_SECONDS="0.5"
    ) as env:
        support.register_colour_model(env, folder, trained.tflite, "colors")
        server = support.DaphneServer(env, folder / "daphne.log")
        with support.running(server):
            for i in range(FRAMES):
                reply = predict(server, encode(solid_image(COLOR_LABELS[i % 3]), "PNG"))
                assert reply["labels"][0]["label"] == COLOR_LABELS[i % 3]
            for _ in range(BAD_IMAGES):
                assert predict(server, b"not an image")["code"] == "bad_image"
            session = support.AdminSession(server.url)
            session.login(*ADMIN)
            yield server, session


def predict(server, body: bytes) -> dict:
    request = urllib.request.Request(
        f"{server.url}/api/projects/colors/predict",
        data=body,
        headers={"Content-Type": "image/png", "X-Forwarded-Proto": "https"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)
    except urllib.error.HTTPError as error:
        return json.load(error)


def project_page_path(session) -> str:
    _, page, _ = session.request("/admin/predictions/project/")
    return re.search(r'href="(/admin/predictions/project/\d+/change/)', page).group(1)


def test_the_admin_page_of_a_live_server_counts_the_frames_it_answered(served):
    _, session = served
    path = project_page_path(session)
    expected = re.compile(
        r'data-series="v1">\s*<h3>v1 \(in service\)</h3>\s*'
        f'<p class="usage-totals" data-frames="{FRAMES}" data-errors="{BAD_IMAGES}">'
    )

    def flushed():
        status, page, _ = session.request(path)
        return page if status == 200 and expected.search(page) else None

    page = support.wait_for(flushed, timeout=20, what="the flushed usage on the admin page")

    assert f"{FRAMES} frames answered; latency p50 " in page
    assert f"{BAD_IMAGES} errors (bad_image {BAD_IMAGES})" in page
    assert bars(charts(page)["v1-frames-hour"]) == 168


@pytest.mark.skipif(bool(browser.missing()), reason=browser.missing() or "")
def test_a_browser_shows_the_usage_charts(served):
    from playwright.sync_api import sync_playwright

    server, session = served
    path = project_page_path(session)
    with sync_playwright() as playwright:
        chromium = browser.launch(playwright)
        try:
            page = chromium.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(20_000)
            page.goto(f"{server.url}/admin/")
            page.fill("#id_username", ADMIN[0])
            page.fill("#id_password", ADMIN[1])
            page.click("input[type=submit]")
            page.wait_for_selector("#site-name")
            totals = page.locator(".usage-series[data-series=v1] .usage-totals")
            for _ in range(40):  # the flush runs every half second
                page.goto(f"{server.url}{path}")
                if totals.count() and totals.get_attribute("data-frames") == str(FRAMES):
                    break
                page.wait_for_timeout(500)
            assert totals.get_attribute("data-frames") == str(FRAMES)
            assert totals.get_attribute("data-errors") == str(BAD_IMAGES)
            assert f"bad_image {BAD_IMAGES}" in totals.inner_text()
            hourly = page.locator("svg[data-chart=v1-frames-hour]")
            assert hourly.get_attribute("role") == "img"
            assert hourly.locator("rect[data-bar]").count() == 168
            assert f"{FRAMES} frames" in hourly.get_attribute("aria-label")
            assert page.locator("svg[data-chart=v1-errors-day] rect[data-bar]").count() == 1
            page.locator("#usage").scroll_into_view_if_needed()
            # The stylesheet applies: bars are filled with the admin's colour, not black.
            fill = page.eval_on_selector(
                "svg[data-chart=v1-frames-day] rect[data-bar]", "el => getComputedStyle(el).fill"
            )
            assert fill not in ("rgb(0, 0, 0)", "")
            browser.screenshot(page, "admin-usage")
        finally:
            chromium.close()
