"""Two server processes and a Redis restart: model swaps reach every process again, and open
connections stay open through the outage."""

import json

import pytest
from websockets.sync.client import connect

from tests import support
from tests.support import COLOR_LABELS, encode, solid_image

TIMEOUT = 60

pytestmark = pytest.mark.skipif(support.REDIS is None, reason="needs redis-server on the PATH")


@pytest.fixture
def two_servers(tmp_path, trained):
    redis_server = support.RedisServer()
    redis_server.start()
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(COLOR_LABELS))
    servers = []
    try:
        with support.OutsideDatabase(tmp_path) as database_url:
            env = support.outside_env(
                database_url=database_url, folder=tmp_path, REDIS_URL=redis_server.url
            )
            support.manage("migrate", "--noinput", env=env)
            support.manage(
                "register_model", "colors", "--file", str(trained.colors),
                "--labels-file", str(labels), "--activate", env=env,
            )  # fmt: skip
            for name in ("a", "b"):
                server = support.DaphneServer(env, tmp_path / f"daphne-{name}.log")
                servers.append(server)
                server.start()
            yield redis_server, servers, env, labels
    finally:
        for server in servers:
            server.stop()
        redis_server.stop()


def receive(socket):
    return json.loads(socket.recv(timeout=TIMEOUT))


def test_swaps_reach_every_process_after_a_redis_restart(two_servers, trained):
    redis_server, (server_a, server_b), env, labels = two_servers
    url = "/ws/projects/colors/"
    with connect(server_a.ws_url + url) as on_a, connect(server_b.ws_url + url) as on_b:
        assert receive(on_a)["model"]["version"] == receive(on_b)["model"]["version"] == 1

        redis_server.stop()
        redis_server.start()  # same port, and it remembers nothing
        on_b.send(encode(solid_image("red"), "PNG"))  # still served during and after
        assert receive(on_b)["labels"][0]["label"] == "red"

        labels.write_text("R\nG\nB\n")
        support.manage(
            "register_model", "colors", "--file", str(trained.colors),
            "--labels-file", str(labels), "--activate", env=env,
        )  # fmt: skip
        for socket in (on_a, on_b):
            changed = receive(socket)
            assert changed["type"] == "model_changed", changed
            assert changed["model"]["version"] == 2
        on_b.send(encode(solid_image("red"), "PNG"))
        reply = receive(on_b)
    assert (reply["model_version"], reply["labels"][0]["label"]) == (2, "R")
