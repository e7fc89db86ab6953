"""No built-in SECRET_KEY: the settings refuse to start without one; `make run` keeps its own."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from clarion_dev.devdata import secret_key_ensure

ROOT = Path(__file__).resolve().parent.parent
PRINT_KEY = "from django.conf import settings; print(settings.SECRET_KEY)"
# Two ways into the settings: a plain import (uvicorn, celery, a script) and
# manage.py, which first prepares a development environment (clarion_dev.environment).
ENTRIES = {
    "settings": ["-c", f"import django; django.setup(); {PRINT_KEY}"],
    "manage.py": ["manage.py", "shell", "-v", "0", "-c", PRINT_KEY],
}


def load_settings(env: dict[str, str], entry: str = "settings") -> subprocess.CompletedProcess[str]:
    """Load the settings in a fresh interpreter that sees only `env` (plus PATH)."""
    clean = {"PATH": os.environ["PATH"], "DJANGO_SETTINGS_MODULE": "config.settings", **env}
    return subprocess.run(
        [sys.executable, *ENTRIES[entry]],
        cwd=ROOT,
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
    )


def deployment_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A deployment's variables: servers given by URL (never started), an empty data folder."""
    return {
        "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none",
        "REDIS_URL": "redis://127.0.0.1:1/0",
        "CLARION_DEVDATA": str(tmp_path),
        **extra,
    }


@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize("debug", ["false", "true"])
def test_settings_refuse_to_load_without_a_secret_key(tmp_path, debug, entry):
    result = load_settings(deployment_env(tmp_path, DEBUG=debug), entry)
    assert result.returncode != 0
    assert "ImproperlyConfigured: SECRET_KEY is not set" in result.stderr
    assert "secrets.token_urlsafe(50)" in result.stderr


@pytest.mark.parametrize("entry", ENTRIES)
def test_settings_use_the_secret_key_given(tmp_path, entry):
    result = load_settings(deployment_env(tmp_path, SECRET_KEY="given-key"), entry)
    assert (result.returncode, result.stdout.strip()) == (0, "given-key")


@pytest.mark.parametrize("entry", ENTRIES)
def test_a_deployment_never_reads_the_development_key_file(tmp_path, entry):
    secret_key_ensure(tmp_path)
    result = load_settings(deployment_env(tmp_path), entry)
    assert result.returncode != 0 and "SECRET_KEY is not set" in result.stderr


def test_a_shell_on_the_development_servers_uses_the_key_make_run_keeps(tmp_path):
    key = secret_key_ensure(tmp_path)
    # What `eval "$(python -m clarion_dev.services env)"` gives a second shell.
    result = load_settings(deployment_env(tmp_path, CLARION_EMBEDDED="1"), "manage.py")
    assert (result.returncode, result.stdout.strip()) == (0, key)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["secret_key"]  # no server started


def test_the_settings_themselves_read_only_the_environment(tmp_path):
    """config never imports clarion_dev: no development key, and no private servers."""
    secret_key_ensure(tmp_path)
    result = load_settings(deployment_env(tmp_path, CLARION_EMBEDDED="1"))
    assert result.returncode != 0 and "SECRET_KEY is not set" in result.stderr
    env = deployment_env(tmp_path, SECRET_KEY="given-key")
    del env["DATABASE_URL"]
    result = load_settings(env)
    assert result.returncode != 0
    assert "ImproperlyConfigured: DATABASE_URL is not set" in result.stderr
    assert 'eval "$(python -m clarion_dev.services env)"' in result.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["secret_key"]


def test_the_development_key_file_is_made_once_private_and_then_reused(tmp_path):
    first = secret_key_ensure(tmp_path)
    second = secret_key_ensure(tmp_path)
    path = tmp_path / "secret_key"
    assert first == second == path.read_text().strip()
    assert len(first) >= 60
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert list(tmp_path.iterdir()) == [path]


def test_each_data_folder_gets_its_own_development_key(tmp_path):
    assert secret_key_ensure(tmp_path / "a") != secret_key_ensure(tmp_path / "b")
