"""Trigger sweeps end to end: the API, a real Celery worker running the
sweep task and the fan-out, the recipient's inbox."""

from __future__ import annotations

import pytest

from config.celery import app
from tests.conftest import inbox_client
from tests.helpers import scalar, wait_for
from tests.test_saved_searches import LOAD_TYPE

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.pipeline]


@pytest.fixture
def load_type(transactional_db):
    from notifications.selectors import notification_type_cache_clear
    from notifications.services.types import notification_type_put

    notification_type_cache_clear()
    return notification_type_put(key="load.match", body=LOAD_TYPE)[0]


def test_a_posted_item_matching_a_saved_search_reaches_the_inbox_through_the_worker(
    worker, clean_redis, producer, load_type
):
    trigger = producer.put(
        "/api/v1/recipients/carrier-7/triggers/dallas-vans",
        {
            "kind": "load",
            "match": {"origin": "Dallas, TX", "equipment": ["van"], "rate": {"gte": 2}},
            "type": "load.match",
        },
        format="json",
    )
    posted = producer.post(
        "/api/v1/items",
        {
            "items": [
                {
                    "kind": "load",
                    "id": "L-1",
                    "attributes": {"origin": "Dallas, TX", "equipment": "van", "rate": 2.4},
                },
                {
                    "kind": "load",
                    "id": "L-2",
                    "attributes": {"origin": "Dallas, TX", "equipment": "van", "rate": 1.0},
                },
            ]
        },
        format="json",
    )
    assert (trigger.status_code, posted.status_code) == (201, 202)

    app.send_task("clarion.triggers.saved_searches_sweep", queue="normal")
    app.send_task("clarion.triggers.saved_searches_sweep", queue="normal")  # twice: still once

    inbox = inbox_client(producer, "carrier-7")
    items = wait_for(
        lambda: inbox.get("/api/v1/inbox").json()["results"],
        what="the match to reach the inbox",
    )
    wait_for(
        lambda: (
            scalar("SELECT count(*) FROM notifications_sweeprun WHERE name = 'saved searches'") >= 1
        ),
        what="the sweep's runs to be recorded",
    )
    assert [(i["title"], i["body"]) for i in items] == [("Dallas, TX", "2.4")]
    assert scalar("SELECT count(*) FROM notifications_notification") == 1
