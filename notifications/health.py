"""/healthz and /readyz."""

from __future__ import annotations

import redis
from celery import current_app as app
from django.conf import settings
from django.db import connection
from django.http import JsonResponse


def healthz(request):
    return JsonResponse({"status": "ok"})


def _check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _check_redis() -> None:
    client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.ping()
    finally:
        client.close()


def _check_broker() -> None:
    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=2)


def _check_channel_layer() -> None:
    hosts = settings.CHANNEL_LAYERS["default"]["CONFIG"]["hosts"]
    url = hosts[0] if isinstance(hosts[0], str) else hosts[0]["address"]
    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.ping()
    finally:
        client.close()


CHECKS = {
    "database": _check_database,
    "redis": _check_redis,
    "broker": _check_broker,
    "channel_layer": _check_channel_layer,
}


def readyz(request):
    results = {}
    for name, check in CHECKS.items():
        try:
            check()
            results[name] = "ok"
        except Exception as exc:  # noqa: BLE001 - any failure means not ready
            results[name] = f"unreachable: {type(exc).__name__}: {exc}"[:300]
    failing = [name for name, value in results.items() if value != "ok"]
    status = 503 if failing else 200
    body = {"status": "ok" if not failing else "unavailable", "checks": results}
    if failing:
        body["detail"] = "Not reachable: " + ", ".join(failing)
    return JsonResponse(body, status=status)
