"""Flower started as docs/operations.md says, against the session's real
worker and broker: it switches the worker's task events on and lists the
tasks the worker runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

import pytest
from django.conf import settings

from config.celery import app
from tests.helpers import wait_for
from tests.redis_server import free_port

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.pipeline]

TASK = "clarion.maintenance.purge_idempotency_keys"  # harmless to run any number of times


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


@pytest.fixture
def flower(worker) -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            f"--broker={settings.REDIS_URL}",
            "flower",
            "--address=127.0.0.1",
            f"--port={port}",
        ],
        # Flower's HTTP API answers only with authentication set up, or this.
        env={**os.environ, "FLOWER_UNAUTHENTICATED_API": "true"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"

    def answering() -> bool:
        try:
            return get_json(f"{base}/api/workers") is not None
        except OSError:
            return False

    try:
        wait_for(answering, timeout=30, interval=0.2, what="Flower to answer")
        yield base
    finally:
        process.terminate()
        process.wait(timeout=10)
        app.control.disable_events()  # the later tests' worker as it was


def test_flower_lists_a_task_the_worker_ran_once_events_are_on(flower):
    sent: list[str] = []
    last_send = 0.0

    def flower_saw_a_task() -> bool:
        # Flower asks the workers to send events shortly after it starts; a
        # task sent before the worker heard that leaves no event, so send
        # another every 2 s until one shows.
        nonlocal last_send
        if time.monotonic() - last_send > 2:
            sent.append(app.send_task(TASK, queue="low").id)
            last_send = time.monotonic()
        tasks = get_json(f"{flower}/api/tasks?limit=100")
        return any(
            task_id in sent and task.get("state") == "SUCCESS" for task_id, task in tasks.items()
        )

    wait_for(flower_saw_a_task, timeout=60, interval=0.5, what="Flower to list a finished task")

    workers = get_json(f"{flower}/api/workers?refresh=1")
    assert workers, "Flower lists the worker"
