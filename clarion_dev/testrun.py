"""`make test`: the test suite against real PostgreSQL and Redis.

Private servers are started when DATABASE_URL / REDIS_URL are not set; then
pytest runs with any extra arguments given (make test ARGS="-k fanout").
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from clarion_dev.environment import prepare_services

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str]) -> int:
    # pytest_env (-p in pyproject's addopts) does this too; here first, so the servers
    # start (and say so) before pytest prints anything.
    prepare_services()
    os.chdir(ROOT)
    from clarion_dev.browser import ensure_chromium

    ensure_chromium()
    import pytest

    return pytest.main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
