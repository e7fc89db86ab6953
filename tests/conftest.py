from __future__ import annotations

import os
import time

import psycopg
import pytest
import redis
from django.conf import settings
from django.db import OperationalError
from rest_framework.test import APIClient

from notifications.api.auth import api_key_create
from notifications.selectors import notification_type_cache_clear
from notifications.services.types import notification_type_put
from tests.workers import WorkerProcess, database_url_for

COMMENT_TYPE = {
    "category": "social",
    "priority": "normal",
    "channels": ["in_app", "email"],
    "templates": {
        "in_app": {
            "en": {
                "title": "{{ actor }} commented",
                "body": "{{ comment }}",
                "url": "/posts/{{ post_id }}",
            }
        },
        "email": {"en": {"subject": "{{ actor }} commented", "text": "{{ comment }}"}},
    },
}


@pytest.fixture(autouse=True, scope="session")
def _flush_survives_deadlocks():
    """The TRUNCATE that empties the database after a transactional test can
    meet a worker still finishing that test's last page, each holding a table
    the other wants; PostgreSQL then aborts one of them. The worker retries its
    own; the flush is retried here instead of failing the next test's setup."""
    from django.db.backends.postgresql.operations import DatabaseOperations

    original = DatabaseOperations.execute_sql_flush

    def execute_sql_flush(self, sql_list):
        for attempt in range(5):
            try:
                return original(self, sql_list)
            except OperationalError as error:
                if attempt == 4 or not isinstance(error.__cause__, psycopg.errors.DeadlockDetected):
                    raise
                time.sleep(0.2)

    DatabaseOperations.execute_sql_flush = execute_sql_flush
    yield
    DatabaseOperations.execute_sql_flush = original


@pytest.fixture
def redis_client():
    client = redis.Redis.from_url(settings.REDIS_URL)
    yield client
    client.close()


@pytest.fixture
def clean_redis(redis_client):
    """The test Redis db, emptied (queues included) before the test."""
    redis_client.flushdb()
    return redis_client


@pytest.fixture
def api_key(db):
    key, raw = api_key_create(name="test producer")
    return key, raw


@pytest.fixture
def producer(api_key):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key[1]}")
    return client


@pytest.fixture
def comment_type(db):
    notification_type_cache_clear()
    notification_type, _ = notification_type_put(key="comment.created", body=COMMENT_TYPE)
    return notification_type


@pytest.fixture
def private_redis():
    """A Redis server of the test's own (persistent, restartable: tests/redis_server.py)."""
    from tests.redis_server import RedisServer

    server = RedisServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def social_type(db, clean_redis):
    """comment.created on in-app, email and SMS (tests/test_dispatch.py's TYPE)."""
    from tests.test_dispatch import TYPE

    notification_type_cache_clear()
    return notification_type_put(key="comment.created", body=TYPE)[0]


@pytest.fixture
def chain(settings, clean_redis):
    """Configure the email channel's provider chain (tests.providers classes)
    with small breaker and retry limits; the scripted providers start empty."""
    from tests.providers import PrimaryProvider, SecondaryProvider

    PrimaryProvider.reset()
    SecondaryProvider.reset()

    def configure(*providers: str, **overrides) -> None:
        settings.CLARION = {
            **settings.CLARION,
            "PROVIDERS": [("email", p) for p in providers],
            "BREAKER_MIN_CALLS": 3,
            "BREAKER_FAILURE_RATIO": 0.5,
            "BREAKER_COOLDOWN_SECONDS": 30.0,
            "DELIVERY_MAX_ATTEMPTS": 3,
            **overrides,
        }

    return configure


def inbox_client(producer: APIClient, external_id: str) -> APIClient:
    token = producer.post(f"/api/v1/recipients/{external_id}/token").json()["token"]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Recipient {token}")
    return client


@pytest.fixture(scope="session")
def worker(django_db_setup, django_db_blocker):
    """One real Celery worker for the session, on the test database."""
    from django.db import connection

    process = WorkerProcess(
        database_url=database_url_for(connection.settings_dict),
        redis_url=settings.REDIS_URL,
        extra_env={"CLARION_RELAY_STALE_SECONDS": "600"},
    )
    redis.Redis.from_url(settings.REDIS_URL).flushdb()
    process.start()
    yield process
    process.stop()
    if os.environ.get("CLARION_KEEP_WORKER_LOG"):
        print(process.log_text())


@pytest.fixture(scope="session")
def asgi_server(django_db_setup, django_db_blocker):
    """The ASGI server (HTTP + websockets) on the test database, for the session."""
    from django.db import connection

    from tests.servers import AsgiServer

    server = AsgiServer(
        database_url=database_url_for(connection.settings_dict), redis_url=settings.REDIS_URL
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def demo_server(django_db_setup, django_db_blocker):
    """An ASGI server with DEBUG on, the only way /demo/ (the bell demo page) is served."""
    from django.db import connection

    from tests.servers import AsgiServer

    server = AsgiServer(
        database_url=database_url_for(connection.settings_dict),
        redis_url=settings.REDIS_URL,
        debug=True,
    )
    server.start()
    yield server
    server.stop()
