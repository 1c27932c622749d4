"""The admin's usage charts: small inline SVG drawn here, on the server (no script, no library),
from the series of `usage.usage_series`.

Every bar is a `<rect data-bar="<period start>">` holding a `<title>` (its tooltip; a p50 bar,
drawn over its hour's p95 bar, has the title only); every chart
is an `<svg role="img" data-chart="...">` whose `aria-label` says its totals in words. Colours
come from predictions/static/predictions/usage_charts.css (classes only, no inline styles).
"""

from collections import Counter
from dataclasses import dataclass
from datetime import datetime

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from .usage import DAY, HOUR, UsagePeriod, UsageSeries, UsageWindow

# Sizes in SVG units (a chart scales to the width of its box): the width of an hour's and a
# day's bar slot (672 and 224 units for 7 days: the hourly chart takes 3/4 of a row), and the
# margins around the bars.
HOUR_STEP = 4
DAY_STEP = 32
PLOT_HEIGHT = 72
LEFT = 44  # room for the scale's top value
RIGHT = 4
TOP = 6
BOTTOM = 16  # room for the day names
HEIGHT = TOP + PLOT_HEIGHT + BOTTOM
ERROR_COLOURS = 6  # code-0 ... code-5 in the stylesheet, given out in the codes' order


@dataclass(frozen=True)
class ErrorCode:
    code: str
    count: int
    colour: str  # the class of its colour


@dataclass(frozen=True)
class SeriesPanel:
    """One series' charts and totals, as the change page shows them."""

    key: str  # "all", or "v<number>"
    title: str
    answered: int
    error_total: int
    summary: str  # the totals in words
    error_codes: list[ErrorCode]
    frames_by_hour: SafeString
    frames_by_day: SafeString
    latency_by_hour: SafeString
    errors_by_day: SafeString


@dataclass(frozen=True)
class UsageSection:
    since: datetime
    until: datetime
    panels: list[SeriesPanel]  # empty: nothing counted in the window

    @property
    def last_day(self) -> datetime:
        return self.until - DAY


def usage_section(window: UsageWindow, *, now: datetime, roles: dict[int, str]) -> UsageSection:
    """The panels of a project's window: every version's, then each version's with usage
    (`roles`: words beside a version's number, e.g. "in service")."""
    if not window.versions:
        return UsageSection(since=window.since, until=window.until, panels=[])
    codes = sorted({code for series in window.versions.values() for code in series.total.errors})
    colours = {code: f"code-{index % ERROR_COLOURS}" for index, code in enumerate(codes)}
    panels = [series_panel(window.project, title="All versions", now=now, colours=colours)]
    for number, series in window.versions.items():
        if number:
            title = f"v{number}" + (f" ({roles[number]})" if number in roles else "")
        else:
            title = "No version (frames answered while none was in service)"
        panels.append(series_panel(series, title=title, now=now, colours=colours))
    return UsageSection(since=window.since, until=window.until, panels=panels)


def series_panel(
    series: UsageSeries, *, title: str, now: datetime, colours: dict[str, str]
) -> SeriesPanel:
    """One series drawn: frames per hour and per day, latency per hour, errors per day."""
    total = series.total
    key = "all" if series.version_number is None else f"v{series.version_number}"
    codes = [
        ErrorCode(code=code, count=count, colour=colours[code])
        for code, count in sorted(total.errors.items())
    ]
    return SeriesPanel(
        key=key,
        title=title,
        answered=total.answered,
        error_total=total.error_total,
        summary=totals_text(total),
        error_codes=codes,
        frames_by_hour=frames_chart(series.hours, hourly=True, now=now, name=f"{key}-frames-hour"),
        frames_by_day=frames_chart(series.days, hourly=False, now=now, name=f"{key}-frames-day"),
        latency_by_hour=latency_chart(series.hours, now=now, name=f"{key}-latency-hour"),
        errors_by_day=errors_chart(series.days, colours=colours, name=f"{key}-errors-day"),
    )


def totals_text(total: UsagePeriod) -> str:
    """The window's totals in words."""
    frames = _count(total.answered, "frame") + " answered"
    if total.answered:
        frames += f"; latency p50 {_ms(total.p50_ms)}, p95 {_ms(total.p95_ms)} over the week"
    if not total.error_total:
        return f"{frames}; no errors."
    return f"{frames}; {_count(total.error_total, 'error')} ({_codes_text(total.errors)})."


# --- The charts ---------------------------------------------------------------------------------


def frames_chart(periods: list[UsagePeriod], *, hourly: bool, now: datetime, name: str):
    """Frames answered: one bar per period."""
    top = max((period.answered for period in periods), default=0)
    step = HOUR_STEP if hourly else DAY_STEP
    bars = []
    for index, period in enumerate(periods):
        x, width = _slot(index, step)
        height = _height(period.answered, top)
        tip = f"{_period_name(period, hourly)}: {_count(period.answered, 'frame')}"
        bars.append(_bar(period, x, width, height, "frames", tip))
    busiest = max(periods, key=lambda period: period.answered, default=None)
    label = f"Frames answered per {'hour' if hourly else 'day'}, last 7 days: " + _count(
        sum(period.answered for period in periods), "frame"
    )
    if busiest is not None and busiest.answered:
        label += f"; the busiest {_period_name(busiest, hourly)}, {busiest.answered:,}"
    scale = f"{top:,}" if top else ""
    return _svg(name, label, periods, bars, top=scale, hourly=hourly, now=now if hourly else None)


def latency_chart(periods: list[UsagePeriod], *, now: datetime, name: str):
    """p95 (light) and p50 (dark, in front) per hour; an hour with nothing answered is a gap."""
    answered = [period for period in periods if period.answered]
    top = max((period.p95_ms for period in answered), default=0.0)
    bars = []
    for index, period in enumerate(periods):
        if not period.answered:
            continue
        x, width = _slot(index, HOUR_STEP)
        tip = (
            f"{_period_name(period, True)}: p50 {_ms(period.p50_ms)}, p95 {_ms(period.p95_ms)} "
            f"({_count(period.answered, 'frame')})"
        )
        bars.append(_bar(period, x, width, _height(period.p95_ms, top), "p95", tip))
        bars.append(_bar(period, x, width, _height(period.p50_ms, top), "p50", tip, data=False))
    label = "Latency per hour, p50 and p95, last 7 days: " + (
        f"highest p95 {_ms(top)}, in {len(answered)} hour(s) with frames"
        if answered
        else "no frames answered"
    )
    return _svg(name, label, periods, bars, top=_ms(top) if answered else "", hourly=True, now=now)


def errors_chart(periods: list[UsagePeriod], *, colours: dict[str, str], name: str):
    """Errors per day, stacked by code: one bar segment per day and code."""
    top = max((period.error_total for period in periods), default=0)
    bars = []
    by_code: Counter = Counter()
    for index, period in enumerate(periods):
        x, width = _slot(index, DAY_STEP)
        y = TOP + PLOT_HEIGHT
        for code, count in sorted(period.errors.items()):
            height = _height(count, top)
            y -= height
            bars.append(
                format_html(
                    '<rect data-bar="{}" data-code="{}" class="{}" x="{}" y="{}" width="{}" '
                    'height="{}"><title>{}</title></rect>',
                    _iso(period.start),
                    code,
                    colours[code],
                    _n(x),
                    _n(y),
                    _n(width),
                    _n(height),
                    f"{_period_name(period, False)}: {code} {count:,}",
                )
            )
        by_code.update(period.errors)
    label = "Errors per day by code, last 7 days: " + (
        f"{_count(by_code.total(), 'error')} ({_codes_text(by_code)})" if by_code else "none"
    )
    return _svg(name, label, periods, bars, top=f"{top:,}" if top else "", hourly=False)


# --- Drawing helpers ----------------------------------------------------------------------------


def _svg(name, label, periods, bars, *, top: str, hourly: bool, now: datetime | None = None):
    """A chart: its bars over the baseline, the scale's top value, the day names, and in an
    hourly chart a line at each midnight and the rest of today (after `now`) shaded."""
    step = HOUR_STEP if hourly else DAY_STEP
    right, bottom = LEFT + len(periods) * step, TOP + PLOT_HEIGHT
    decor = [_future(periods, now)] if now is not None else []
    decor.append(_line("axis", LEFT, bottom, right, bottom))
    if top:
        decor.append(_text("scale", LEFT - 4, TOP + 8, top))
    per_day = 24 if hourly else 1
    for first in range(0, len(periods), per_day):
        x = LEFT + first * step
        if hourly and first:
            decor.append(_line("midnight", x, TOP, x, bottom))
        start = periods[first].start
        day_name = f"{start:%a} {start.day}" if hourly else f"{start:%a}"  # a day's bar: narrow
        decor.append(_text("day", x + step * per_day / 2, HEIGHT - 3, day_name))
    return format_html(
        '<svg class="usage-chart {}" data-chart="{}" viewBox="0 0 {} {}" role="img" '
        'aria-label="{}">{}{}</svg>',
        "hourly" if hourly else "daily",
        name,
        right + RIGHT,
        HEIGHT,
        label,
        _join(decor),
        _join(bars),
    )


def _future(hours: list[UsagePeriod], now: datetime) -> SafeString:
    """The part of an hourly chart after `now`, shaded (nothing when `now` is outside it)."""
    start, end = hours[0].start, hours[-1].start + HOUR
    if not start < now < end:
        return SafeString("")
    x = LEFT + HOUR_STEP * ((now - start) / HOUR)
    return format_html(
        '<rect class="future" x="{}" y="{}" width="{}" height="{}"><title>{}</title></rect>',
        _n(x),
        TOP,
        _n(LEFT + HOUR_STEP * len(hours) - x),
        PLOT_HEIGHT,
        "Still to come today",
    )


def _line(css: str, x1: float, y1: float, x2: float, y2: float) -> SafeString:
    return format_html(
        '<line class="{}" x1="{}" y1="{}" x2="{}" y2="{}"/>', css, _n(x1), _n(y1), _n(x2), _n(y2)
    )


def _text(css: str, x: float, y: float, text: str) -> SafeString:
    return format_html('<text class="{}" x="{}" y="{}">{}</text>', css, _n(x), _n(y), text)


def _join(pieces: list[SafeString]) -> SafeString:
    return format_html_join("", "{}", ((piece,) for piece in pieces))


def _bar(period, x, width, height, css, tip, *, data=True) -> SafeString:
    y = TOP + PLOT_HEIGHT - height
    return format_html(
        '<rect{} class="{}" x="{}" y="{}" width="{}" height="{}"><title>{}</title></rect>',
        format_html(' data-bar="{}"', _iso(period.start)) if data else "",
        css,
        _n(x),
        _n(y),
        _n(width),
        _n(height),
        tip,
    )


def _slot(index: int, step: float) -> tuple[float, float]:
    """A bar's x and width: its slot, less a gap."""
    gap = step * 0.2
    return LEFT + index * step + gap / 2, step - gap


def _height(value, top) -> float:
    return PLOT_HEIGHT * value / top if top and value else 0.0


def _n(value: float) -> str:
    return f"{value:.1f}".removesuffix(".0")


def _iso(moment: datetime) -> str:
    return f"{moment:%Y-%m-%dT%H:%MZ}"


def _period_name(period: UsagePeriod, hourly: bool) -> str:
    start = period.start
    if hourly:
        return f"{start:%a} {start.day} {start:%b}, {start:%H}:00-{(start.hour + 1):02}:00 UTC"
    return f"{start:%a} {start.day} {start:%b} (UTC)"


def _codes_text(errors: Counter) -> str:
    return ", ".join(f"{code} {count:,}" for code, count in sorted(errors.items()))


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f} ms" if value < 10 else f"{value:,.0f} ms"
