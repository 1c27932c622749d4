"""Production settings: Django's deployment checks pass, and the dev key is refused."""

import secrets

from tests import support

PRODUCTION = {
    "DJANGO_DEBUG": "false",
    "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
    "DJANGO_ALLOWED_HOSTS": "modelserver.example.com",
}


def test_check_deploy_passes_with_production_settings(tmp_path):
    env = support.outside_env(
        database_url=f"sqlite:///{tmp_path / 'db.sqlite3'}", folder=tmp_path, **PRODUCTION
    )
    result = support.manage("check", "--deploy", "--fail-level", "WARNING", env=env, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_refuses_the_dev_secret_key(tmp_path):
    env = support.outside_env(
        database_url=f"sqlite:///{tmp_path / 'db.sqlite3'}",
        folder=tmp_path,
        **{**PRODUCTION, "DJANGO_SECRET_KEY": ""},
    )
    result = support.manage("check", env=env, check=False)
    assert result.returncode != 0
    # One line that says what to do, not a traceback.
    assert result.stderr.strip() == "DJANGO_SECRET_KEY must be set when DJANGO_DEBUG is false."


def test_debug_is_off_unless_asked_for(tmp_path):
    env = support.outside_env(database_url=f"sqlite:///{tmp_path / 'db.sqlite3'}", folder=tmp_path)
    del env["DJANGO_DEBUG"]
    refused = support.manage("check", env=env, check=False)
    assert refused.returncode != 0 and "DJANGO_SECRET_KEY must be set" in refused.stderr

    env["DJANGO_SECRET_KEY"] = secrets.token_urlsafe(50)
    code = "from django.conf import settings; print(settings.DEBUG)"
    assert support.manage("shell", "-c", code, env=env).stdout.strip().splitlines()[-1] == "False"
