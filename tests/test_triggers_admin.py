"""The admin shows triggers, items, reminders, broadcasts and sweep runs,
read-only (they are written through the API, which keeps anchors and
schedules in step)."""

from __future__ import annotations

import pytest

from notifications.services.sweep_runs import sweep_run
from tests.test_broadcasts import BODY as BROADCAST
from tests.test_broadcasts import news_type as news_type  # noqa: F401, PLC0414 (fixture)
from tests.test_reminders import body as reminder_body
from tests.test_reminders import deadline_type as deadline_type  # noqa: F401, PLC0414 (fixture)
from tests.test_saved_searches import load, put_items, watch
from tests.test_saved_searches import load_type as load_type  # noqa: F401, PLC0414 (fixture)
from triggers.models import Broadcast, Item, Reminder, Trigger
from triggers.services.broadcasts import broadcast_put
from triggers.services.reminders import reminder_put


@pytest.fixture
def everything(load_type, deadline_type, news_type):  # noqa: F811
    watch("carrier-1")
    put_items(load("L-1", origin="Dallas, TX"))
    reminder_put(api_key_id=None, key="invoice-42", body=reminder_body())
    broadcast_put(api_key_id=None, key="morning", body=BROADCAST)
    with sweep_run("saved searches") as tally:
        tally.examined = 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    "model",
    [
        "triggers/trigger",
        "triggers/item",
        "triggers/reminder",
        "triggers/broadcast",
        "notifications/sweeprun",
    ],
)
def test_each_list_and_detail_page_renders_without_an_add_button(admin_client, everything, model):
    listing = admin_client.get(f"/admin/{model}/")

    assert listing.status_code == 200
    assert f"/admin/{model}/add/".encode() not in listing.content
    assert admin_client.get(f"/admin/{model}/add/").status_code == 403


@pytest.mark.django_db
def test_detail_pages_show_anchors_offsets_and_the_beat_entry(admin_client, everything):
    trigger = admin_client.get(f"/admin/triggers/trigger/{Trigger.objects.get().id}/change/")
    reminder = admin_client.get(f"/admin/triggers/reminder/{Reminder.objects.get().id}/change/")
    item = admin_client.get(f"/admin/triggers/item/{Item.objects.get().id}/change/")
    listing = admin_client.get("/admin/triggers/broadcast/")

    assert trigger.status_code == 200 and b"anchors" in trigger.content
    assert reminder.status_code == 200 and b"86400" in reminder.content
    assert item.status_code == 200
    task_id = Broadcast.objects.get().periodic_task_id
    assert f"/admin/django_celery_beat/periodictask/{task_id}/change/".encode() in listing.content
