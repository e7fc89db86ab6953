"""The inbox API: each recipient sees and changes only its own notifications;
pages stay stable while new items arrive."""

from __future__ import annotations

import pytest

from notifications.services.events import event_accept
from notifications.services.fanout import event_fan_out_page
from tests.conftest import inbox_client

pytestmark = pytest.mark.django_db


def notify(api_key, recipients: list[str], comment: str = "hi") -> None:
    body = {
        "type": "comment.created",
        "recipients": recipients,
        "actor": "ana",
        "data": {"comment": comment},
    }
    event_fan_out_page(event_id=event_accept(api_key_id=api_key[0].id, body=body).id, page=0)


def ids(response) -> list[str]:
    return [item["id"] for item in response.json()["results"]]


def test_inbox_item_carries_the_contract_fields(api_key, producer, comment_type):
    notify(api_key, ["ana"])
    item = inbox_client(producer, "ana").get("/api/v1/inbox").json()["results"][0]
    assert {
        "id",
        "type",
        "category",
        "title",
        "body",
        "url",
        "actor",
        "data",
        "created_at",
        "read_at",
        "archived_at",
    } <= set(item)
    assert (item["type"], item["category"], item["actor"]) == ("comment.created", "social", "ana")


def test_recipient_cannot_read_or_change_anothers_notification(api_key, producer, comment_type):
    notify(api_key, ["ana"])
    notify(api_key, ["bob"])
    ana, bob = inbox_client(producer, "ana"), inbox_client(producer, "bob")
    anas_id = ids(ana.get("/api/v1/inbox"))[0]
    assert anas_id not in ids(bob.get("/api/v1/inbox?status=all"))
    for action in ("read", "unread", "archive"):
        response = bob.post(f"/api/v1/inbox/{anas_id}/{action}")
        assert response.status_code == 404
        assert response["Content-Type"].startswith("application/problem+json")
    bob.post("/api/v1/inbox/read-all")
    assert ana.get("/api/v1/inbox/unread-count").json() == {"count": 1}


def test_anothers_cursor_is_refused(api_key, producer, comment_type):
    for _ in range(3):
        notify(api_key, ["ana", "bob"])
    ana, bob = inbox_client(producer, "ana"), inbox_client(producer, "bob")
    anas_cursor = ana.get("/api/v1/inbox?limit=1").json()["next_cursor"]
    response = bob.get(f"/api/v1/inbox?cursor={anas_cursor}")
    assert response.status_code == 400
    assert "cursor" in response.json()["errors"]


def test_paging_is_stable_while_new_items_arrive(api_key, producer, comment_type):
    for n in range(5):
        notify(api_key, ["ana"], comment=f"old {n}")
    client = inbox_client(producer, "ana")
    first = client.get("/api/v1/inbox?limit=2").json()
    for n in range(3):
        notify(api_key, ["ana"], comment=f"new {n}")
    second = client.get(f"/api/v1/inbox?limit=2&cursor={first['next_cursor']}").json()
    third = client.get(f"/api/v1/inbox?limit=2&cursor={second['next_cursor']}").json()
    seen = [i["body"] for page in (first, second, third) for i in page["results"]]
    assert seen == ["old 4", "old 3", "old 2", "old 1", "old 0"]
    assert third["next_cursor"] is None


def test_read_unread_archive_and_counts(api_key, producer, comment_type):
    for _ in range(3):
        notify(api_key, ["ana"])
    client = inbox_client(producer, "ana")
    first, second, third = ids(client.get("/api/v1/inbox"))
    assert client.post(f"/api/v1/inbox/{first}/read").json()["read_at"] is not None
    assert client.get("/api/v1/inbox/unread-count").json() == {"count": 2}
    assert ids(client.get("/api/v1/inbox?status=read")) == [first]
    client.post(f"/api/v1/inbox/{first}/unread")
    client.post(f"/api/v1/inbox/{second}/archive")
    assert ids(client.get("/api/v1/inbox?status=archived")) == [second]
    assert ids(client.get("/api/v1/inbox")) == [first, third]
    assert ids(client.get("/api/v1/inbox?status=all")) == [first, second, third]
    assert client.post("/api/v1/inbox/read-all").json() == {"updated": 2}
    assert client.get("/api/v1/inbox/unread-count").json() == {"count": 0}


def test_expired_token_is_refused(producer):
    from rest_framework.test import APIClient

    from notifications.models import Recipient
    from notifications.services.tokens import recipient_token_issue

    recipient = Recipient.objects.create(external_id="old")
    token = recipient_token_issue(recipient_id=recipient.id, ttl_seconds=-1).token
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Recipient {token}")
    assert client.get("/api/v1/inbox").status_code == 401


def test_producer_key_cannot_read_an_inbox(producer):
    assert producer.get("/api/v1/inbox").status_code == 401
