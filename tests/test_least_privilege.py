"""Tokens kept as hashes and shown once, rotated from the admin, never printed in the access log;
sockets that no longer pass their checks are closed; refused sockets hear nothing."""

import hashlib
import json
import re
import urllib.error
import urllib.request

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from modelserver.asgi import application
from modelserver.serve import redact
from predictions.models import Project, hash_token
from predictions.services import project_group_name
from tests import support

TIMEOUT = 60
ADMIN = ("rotator", "rotator-password-1")
OLD_TOKEN = "old-vault-token-123"


# --- In the process ----------------------------------------------------------------------------


def test_the_access_log_redacts_every_token_value():
    assert redact("GET /api/projects/x/?token=abc") == "GET /api/projects/x/?token=[redacted]"
    assert redact("POST /p?a=1&token=abc&b=2") == "POST /p?a=1&token=[redacted]&b=2"
    assert redact("GET /p?TOKEN=abc;token=def") == "GET /p?TOKEN=[redacted];token=[redacted]"
    assert redact("GET /p?mytoken=keep") == "GET /p?mytoken=keep"


@pytest.mark.django_db
def test_a_project_keeps_only_its_token_hash():
    project = Project(slug="vault", name="Vault", is_public=False)
    token = project.rotate_token()
    project.save()

    stored = Project.objects.values_list("token_hash", flat=True).get(slug="vault")
    assert stored == hashlib.sha256(token.encode()).hexdigest() and token not in stored
    assert len(token) >= 32  # 192 random bits


@pytest.mark.django_db(transaction=True)
def test_the_migration_hashes_existing_tokens_so_clients_keep_working():
    executor = MigrationExecutor(connection)
    executor.migrate([("predictions", "0005_activate_permission")])
    old_apps = executor.loader.project_state([("predictions", "0005_activate_permission")]).apps
    old_apps.get_model("predictions", "Project").objects.create(
        slug="legacy", name="Legacy", is_public=False, token="a-token-from-before"
    )

    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())

    from predictions import selectors

    info = selectors.project_get_info(slug="legacy")
    assert info.token_hash == hash_token("a-token-from-before")
    assert info.token_matches("a-token-from-before") and not info.token_matches("a-token")


@pytest.mark.django_db(transaction=True)
async def test_a_refused_socket_hears_no_model_change(trained):
    await database_sync_to_async(support.register)("secret", trained.colors, is_public=False)
    refused = WebsocketCommunicator(application, "/ws/projects/secret/?token=wrong")
    await refused.connect(timeout=10)
    assert await refused.receive_output(timeout=10) == {"type": "websocket.close", "code": 4403}

    await get_channel_layer().group_send(
        project_group_name("secret"), {"type": "model.changed", "version_id": None}
    )

    assert await refused.receive_nothing(timeout=0.5)
    await refused.disconnect()


# --- From outside: daphne in production settings, the admin over HTTP -------------------------


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    folder = tmp_path_factory.mktemp("least-privilege")
    with support.migrated_env(folder, production=True) as env:
        support.manage(
            "shell",
            "-c",
            "from django.contrib.auth.models import User; from predictions.models import Project;"
            f"User.objects.create_superuser('{ADMIN[0]}', 'r@example.com', '{ADMIN[1]}');"
            "Project.objects.create(slug='vault', name='Vault', is_public=False, "
            f"token_hash='{hash_token(OLD_TOKEN)}')",
            env=env,
        )
        server = support.DaphneServer(env, folder / "daphne.log")
        with support.running(server):
            yield server, env


def project_pk(env, slug: str) -> str:
    script = f"from predictions.models import Project; print(Project.objects.get(slug='{slug}').pk)"
    return support.manage("shell", "-c", script, env=env).stdout.strip().splitlines()[-1]


def ws(server, slug: str, query: str = ""):
    return connect(f"{server.ws_url}/ws/projects/{slug}/{query}", open_timeout=TIMEOUT)


def test_rotating_a_token_closes_the_old_sockets_and_shows_the_new_token_once(live):
    server, env = live
    admin = support.AdminSession(server.url)
    admin.login(*ADMIN)
    pk = project_pk(env, "vault")

    with ws(server, "vault", f"?token={OLD_TOKEN}") as socket:
        assert json.loads(socket.recv(timeout=TIMEOUT))["type"] == "ready"
        status, _, location = admin.post(
            "/admin/predictions/project/",
            {"action": "rotate_tokens", "_selected_action": pk, "index": "0"},
        )
        assert status == 302
        shown = admin.request(location)[1]
        new_token = re.search(r"The token of “vault” is ([\w-]+) —", shown).group(1)

        with pytest.raises(ConnectionClosed):
            socket.recv(timeout=TIMEOUT)
        assert socket.close_code == 4403

    with ws(server, "vault", f"?token={OLD_TOKEN}") as socket:
        with pytest.raises(ConnectionClosed):
            socket.recv(timeout=TIMEOUT)
        assert socket.close_code == 4403
    with ws(server, "vault", f"?token={new_token}") as socket:
        assert json.loads(socket.recv(timeout=TIMEOUT))["project"] == "vault"

    # Shown once: neither the list nor the project's page prints it again.
    assert new_token not in admin.request("/admin/predictions/project/")[1]
    change_page = admin.request(f"/admin/predictions/project/{pk}/change/")[1]
    assert new_token not in change_page and "only its hash is kept" in change_page


def test_saving_a_project_closes_sockets_whose_origin_no_longer_passes(live):
    server, env = live
    admin = support.AdminSession(server.url)
    admin.login(*ADMIN)
    support.manage(
        "shell",
        "-c",
        "from predictions.models import Project;"
        "Project.objects.create(slug='open', name='Open', allowed_origins='https://app.example')",
        env=env,
    )
    pk = project_pk(env, "open")
    socket = connect(
        f"{server.ws_url}/ws/projects/open/", open_timeout=TIMEOUT, origin="https://app.example"
    )
    with socket:
        assert json.loads(socket.recv(timeout=TIMEOUT))["type"] == "ready"
        change = f"/admin/predictions/project/{pk}/change/"
        management = dict(
            re.findall(r'name="([\w-]+_FORMS)" value="(\d*)"', admin.request(change)[1])
        )
        status, body, _ = admin.post(
            change,
            {
                "slug": "open",
                "name": "Open",
                "description": "",
                "is_public": "on",
                "allowed_origins": "https://other.example",
                **management,  # the versions inline's (read-only) formset
            },
        )
        assert status == 302, re.findall(r'class="errorlist[^>]*>(.*?)</ul>', body, re.S)

        with pytest.raises(ConnectionClosed):
            socket.recv(timeout=TIMEOUT)
        assert socket.close_code == 4403


def test_the_access_log_never_prints_a_token(live):
    server, _ = live
    for path in ("/api/projects/vault/?token=log-me-not-1", "/healthz?a=1&token=log-me-not-2"):
        try:
            urllib.request.urlopen(f"{server.url}{path}", timeout=TIMEOUT).read()
        except urllib.error.HTTPError as error:  # 403 for a wrong token: the log line matters
            assert error.code == 403

    log = server.log_text()
    assert "log-me-not" not in log and OLD_TOKEN not in log
    assert "token=[redacted]" in log
