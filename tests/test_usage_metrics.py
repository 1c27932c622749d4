"""Usage per version and minute (predictions/usage.py): counted in memory, flushed into
`UsageMinute` rows that add up across flushes and processes, pruned, read per version; and the
feedback series of /metrics."""

import json
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from unittest import mock

import pytest
from django.db import DatabaseError, OperationalError
from django.utils import timezone
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from predictions import metrics, usage
from predictions.models import Project, UsageMinute
from predictions.usage import UsageAccumulator
from tests import support
from tests.support import COLOR_LABELS, encode, solid_image

pytestmark = pytest.mark.django_db(transaction=True)

# Slugs of this module only: a flush thread another module started counts "colors" frames.
SLUG = "tally"
T0 = 1_700_000_040.0  # a minute's start, in epoch seconds
MINUTE_0 = datetime.fromtimestamp(T0, tz=UTC)
MINUTE_1 = MINUTE_0 + timedelta(minutes=1)


@pytest.fixture(autouse=True)
def fresh_usage(monkeypatch):
    """The process's counts start empty, and no flush thread starts unless a test asks."""
    monkeypatch.setattr(usage, "_accumulator", UsageAccumulator())
    monkeypatch.setattr(usage, "_flusher", None)
    monkeypatch.setattr(usage, "_flusher_started", True)


@pytest.fixture
def project():
    return Project.objects.create(slug=SLUG, name="Tally")


def rows() -> dict:
    """(version, minute) -> (answered, errors, latency buckets) of the project's rows."""
    return {
        (row.version_number, row.minute): (row.answered, row.errors, row.latency_buckets)
        for row in UsageMinute.objects.filter(project__slug=SLUG)
    }


def buckets(**counts) -> list[int]:
    """Bucket counts by index, e.g. buckets(b0=2, b9=1)."""
    values = [0] * len(usage.LATENCY_BUCKETS_MS)
    for name, count in counts.items():
        values[int(name[1:])] = count
    return values


def test_flush_writes_counts_per_version_and_minute(project):
    counts = UsageAccumulator()
    for total_ms in (3, 7, 30):  # buckets <=5, <=10, <=50 ms
        counts.record_answer(SLUG, 1, total_ms, at=T0 + 5)
    counts.record_answer(SLUG, 2, 120, at=T0 + 59)  # <=250 ms
    counts.record_answer(SLUG, 1, 3000, at=T0 + 60)  # past 2500 ms: the last bucket
    counts.record_error(SLUG, 1, "bad_image", at=T0)
    counts.record_error(SLUG, 1, "bad_image", at=T0 + 1)
    counts.record_error(SLUG, 2, "busy", at=T0 + 61)
    counts.record_error(SLUG, 0, "model_unavailable", at=T0)  # no version in service
    counts.record_answer("deleted-project", 1, 3, at=T0)  # dropped at the flush

    assert counts.flush() == 5
    assert rows() == {
        (1, MINUTE_0): (3, {"bad_image": 2}, buckets(b0=1, b1=1, b3=1)),
        (2, MINUTE_0): (1, {}, buckets(b5=1)),
        (1, MINUTE_1): (1, {}, buckets(b9=1)),
        (2, MINUTE_1): (0, {"busy": 1}, buckets()),
        (0, MINUTE_0): (0, {"model_unavailable": 1}, buckets()),
    }
    assert counts.flush() == 0  # nothing pending, the unknown project's counts included


def test_flushes_and_processes_add_into_the_same_rows(project):
    first, second = UsageAccumulator(), UsageAccumulator()  # two processes
    first.record_answer(SLUG, 1, 3, at=T0)
    first.record_error(SLUG, 1, "bad_image", at=T0)
    first.flush()
    first.record_answer(SLUG, 1, 30, at=T0 + 10)  # the same minute, flushed again
    first.record_error(SLUG, 1, "bad_image", at=T0 + 10)
    first.flush()
    second.record_answer(SLUG, 1, 3, at=T0 + 20)
    second.record_error(SLUG, 1, "too_large", at=T0 + 20)
    second.flush()

    assert rows() == {(1, MINUTE_0): (3, {"bad_image": 2, "too_large": 1}, buckets(b0=2, b3=1))}


def test_usage_by_version_sums_minutes_and_estimates_percentiles(project):
    counts = UsageAccumulator()
    for i in range(8):
        counts.record_answer(SLUG, 3, 3, at=T0 + 60 * (i % 2))  # two minutes, <=5 ms
    for _ in range(2):
        counts.record_answer(SLUG, 3, 30, at=T0)  # <=50 ms
    counts.record_error(SLUG, 3, "bad_image", at=T0 + 60)
    counts.record_answer(SLUG, 4, 40, at=T0 - 3600)  # before `since`
    counts.flush()

    by_version = usage.usage_by_version(project=project, since=MINUTE_0)

    assert list(by_version) == [3]
    version = by_version[3]
    assert (version["answered"], version["errors"]) == (10, {"bad_image": 1})
    assert version["latency_buckets"] == buckets(b0=8, b3=2)
    # p50: the 5th of 10 falls in 0-5 ms, 5/8 of the way; p95: the 9.5th in 25-50 ms, 3/4 in.
    assert version["p50_ms"] == pytest.approx(3.125)
    assert version["p95_ms"] == pytest.approx(43.75)
    assert usage.latency_quantile(buckets(b9=1), 0.5) == 2500  # past the last bound: that bound
    assert usage.latency_quantile(buckets(), 0.5) is None


def test_prune_removes_rows_older_than_the_kept_days(project, settings):
    settings.USAGE_KEEP_DAYS = 30
    now = timezone.now().replace(second=0, microsecond=0)
    for days in (31, 29, 0):
        UsageMinute.objects.create(project=project, minute=now - timedelta(days=days), answered=1)

    assert usage.usage_prune(now=now) == 1
    assert sorted(rows(), key=lambda key: key[1]) == [
        (0, now - timedelta(days=29)),
        (0, now),
    ]


def test_a_database_failure_keeps_the_counts_for_the_next_flush(project):
    counts = UsageAccumulator()
    counts.record_answer(SLUG, 1, 3, at=T0)
    counts.record_answer(SLUG, 1, 3, at=T0 + 60)
    counts.record_error(SLUG, 1, "busy", at=T0 + 60)
    real = UsageMinute.objects.select_for_update
    # The one mocked fault: the database fails on the second row (after the first committed).
    failing = [real(), OperationalError("the database went away")]
    with mock.patch.object(UsageMinute.objects, "select_for_update", side_effect=failing):
        assert counts.flush() == 1
    assert rows() == {(1, MINUTE_0): (1, {}, buckets(b0=1))}

    counts.record_answer(SLUG, 1, 3, at=T0 + 61)  # recorded meanwhile, same minute
    assert counts.flush() == 1
    assert rows() == {
        (1, MINUTE_0): (1, {}, buckets(b0=1)),  # written once, not again
        (1, MINUTE_1): (2, {"busy": 1}, buckets(b0=2)),
    }


def test_pending_keys_are_bounded(project):
    counts = UsageAccumulator(max_keys=2)
    for minute in range(3):
        counts.record_answer(SLUG, 1, 3, at=T0 + 60 * minute)
    counts.record_answer(SLUG, 1, 3, at=T0)  # a key already held still counts

    assert counts.dropped == 1
    assert counts.flush() == 2
    assert rows()[(1, MINUTE_0)][0] == 2


def test_http_predictions_are_counted_under_the_version_that_answered(client, trained):
    project = Project.objects.create(slug=SLUG, name="Tally")
    first = support.register(project, trained.colors)
    png = encode(solid_image("red"), "PNG")

    def predict(body=png):
        return client.post(f"/api/projects/{SLUG}/predict", body, content_type="image/png")

    assert predict().json()["model_version"] == 1
    support.register(project, trained.colors)
    assert [predict().json()["model_version"] for _ in range(2)] == [2, 2]
    assert predict(b"not an image").json()["code"] == "bad_image"
    # A canary taking every request: its frames count under its own number.
    Project.objects.filter(pk=project.pk).update(candidate=first, candidate_share=100)
    assert predict().json()["model_version"] == 1

    usage.flush()

    by_version = usage.usage_by_version(project=project, since=timezone.now() - timedelta(hours=1))
    assert {number: (v["answered"], v["errors"]) for number, v in by_version.items()} == {
        1: (2, {}),
        2: (2, {"bad_image": 1}),
    }
    assert sum(by_version[2]["latency_buckets"]) == 2 and by_version[2]["p50_ms"] > 0


# (version number, label given, label predicted); version 1 is neither active nor candidate.
FEEDBACK = [
    (1, "red", "red"),
    (2, "red", "red"),
    (2, "red", "blue"),
    (2, "green", ""),  # says nothing about what version 2 answered: not judged
    (3, "blue", "blue"),
    (3, "blue", "blue"),
    (3, "green", "red"),
]


@pytest.fixture
def canary(trained, settings):
    """Version 2 in service, 3 the candidate, 1 neither; FEEDBACK stored as rows."""
    settings.FEEDBACK_PER_MINUTE = 100_000
    settings.METRICS_TOKEN = "metrics-secret"
    project = Project.objects.create(slug=SLUG, name="Tally")
    versions = {
        1: support.register(project, trained.colors, activate=False),
        2: support.register(project, trained.colors),
        3: support.register(project, trained.colors, activate=False),
    }
    Project.objects.filter(pk=project.pk).update(candidate=versions[3], candidate_share=10)
    support.judged_feedback_rows(project, versions, FEEDBACK)
    return project


def scrape(client) -> dict:
    """/metrics as {(sample name, frozen labels): value}."""
    response = client.get("/metrics", headers={"Authorization": "Bearer metrics-secret"})
    assert response.status_code == 200
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


def feedback_series(samples: dict, name: str) -> dict:
    """(version, role) -> value of one gauge for this module's project."""
    return {
        (labels["version"], labels["role"]): value
        for (sample, frozen), value in samples.items()
        if sample == name and (labels := dict(frozen))["project"] == SLUG
    }


def test_metrics_count_feedback_and_agreement_of_the_active_and_candidate(client, canary):
    counter = {"project": SLUG, "source": "api"}
    before = REGISTRY.get_sample_value("modelserver_feedback_total", counter) or 0
    saved = client.post(
        f"/api/projects/{SLUG}/feedback?label=green&predicted=green&model_version=2",
        encode(solid_image("green"), "PNG"),
        content_type="image/png",
    )
    assert saved.status_code == 201
    judged = [(n, label == predicted) for n, label, predicted in FEEDBACK if predicted]
    judged.append((2, True))  # the feedback just posted

    samples = scrape(client)

    assert samples[("modelserver_feedback_total", frozenset(counter.items()))] == before + 1
    expected = {
        (str(number), role): (
            sum(1 for n, _ in judged if n == number),
            sum(1 for n, agreed in judged if n == number and agreed),
        )
        for number, role in ((2, "active"), (3, "candidate"))  # never version 1
    }
    assert expected == {("2", "active"): (3, 2), ("3", "candidate"): (3, 2)}
    assert feedback_series(samples, "modelserver_feedback_judged") == {
        key: total for key, (total, _) in expected.items()
    }
    assert feedback_series(samples, "modelserver_feedback_agreed") == {
        key: agreed for key, (_, agreed) in expected.items()
    }


def test_metrics_answer_without_the_agreement_when_the_database_fails(client, canary):
    # A mocked fault: the collector's query failing must only leave its series out.
    with mock.patch.object(metrics, "feedback_agreement_rows", side_effect=DatabaseError("gone")):
        samples = scrape(client)

    assert not feedback_series(samples, "modelserver_feedback_judged")
    assert any(name == "modelserver_model_loads_total" for name, _ in samples)


def test_the_flush_thread_writes_the_counts(project, settings, monkeypatch):
    settings.USAGE_FLUSH_SECONDS = 0.05
    monkeypatch.setattr(usage, "_flusher_started", False)

    usage.record_answer(SLUG, 1, 12.0)  # starts the thread
    flusher = usage._flusher
    assert flusher is not None
    try:
        deadline = time.monotonic() + 10
        while not UsageMinute.objects.filter(project=project, answered=1).exists():
            assert time.monotonic() < deadline, "the flush thread wrote nothing within 10 s"
            time.sleep(0.05)
        usage.record_error(SLUG, 1, "busy")
    finally:
        flusher.stop()  # as at exit: whatever is left is flushed

    counted = usage.usage_by_version(project=project, since=timezone.now() - timedelta(hours=1))
    assert (counted[1]["answered"], counted[1]["errors"]) == (1, {"busy": 1})


def test_daphne_flushes_its_counts_when_it_is_stopped(tmp_path, trained):
    """A real web process, whose thread would flush only in an hour: SIGTERM still writes them."""
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(COLOR_LABELS))
    with support.migrated_env(tmp_path, USAGE_FLUSH_SECONDS="3600") as env:
        support.manage(
            "register_model", SLUG, "--file", str(trained.colors), "--labels-file", str(labels),
            "--activate", env=env,
        )  # fmt: skip
        server = support.DaphneServer(env, tmp_path / "daphne.log")
        with support.running(server):
            for _ in range(3):
                request = urllib.request.Request(
                    f"{server.url}/api/projects/{SLUG}/predict",
                    data=encode(solid_image("blue"), "PNG"),
                    headers={"Content-Type": "image/png"},
                )
                with urllib.request.urlopen(request, timeout=30) as response:
                    assert json.load(response)["model_version"] == 1
        # `running` has stopped daphne with SIGTERM.
        code = (
            "import json; from predictions.models import UsageMinute; "
            "print(json.dumps(list(UsageMinute.objects.values_list('version_number', 'answered'))))"
        )
        out = support.manage("shell", "-c", code, env=env).stdout.strip().splitlines()[-1]
    rows = json.loads(out)  # one row, or two when the frames straddled a minute
    assert {number for number, _ in rows} == {1} and sum(n for _, n in rows) == 3
