"""Loaded with `-p clarion_dev.pytest_env` before Django is set up, so the test
process and the workers it starts agree on the services:

- DATABASE_URL / REDIS_URL from the environment, else the private servers;
- Redis database CLARION_TEST_REDIS_DB (default 15) for the tests, so a
  suite run never touches the data of a development or production Redis db.
"""
from __future__ import annotations

import os
from urllib.parse import urlsplit, urlunsplit

from config.env import service_urls


def redis_url_with_db(url: str, db: int) -> str:
    parts = urlsplit(url)
    if parts.scheme == "unix":
        query = "&".join(p for p in parts.query.split("&") if p and not p.startswith("db="))
        return urlunsplit(parts._replace(query=(query + "&" if query else "") + f"db={db}"))
    return urlunsplit(parts._replace(path=f"/{db}"))


_database_url, _redis_url = service_urls()
os.environ.setdefault("SECRET_KEY", "clarion-test-suite-key-not-secret")
os.environ["REDIS_URL"] = redis_url_with_db(_redis_url, int(os.environ.get("CLARION_TEST_REDIS_DB", "15")))
