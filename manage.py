#!/usr/bin/env python
"""Django's command-line utility for Clarion."""

import os
import sys


def prepare_development_environment() -> None:
    """On a development machine: the private PostgreSQL and Redis when DATABASE_URL /
    REDIS_URL are not set, and the SECRET_KEY `make run` keeps (clarion_dev.environment).

    A production image may lack clarion_dev or its `embedded` extra; then nothing is
    prepared and the settings say what to set.
    """
    try:
        from clarion_dev.environment import prepare
    except ImportError:
        return
    try:
        prepare()
    except ImportError:
        pass  # no `embedded` extra: the settings ask for DATABASE_URL / REDIS_URL


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    prepare_development_environment()
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
