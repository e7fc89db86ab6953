"""What a development process puts into its environment before the settings load.

The settings only read the environment (config/env.py): without DATABASE_URL,
REDIS_URL and SECRET_KEY they stop with ImproperlyConfigured. The development
entry points provide them first:

- ``make run`` (clarion_dev.run) and ``make test`` (clarion_dev.testrun, and the
  pytest plugin clarion_dev.pytest_env) call :func:`prepare_services` and give
  every process they start its SECRET_KEY;
- ``manage.py`` calls :func:`prepare`, so ``python manage.py ...`` in a second
  shell finds the servers of ``make run`` and the key it keeps;
- any other command (celery, uvicorn) takes the URLs from
  ``eval "$(python -m clarion_dev.services env)"`` and needs SECRET_KEY set.

The dependency goes one way: clarion_dev imports config; config never imports
clarion_dev, which a production image may not even contain. This module itself
imports nothing beyond the standard library until a private server is needed:
manage.py imports it in every process, production ones included.
"""

from __future__ import annotations

import os

from clarion_dev.devdata import DEVDATA, secret_key_read


def on_development_servers() -> bool:
    """Whether this process runs on the private servers of ``make run`` / ``make test``:
    DATABASE_URL or REDIS_URL missing (prepare_services() starts them), or CLARION_EMBEDDED
    set (clarion_dev.services hands out their URLs with it)."""
    return bool(os.environ.get("CLARION_EMBEDDED")) or not (
        os.environ.get("DATABASE_URL") and os.environ.get("REDIS_URL")
    )


def prepare_services() -> None:
    """Put DATABASE_URL and REDIS_URL into os.environ: the private servers' for those not set.

    Starts (or finds) the private PostgreSQL / Redis of DEVDATA for a URL that is
    missing or empty, and then also sets CLARION_EMBEDDED. When both URLs are
    given, nothing is started and nothing imported. Without the ``embedded``
    extra this raises ImportError, whose message says what to install or set.
    """
    if os.environ.get("DATABASE_URL") and os.environ.get("REDIS_URL"):
        return
    from clarion_dev import services

    os.environ.update(services.ensure_services())


def prepare() -> None:
    """:func:`prepare_services`, then the development SECRET_KEY if none is set.

    The key ``make run`` keeps in DEVDATA/secret_key goes only to a process on
    the development servers (:func:`on_development_servers`), never to one given
    its own DATABASE_URL and REDIS_URL without CLARION_EMBEDDED (a deployment).
    It is read, not made: before the first ``make run`` there is none, and the
    settings ask for a SECRET_KEY.
    """
    prepare_services()
    if not os.environ.get("SECRET_KEY") and on_development_servers():
        key = secret_key_read(DEVDATA)
        if key:
            os.environ["SECRET_KEY"] = key
