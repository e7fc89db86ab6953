"""Loaded with `-p clarion_dev.pytest_env` before Django is set up, so the test
process and the workers it starts agree on the services:

- DATABASE_URL / REDIS_URL from the environment, else the private servers
  (clarion_dev.environment; the settings themselves only read the two URLs);
- the suite's own SECRET_KEY unless one is given, never the development key
  `make run` keeps;
- Redis database CLARION_TEST_REDIS_DB (default 15) for the tests, so a
  suite run never touches the data of a development or production Redis db.
"""

from __future__ import annotations

import os

from clarion_dev.environment import prepare_services
from config.env import redis_url_with_db

prepare_services()
os.environ.setdefault("SECRET_KEY", "clarion-test-suite-key-not-secret")
os.environ["REDIS_URL"] = redis_url_with_db(
    os.environ["REDIS_URL"], int(os.environ.get("CLARION_TEST_REDIS_DB", "15"))
)
