"""A canary: a candidate version answers its share of new connections and requests; the admin
promotes it or ends the canary, and open connections follow.

In process (channels' communicator, the Django test client) for the rules and the admin; the
split of 100 connections and the promotion again through a real daphne process below.
"""

import json

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import Permission, User

from modelserver.asgi import application
from predictions import services, usage
from predictions.admin import ProjectForm
from predictions.inference.spec import ModelSpec
from predictions.models import ModelVersion, Project
from predictions.selectors import ProjectInfo
from tests import support
from tests.support import COLOR_LABELS, encode, solid_image

TIMEOUT = 30
CANDIDATE_LABELS = ["R", "G", "B"]  # the candidate answers in its own words


def spec(version_id: int, number: int) -> ModelSpec:
    return ModelSpec(
        version_id=version_id,
        number=number,
        file_name=f"v{number}.keras",
        sha256="0" * 64,
        input_shape=(16, 16, 3),
        labels=tuple(COLOR_LABELS),
    )


def info(*, candidate_share: int) -> ProjectInfo:
    return ProjectInfo(
        slug="colors",
        name="Colors",
        description="",
        is_public=True,
        token_hash="",
        model=spec(1, 1),
        candidate=spec(2, 2),
        candidate_share=candidate_share,
    )


def test_the_candidate_is_given_by_its_share():
    project = info(candidate_share=30)

    assert project.assigned(draw=lambda: 0.2999).model.number == 2
    assert project.assigned(draw=lambda: 0.30).model.number == 1
    assert info(candidate_share=0).assigned(draw=lambda: 0.0).model.number == 1
    assert info(candidate_share=100).assigned(draw=lambda: 0.9999).model.number == 2


def test_a_connection_keeps_its_version_while_it_serves():
    project = info(candidate_share=30)

    assert project.following(2).model.number == 2  # the candidate, still one
    assert project.following(1).model.number == 1  # the version in service
    assert project.following(7).model.number == 1  # gone: back to the version in service
    assert project.following(None).model.number == 1


# --- Through the database, the admin and the WebSocket consumer ------------------------------


@pytest.fixture
def canary(trained, db):
    """`colors`: v1 in service, v2 (same model, labels R/G/B) ready and not in service."""
    v1 = support.register("colors", trained.colors)
    v2 = support.register(v1.project, trained.colors, labels=CANDIDATE_LABELS, activate=False)
    assert v2.status == ModelVersion.Status.READY
    project = Project.objects.get(slug="colors")
    return project, v1, v2


def start_canary(project: Project, candidate: ModelVersion, share: int) -> None:
    Project.objects.filter(pk=project.pk).update(candidate=candidate, candidate_share=share)


def form(project: Project, **changes) -> ProjectForm:
    data = {
        "slug": project.slug,
        "name": project.name,
        "description": "",
        "is_public": "on",
        "allowed_origins": "",
        "candidate": "",
        "candidate_share": "0",
        **changes,
    }
    return ProjectForm(data=data, instance=project)


def test_the_form_takes_a_ready_version_of_the_project_with_a_share(canary, trained):
    project, v1, v2 = canary
    other = support.register("other", trained.colors)
    failed = ModelVersion.objects.create(
        project=project, number=3, file=v2.file.name, status=ModelVersion.Status.FAILED
    )

    assert form(project, candidate=v2.pk, candidate_share="30").is_valid()
    errors = {
        "in service": form(project, candidate=v1.pk, candidate_share="30").errors,
        "failed": form(project, candidate=failed.pk, candidate_share="30").errors,
        "another project's": form(project, candidate=other.pk, candidate_share="30").errors,
        "over 100 %": form(project, candidate=v2.pk, candidate_share="101").errors,
        "a share alone": form(project, candidate_share="30").errors,
    }
    assert "candidate" in errors["in service"]
    assert "candidate" in errors["failed"]
    assert "candidate" in errors["another project's"]
    assert "candidate_share" in errors["over 100 %"]
    assert "Choose a candidate version" in str(errors["a share alone"])


def test_only_users_who_may_activate_set_the_canary(canary, client):
    project, _, _ = canary
    editor = User.objects.create_user("editor", password="pw", is_staff=True)
    editor.user_permissions.add(
        *Permission.objects.filter(codename__in=["change_project", "view_project"])
    )
    client.force_login(editor)

    page = client.get(f"/admin/predictions/project/{project.pk}/change/").content.decode()

    assert 'name="name"' in page and 'name="candidate"' not in page
    changelist = client.get("/admin/predictions/project/").content.decode()
    assert "promote_candidate" not in changelist and "end_canary" not in changelist


def test_the_project_page_shows_both_versions_side_by_side(canary, admin_client):
    project, _, v2 = canary
    start_canary(project, v2, 30)
    photo = encode(solid_image("red"), "PNG")
    answered_by = [
        admin_client.post("/api/projects/colors/predict", photo, content_type="image/png").json()[
            "model_version"
        ]
        for _ in range(20)
    ]
    usage.flush()  # what the process's flush thread does every USAGE_FLUSH_SECONDS

    page = admin_client.get(f"/admin/predictions/project/{project.pk}/change/").content.decode()

    assert 'class="canary"' in page
    hour_and_day = {v: f"<td>{answered_by.count(v)}</td>" * 2 for v in (1, 2)}
    assert f"<td>v1</td><td>in service</td><td>70%</td>{hour_and_day[1]}" in page
    assert f"<td>v2</td><td>candidate</td><td>30%</td>{hour_and_day[2]}" in page
    listing = admin_client.get("/admin/predictions/project/").content.decode()
    assert "v2 at 30%" in listing


async def connect(path="/ws/projects/colors/"):
    communicator = WebsocketCommunicator(application, path)
    connected, _ = await communicator.connect(timeout=TIMEOUT)
    assert connected
    return communicator


async def receive(communicator):
    return json.loads(await communicator.receive_from(timeout=TIMEOUT))


async def predict(communicator) -> dict:
    await communicator.send_to(bytes_data=encode(solid_image("red"), "PNG"))
    reply = await receive(communicator)
    assert reply["type"] == "prediction", reply
    return reply


def admin_action(client, action: str, project: Project):
    return client.post(
        "/admin/predictions/project/",
        {"action": action, "_selected_action": [project.pk], "index": 0},
    )


@pytest.mark.django_db(transaction=True)
async def test_promoting_moves_every_connection_to_the_candidate(canary, admin_client):
    project, _, v2 = canary
    await database_sync_to_async(start_canary)(project, v2, 50)
    sockets = [await connect() for _ in range(20)]
    try:
        given = [(await receive(socket))["model"]["version"] for socket in sockets]
        assert set(given) == {1, 2}, "20 connections at 50 % all got one version"
        for socket, version in zip(sockets, given, strict=True):
            assert (await predict(socket))["model_version"] == version

        response = await sync_to_async(admin_action)(admin_client, "promote_candidate", project)
        assert response.status_code == 302

        for socket, version in zip(sockets, given, strict=True):
            if version == 1:  # those on the old version hear of the swap; the others need not
                changed = await receive(socket)
                assert changed["type"] == "model_changed"
                assert changed["model"]["version"] == 2
            reply = await predict(socket)
            assert (reply["model_version"], reply["labels"][0]["label"]) == (2, "R")
    finally:
        for socket in sockets:
            await socket.disconnect()
    project = await database_sync_to_async(Project.objects.get)(pk=project.pk)
    assert (project.active_version_id, project.candidate_id) == (v2.pk, None)


@pytest.mark.django_db(transaction=True)
async def test_ending_the_canary_moves_its_connections_back(canary, admin_client, client):
    project, _, v2 = canary
    await database_sync_to_async(start_canary)(project, v2, 100)
    sockets = [await connect() for _ in range(5)]
    try:
        for socket in sockets:
            assert (await receive(socket))["model"]["version"] == 2
        reply = (await sync_to_async(client.post)(
            "/api/projects/colors/predict", encode(solid_image("red"), "PNG"),
            content_type="image/png",
        )).json()  # fmt: skip
        assert reply["model_version"] == 2  # HTTP requests are given the candidate too

        response = await sync_to_async(admin_action)(admin_client, "end_canary", project)
        assert response.status_code == 302

        for socket in sockets:
            changed = await receive(socket)
            assert changed["type"] == "model_changed" and changed["model"]["version"] == 1
            assert (await predict(socket))["model_version"] == 1
    finally:
        for socket in sockets:
            await socket.disconnect()
    project = await database_sync_to_async(Project.objects.select_related("active_version").get)(
        pk=project.pk
    )
    assert (project.active_version.number, project.candidate_id, project.candidate_share) == (
        1,
        None,
        0,
    )


@pytest.mark.django_db(transaction=True)
async def test_a_new_candidate_leaves_open_connections_where_they_are(canary):
    project, _, v2 = canary
    socket = await connect()
    try:
        assert (await receive(socket))["model"]["version"] == 1
        await database_sync_to_async(start_canary)(project, v2, 100)
        # A saved project is announced; the connection stays on its version and hears nothing.
        await sync_to_async(services.announce_project_change)("colors")
        reply = await predict(socket)
        assert reply["model_version"] == 1
        late = await connect()
        assert (await receive(late))["model"]["version"] == 2
        await late.disconnect()
    finally:
        await socket.disconnect()


# --- Through a real daphne process -----------------------------------------------------------

ADMIN = ("canary-admin", "canary-password")
CONNECTIONS = 100
REQUESTS = 200
SHARE = 30


def within_tolerance(count: int, trials: int, share: float) -> bool:
    """Within 4 standard deviations of a binomial's mean (fails once in ~16,000 runs)."""
    mean = trials * share
    deviation = (trials * share * (1 - share)) ** 0.5
    return abs(count - mean) <= 4 * deviation


@pytest.fixture(scope="module")
def live(tmp_path_factory, trained):
    folder = tmp_path_factory.mktemp("canary")
    with support.migrated_env(folder, admin=ADMIN, production=True) as env:
        for number, labels in ((1, COLOR_LABELS), (2, CANDIDATE_LABELS)):
            labels_file = folder / f"labels-{number}.txt"
            labels_file.write_text("\n".join(labels))
            activate = ["--activate"] if number == 1 else []
            support.manage(
                "register_model", "colors", "--file", str(trained.colors),
                "--labels-file", str(labels_file), *activate, env=env,
            )  # fmt: skip
        script = (
            "from predictions.models import Project; p = Project.objects.get(slug='colors'); "
            f"p.candidate = p.versions.get(number=2); p.candidate_share = {SHARE}; p.save(); "
            "print(p.pk)"
        )
        project_pk = support.manage("shell", "-c", script, env=env).stdout.split()[-1]
        server = support.DaphneServer(env, folder / "daphne.log")
        with support.running(server):
            yield server, project_pk


def test_a_30_percent_canary_splits_100_connections_and_promotion_swaps_them_all(live):
    import contextlib
    import urllib.request

    from websockets.sync.client import connect as ws_connect

    server, project_pk = live
    photo = encode(solid_image("red"), "PNG")
    with contextlib.ExitStack() as stack:
        sockets = [
            stack.enter_context(ws_connect(f"{server.ws_url}/ws/projects/colors/"))
            for _ in range(CONNECTIONS)
        ]
        given = [json.loads(socket.recv(timeout=TIMEOUT))["model"]["version"] for socket in sockets]
        on_candidate = given.count(2)
        assert within_tolerance(on_candidate, CONNECTIONS, SHARE / 100), on_candidate
        replies = []
        for socket in sockets:  # one at a time: 100 at once would be more than the queues take
            socket.send(photo)
            replies.append(json.loads(socket.recv(timeout=TIMEOUT)))
        assert all(reply["type"] == "prediction" for reply in replies), replies
        assert [reply["model_version"] for reply in replies] == given
        assert all(
            reply["labels"][0]["label"] == ("R" if version == 2 else "red")
            for reply, version in zip(replies, given, strict=True)
        )

        answered_by = []
        for _ in range(REQUESTS):
            request = urllib.request.Request(
                f"{server.url}/api/projects/colors/predict",
                data=photo,
                headers={"Content-Type": "image/png"},
            )
            with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
                answered_by.append(json.loads(response.read())["model_version"])
        assert set(answered_by) == {1, 2}
        assert within_tolerance(answered_by.count(2), REQUESTS, SHARE / 100), answered_by
        print(f"candidate: {on_candidate} of {CONNECTIONS} connections, "
              f"{answered_by.count(2)} of {REQUESTS} requests")  # fmt: skip

        admin = support.AdminSession(server.url)
        admin.login(*ADMIN)
        status, _, _ = admin.post(
            "/admin/predictions/project/",
            {"action": "promote_candidate", "_selected_action": project_pk, "index": "0"},
        )
        assert status == 302

        for socket, version in zip(sockets, given, strict=True):
            if version == 1:
                changed = json.loads(socket.recv(timeout=TIMEOUT))
                assert changed["type"] == "model_changed" and changed["model"]["version"] == 2
        after = []
        for socket in sockets:
            socket.send(photo)
            after.append(json.loads(socket.recv(timeout=TIMEOUT)))
    assert {(reply["model_version"], reply["labels"][0]["label"]) for reply in after} == {(2, "R")}
