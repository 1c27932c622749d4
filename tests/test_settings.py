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
    assert "DJANGO_SECRET_KEY must be set" in result.stderr
