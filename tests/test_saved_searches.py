"""Saved-search triggers: items posted by producers, triggers per recipient,
and the sweep that turns matches into events — set-based and exactly once."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from notifications.models import Event, Recipient, SweepRun
from notifications.selectors import notification_type_cache_clear
from notifications.services.sweep_runs import SweepTally, sweep_run
from notifications.services.types import notification_type_put
from triggers.models import Item, Trigger, TriggerFire
from triggers.services.items import items_put, parse_items
from triggers.services.saved_search_sweep import saved_searches_sweep
from triggers.services.saved_searches import trigger_put

LOAD_TYPE = {
    "category": "loads",
    "priority": "normal",
    "channels": ["in_app"],
    "templates": {"in_app": {"en": {"title": "{{ origin }}", "body": "{{ rate }}"}}},
}
DALLAS = {"origin": "Dallas, TX", "equipment": ["van", "reefer"], "rate": {"gte": 2.0}}


@pytest.fixture
def load_type(db):
    notification_type_cache_clear()
    return notification_type_put(key="load.match", body=LOAD_TYPE)[0]


def put_items(*bodies: dict):
    return items_put(parse_items({"items": list(bodies)}))


def load(item_id: str, **attributes) -> dict:
    return {"kind": "load", "id": item_id, "attributes": attributes}


def watch(recipient: str, key: str = "dallas", match: dict | None = None, on=("created",)):
    return trigger_put(
        external_id=recipient,
        key=key,
        body={"kind": "load", "match": match or DALLAS, "on": list(on), "type": "load.match"},
    )


def sweep() -> SweepTally:
    return saved_searches_sweep(SweepTally())


def events_of(recipient: str) -> list[Event]:
    return list(
        Event.objects.filter(
            recipients={"ids": [recipient], "topics": []}, type__key="load.match"
        ).order_by("id")
    )


# --- the API -----------------------------------------------------------------


@pytest.mark.django_db
def test_a_trigger_is_created_replaced_listed_and_deleted(producer, load_type):
    body = {"kind": "load", "match": DALLAS, "on": ["created"], "type": "load.match"}
    url = "/api/v1/recipients/carrier-1/triggers/dallas"

    created = producer.put(url, body, format="json")
    replaced = producer.put(url, {**body, "on": ["created", "updated"]}, format="json")
    listed = producer.get("/api/v1/recipients/carrier-1/triggers")
    deleted = producer.delete(url)
    again = producer.delete(url)

    assert (created.status_code, replaced.status_code) == (201, 200)
    assert replaced.json()["on"] == ["created", "updated"]
    assert [t["key"] for t in listed.json()["results"]] == ["dallas"]
    assert listed.json()["results"][0]["match"] == DALLAS
    assert (deleted.status_code, again.status_code) == (204, 404)


@pytest.mark.django_db
def test_items_are_accepted_one_or_a_batch_and_an_identical_post_is_unchanged(producer, load_type):
    one = producer.post("/api/v1/items", load("L-1", origin="Dallas, TX"), format="json")
    batch = producer.post(
        "/api/v1/items",
        {"items": [load("L-1", origin="Dallas, TX"), load("L-2", origin="Austin, TX")]},
        format="json",
    )

    assert one.status_code == 202 and one.json()["created"] == 1
    assert batch.json() | {} == {"status": "accepted", "created": 1, "updated": 0, "unchanged": 1}
    assert Item.objects.get(external_id="L-1").version == 0


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("match", "field"),
    [
        ({"origin": None}, "match.origin"),
        ({"origin": {"near": "Dallas"}}, "match.origin"),
        ({"rate": {"gte": "2"}}, "match.rate.gte"),
        ({"rate": {"gte": 10**20}}, "match.rate.gte"),
        ({"equipment": []}, "match.equipment"),
        ({"equipment": list(range(101))}, "match.equipment"),
        ({"equipment": [["van"]]}, "match.equipment"),
        ({"x" * 65: 1}, "match['" + "x" * 64 + "']"),
        ({"origin": "x" * 257}, "match.origin"),
        ({"id": 7}, "match.id"),
        ("Dallas", "match"),
        ({f"a{i}": 1 for i in range(33)}, "match"),
    ],
)
def test_a_trigger_with_a_bad_match_is_refused_naming_the_field(producer, load_type, match, field):
    response = producer.put(
        "/api/v1/recipients/c1/triggers/t1",
        {"kind": "load", "match": match, "type": "load.match"},
        format="json",
    )

    assert response.status_code == 422, response.content
    assert response["Content-Type"] == "application/problem+json"
    assert field in response.json()["errors"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"kind": "load", "match": {}, "type": "no.such.type"}, "type"),
        ({"kind": "lo ad", "match": {}, "type": "load.match"}, "kind"),
        ({"kind": "load", "match": {}, "type": "load.match", "on": ["deleted"]}, "on"),
        ({"kind": "load", "match": {}, "type": "load.match", "extra": 1}, "extra"),
        ({"kind": "load", "type": "load.match"}, "match"),
    ],
)
def test_a_trigger_with_bad_fields_is_refused_naming_them(producer, load_type, body, field):
    response = producer.put("/api/v1/recipients/c1/triggers/t1", body, format="json")

    assert response.status_code == 422
    assert field in response.json()["errors"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"kind": "load"}, 422, "id"),
        ({"kind": "load", "id": "a b"}, 422, "id"),
        ({"kind": "x" * 65, "id": "L"}, 422, "kind"),
        ({"kind": "load", "id": "L", "attributes": [1]}, 422, "attributes"),
        ({"kind": "load", "id": "L", "attributes": {"a": "x" * 20_000}}, 413, "attributes"),
        ({"kind": "load", "id": "L", "expires_at": "tomorrow"}, 422, "expires_at"),
        ({"kind": "load", "id": "L", "expires_at": "2026-13-45T00:00:00Z"}, 422, "expires_at"),
        ({"items": [{"kind": "load", "id": "ok"}, {"kind": 5, "id": "L"}]}, 422, "items[1].kind"),
        ({"items": []}, 422, "items"),
        ({"items": [{"kind": "load", "id": f"L{i}"} for i in range(1001)]}, 413, "items"),
        ({"items": [], "more": 1}, 422, "more"),
        ([1, 2], 422, "non_field_errors"),
    ],
)
def test_a_bad_item_is_refused_naming_the_field_and_nothing_is_written(
    producer, load_type, body, status, field
):
    response = producer.post("/api/v1/items", body, format="json")

    assert response.status_code == status, response.content
    assert field in response.json()["errors"]
    assert not Item.objects.exists()


@pytest.mark.django_db
def test_an_item_holding_a_nul_character_is_a_400_not_a_500(producer, load_type):
    response = producer.post(
        "/api/v1/items",
        b'{"kind": "load", "id": "L1", "attributes": {"a": "x\\u0000y"}}',
        content_type="application/json",
    )

    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"


@pytest.mark.django_db
def test_a_hostile_trigger_key_or_recipient_id_is_refused(producer, load_type):
    body = {"kind": "load", "match": {}, "type": "load.match"}
    long_key = producer.put(f"/api/v1/recipients/c1/triggers/{'k' * 129}", body, format="json")
    control = producer.put("/api/v1/recipients/c1/triggers/a%01b", body, format="json")

    assert (long_key.status_code, control.status_code) == (422, 422)
    assert not Trigger.objects.exists()


@pytest.mark.django_db
def test_a_recipient_has_at_most_the_configured_number_of_triggers(producer, load_type, settings):
    settings.CLARION = {**settings.CLARION, "MAX_TRIGGERS_PER_RECIPIENT": 2}
    body = {"kind": "load", "match": {}, "type": "load.match"}
    answers = [
        producer.put(f"/api/v1/recipients/c1/triggers/t{i}", body, format="json").status_code
        for i in range(3)
    ]
    replaced = producer.put("/api/v1/recipients/c1/triggers/t0", body, format="json")

    assert answers == [201, 201, 409]
    assert replaced.status_code == 200


# --- the sweep ---------------------------------------------------------------


@pytest.mark.django_db
def test_a_matching_new_item_becomes_one_event_with_its_attributes(load_type):
    watch("carrier-1")
    put_items(load("L-1", origin="Dallas, TX", equipment="van", rate=2.5))

    tally = sweep()

    [event] = events_of("carrier-1")
    assert event.data == {
        "origin": "Dallas, TX",
        "equipment": "van",
        "rate": 2.5,
        "item_id": "L-1",
        "kind": "load",
        "trigger": "dallas",
    }
    assert (event.status, event.priority) == ("accepted", "normal")
    assert (tally.examined, tally.produced) == (1, 1)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("attributes", "fires"),
    [
        ({"origin": "Dallas, TX", "equipment": "reefer", "rate": 2.0}, True),
        ({"origin": "Dallas, TX", "equipment": ["flatbed", "van"], "rate": 3}, True),
        ({"origin": "Dallas, TX", "equipment": "flatbed", "rate": 3}, False),
        ({"origin": "Dallas, TX", "equipment": "van", "rate": 1.99}, False),
        ({"origin": "Dallas, TX", "equipment": "van", "rate": "3"}, False),
        ({"origin": "Dallas, TX", "equipment": "van"}, False),
        ({"origin": "Austin, TX", "equipment": "van", "rate": 3}, False),
        ({"origin": ["Dallas, TX"], "equipment": "van", "rate": 3}, True),
    ],
)
def test_equality_any_of_and_ranges_decide_a_match(load_type, attributes, fires):
    watch("carrier-1")
    put_items(load("L-1", **attributes))

    sweep()

    assert len(events_of("carrier-1")) == (1 if fires else 0)


@pytest.mark.django_db
def test_a_trigger_of_ranges_only_is_compared_with_every_item_of_its_kind(load_type):
    watch("carrier-1", match={"rate": {"gt": 2, "lte": 3}})
    put_items(
        load("L-1", rate=2.5),
        load("L-2", rate=3.5),
        {"kind": "job", "id": "J", "attributes": {"rate": 2.5}},
    )

    sweep()

    assert [e.data["item_id"] for e in events_of("carrier-1")] == ["L-1"]


@pytest.mark.django_db
def test_a_second_sweep_over_the_same_items_sends_nothing_again(load_type):
    watch("carrier-1")
    put_items(load("L-1", origin="Dallas, TX", equipment="van", rate=2.5))
    sweep()
    from triggers.models import SweepCursor

    SweepCursor.objects.all().delete()  # as if the cursor's move were lost

    tally = sweep()

    assert len(events_of("carrier-1")) == 1
    assert (tally.examined, tally.produced) == (1, 0)


@pytest.mark.django_db
def test_a_favourite_fires_once_per_change_and_not_for_an_identical_post(load_type):
    watch("carrier-1", key="fav", match={"id": "L-7"}, on=["updated"])
    put_items(load("L-7", rate=2.0))
    sweep()  # created: a favourite hears only of updates
    put_items(load("L-7", rate=2.2))
    sweep()
    put_items(load("L-7", rate=2.2))  # the same again: no change
    sweep()
    put_items(load("L-7", rate=2.4))
    sweep()

    assert [e.data["rate"] for e in events_of("carrier-1")] == [2.2, 2.4]


@pytest.mark.django_db
def test_an_item_created_and_updated_between_sweeps_fires_once_as_created(load_type):
    watch("carrier-1", on=["created", "updated"])
    put_items(load("L-1", origin="Dallas, TX", equipment="van", rate=2.5))
    put_items(load("L-1", origin="Dallas, TX", equipment="van", rate=2.6))

    sweep()

    [event] = events_of("carrier-1")
    assert event.data["rate"] == 2.6
    assert TriggerFire.objects.get().item_version == 0


@pytest.mark.django_db
def test_an_expired_item_or_a_retired_type_fires_nothing(load_type):
    from django.utils import timezone

    watch("carrier-1")
    put_items(
        {
            "kind": "load",
            "id": "old",
            "attributes": {"origin": "Dallas, TX", "equipment": "van", "rate": 3},
            "expires_at": "2020-01-01T00:00:00Z",
        }
    )
    sweep()
    type(load_type).objects.filter(id=load_type.id).update(retired_at=timezone.now())
    put_items(load("L-2", origin="Dallas, TX", equipment="van", rate=3))
    sweep()

    assert events_of("carrier-1") == []


@pytest.mark.django_db
def test_each_recipient_whose_trigger_matches_gets_its_own_event(load_type):
    for i in range(5):
        watch(f"carrier-{i}")
    watch("carrier-9", match={"origin": "Austin, TX"})
    put_items(load("L-1", origin="Dallas, TX", equipment="van", rate=2.5))

    sweep()

    assert {e.recipients["ids"][0] for e in Event.objects.filter(type__key="load.match")} == {
        f"carrier-{i}" for i in range(5)
    }


def _populate(triggers: int, items: int) -> None:
    recipients = Recipient.objects.bulk_create(
        Recipient(external_id=f"r{len(Recipient.objects.all())}-{i}") for i in range(triggers)
    )
    for i, recipient in enumerate(recipients):
        watch(
            recipient.external_id,
            match={"origin": f"city-{i % 50}", "rate": {"gte": 1}},
        )
    put_items(*(load(f"I{i}-{items}", origin=f"city-{i % 50}", rate=2) for i in range(items)))


@pytest.mark.django_db
def test_a_sweep_over_ten_times_more_triggers_and_items_issues_the_same_statements(load_type):
    _populate(triggers=20, items=10)
    with CaptureQueriesContext(connection) as small:
        small_tally = sweep()
    _populate(triggers=200, items=100)
    with CaptureQueriesContext(connection) as large:
        large_tally = sweep()

    assert small_tally.produced > 0 and large_tally.produced > 10 * small_tally.produced
    assert len(large.captured_queries) == len(small.captured_queries)


@pytest.mark.django_db
def test_a_sweep_run_is_recorded_with_what_it_examined_and_produced(producer, load_type):
    watch("carrier-1")
    put_items(load("L-1", origin="Dallas, TX", equipment="van", rate=2.5))

    with sweep_run("saved searches") as tally:
        saved_searches_sweep(tally)
    listed = producer.get("/api/v1/sweeps?name=saved%20searches")

    [run] = SweepRun.objects.filter(name="saved searches")
    assert (run.rows_examined, run.events_produced, run.status) == (1, 1, "ok")
    [shown] = listed.json()["results"]
    assert shown["events_produced"] == 1 and shown["duration_ms"] >= 0


@pytest.mark.django_db
def test_a_failed_sweep_run_is_recorded_as_failed(load_type):
    with pytest.raises(RuntimeError):
        with sweep_run("broken sweep"):
            raise RuntimeError("boom")

    run = SweepRun.objects.get(name="broken sweep")
    assert run.status == "failed" and "boom" in run.error


@pytest.mark.django_db
@pytest.mark.parametrize("limit", ["0", "abc", "9" * 5000, "١٢", "-1"])
def test_a_bad_sweeps_limit_is_a_400(producer, limit):
    response = producer.get(f"/api/v1/sweeps?limit={limit}")

    assert response.status_code == 400
    assert "limit" in response.json()["errors"]


@pytest.mark.django_db
def test_erasing_a_recipient_erases_its_triggers_and_the_export_lists_them(producer, load_type):
    watch("carrier-1")
    put_items(load("L-1", origin="Dallas, TX", equipment="van", rate=2.5))
    sweep()

    exported = producer.get("/api/v1/recipients/carrier-1/export").json()
    erased = producer.delete("/api/v1/recipients/carrier-1")

    assert [t["key"] for t in exported["triggers"]] == ["dallas"]
    assert erased.status_code == 204, erased.content
    assert not Trigger.objects.exists() and not TriggerFire.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["a%00b", "x" * 65, "%1F"])
def test_a_bad_sweeps_name_is_a_400(producer, name):
    response = producer.get(f"/api/v1/sweeps?name={name}")

    assert response.status_code == 400
    assert "name" in response.json()["errors"]


@pytest.mark.django_db
def test_three_hundred_matches_in_an_hour_become_one_digest_not_three_hundred_emails(db):
    from datetime import timedelta

    from django.utils import timezone

    from notifications.models import Delivery, Notification
    from notifications.services.digests import digests_flush_due
    from notifications.services.fanout import event_fan_out_page

    notification_type_cache_clear()
    notification_type_put(
        key="load.match",
        body={
            "category": "loads",
            "channels": ["in_app", "email"],
            "digest": {"window_seconds": 3600, "max_batch": 500},
            "templates": {
                "in_app": {"en": {"title": "{{ digest.count }} new loads", "body": "x"}},
                "email": {"en": {"subject": "{{ digest.count }} new loads", "text": "x"}},
            },
        },
    )
    Recipient.objects.create(external_id="carrier-1", email="c1@example.com")
    watch("carrier-1", match={"origin": "Dallas, TX"})
    put_items(*(load(f"L-{i}", origin="Dallas, TX") for i in range(300)))

    assert sweep().produced == 300
    for event in events_of("carrier-1"):
        event_fan_out_page(event_id=str(event.id), page=0)
    digests_flush_due(now=timezone.now() + timedelta(hours=2))

    [notification] = Notification.objects.filter(recipient__external_id="carrier-1")
    assert notification.title == "300 new loads"
    assert Delivery.objects.filter(channel="email").count() == 1


@pytest.mark.django_db
def test_with_item_kinds_configured_an_unknown_kind_is_refused(producer, load_type, settings):
    settings.CLARION = {**settings.CLARION, "ITEM_KINDS": ["load"]}
    item = producer.post("/api/v1/items", {"kind": "truck", "id": "T1"}, format="json")
    trigger = producer.put(
        "/api/v1/recipients/c1/triggers/t1",
        {"kind": "truck", "match": {}, "type": "load.match"},
        format="json",
    )
    known = producer.post("/api/v1/items", {"kind": "load", "id": "L1"}, format="json")

    assert (item.status_code, trigger.status_code, known.status_code) == (422, 422, 202)
    assert "kind" in item.json()["errors"] and "kind" in trigger.json()["errors"]


@pytest.mark.django_db
def test_the_pipelines_own_sweeps_record_their_runs_too(producer, clean_redis):
    from delivery.tasks import dispatch_due, status_webhooks_send
    from notifications.services import sweep_runs
    from notifications.tasks import flush_due_digests, relay

    sweep_runs._idle_recorded.clear()  # idle runs are recorded once a minute per process
    for task in (relay, flush_due_digests, dispatch_due, status_webhooks_send):
        task()

    names = {r["name"] for r in producer.get("/api/v1/sweeps").json()["results"]}
    assert {"event relay", "digest flush", "delivery dispatch", "status webhooks"} <= names
