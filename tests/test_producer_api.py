"""Recipients, topics and notification types through the producer API."""

from __future__ import annotations

import json

import pytest
from django.core.management import call_command

from notifications.models import Notification, Recipient
from notifications.services.events import event_accept
from notifications.services.fanout import event_fan_out_page

pytestmark = pytest.mark.django_db


def test_put_creates_then_replaces_a_profile(producer):
    created = producer.put(
        "/api/v1/recipients/ana", {"email": "ana@example.com", "locale": "pt-BR"}, format="json"
    )
    assert created.status_code == 201
    replaced = producer.put("/api/v1/recipients/ana", {"timezone": "Europe/Lisbon"}, format="json")
    assert replaced.status_code == 200
    profile = producer.get("/api/v1/recipients/ana").json()
    assert (profile["email"], profile["locale"], profile["timezone"]) == ("", "", "Europe/Lisbon")


def test_unknown_recipient_is_404(producer):
    assert producer.get("/api/v1/recipients/ghost").status_code == 404
    assert producer.delete("/api/v1/recipients/ghost").status_code == 404


def test_erase_removes_the_recipient_and_its_notifications(producer, api_key, comment_type):
    producer.put("/api/v1/recipients/ana", {"email": "ana@example.com"}, format="json")
    producer.put("/api/v1/topics/t/subscribers", {"add": ["ana"]}, format="json")
    event_fan_out_page(
        event_id=event_accept(
            api_key_id=api_key[0].id, body={"type": "comment.created", "recipients": ["ana"]}
        ).id,
        page=0,
    )
    assert producer.delete("/api/v1/recipients/ana").status_code == 204
    assert not Recipient.objects.filter(external_id="ana").exists()
    assert Notification.objects.count() == 0


def test_export_holds_profile_topics_notifications_and_deliveries(producer, api_key, comment_type):
    producer.put("/api/v1/recipients/ana", {"email": "ana@example.com"}, format="json")
    producer.put("/api/v1/topics/t/subscribers", {"add": ["ana"]}, format="json")
    event_fan_out_page(
        event_id=event_accept(
            api_key_id=api_key[0].id, body={"type": "comment.created", "recipients": ["ana"]}
        ).id,
        page=0,
    )
    export = producer.get("/api/v1/recipients/ana/export").json()
    assert export["recipient"]["email"] == "ana@example.com"
    assert export["topics"] == ["t"]
    assert len(export["notifications"]) == 1
    assert [d["channel"] for d in export["deliveries"]] == ["email"]


def test_topic_subscribers_add_remove_and_page(producer):
    result = producer.put(
        "/api/v1/topics/post:1/subscribers", {"add": [f"u{i}" for i in range(5)]}, format="json"
    ).json()
    assert result == {"added": 5, "removed": 0, "subscribers": 5}
    result = producer.put(
        "/api/v1/topics/post:1/subscribers", {"add": ["u0"], "remove": ["u1"]}, format="json"
    ).json()
    assert result == {"added": 0, "removed": 1, "subscribers": 4}
    first = producer.get("/api/v1/topics/post:1/subscribers?limit=3").json()
    rest = producer.get(
        f"/api/v1/topics/post:1/subscribers?limit=3&cursor={first['next_cursor']}"
    ).json()
    assert first["results"] + rest["results"] == ["u0", "u2", "u3", "u4"]
    assert rest["next_cursor"] is None


def test_unknown_topic_is_404(producer):
    assert producer.get("/api/v1/topics/nope/subscribers").status_code == 404


def test_notification_type_put_get_list_retire(producer, api_key):
    templates = {
        "in_app": {"en": {"title": "Paid"}},
        "email": {"en": {"subject": "Paid", "text": "Thanks"}},
    }
    body = {
        "category": "billing",
        "channels": ["in_app", "email"],
        "required_channels": ["email"],
        "templates": templates,
    }
    assert (
        producer.put("/api/v1/notification-types/invoice.paid", body, format="json").status_code
        == 201
    )
    assert producer.get("/api/v1/notification-types/invoice.paid").json()["required_channels"] == [
        "email"
    ]
    assert [t["key"] for t in producer.get("/api/v1/notification-types").json()["results"]] == [
        "invoice.paid"
    ]
    assert producer.delete("/api/v1/notification-types/invoice.paid").status_code == 204
    response = producer.post(
        "/api/v1/events", {"type": "invoice.paid", "recipients": ["a"]}, format="json"
    )
    assert response.status_code == 422


def test_load_notification_types_reads_yaml(tmp_path, producer):
    path = tmp_path / "types.yaml"
    in_app = "  templates: {in_app: {en: {title: Hi}}}\n"
    path.write_text(
        f"a.b:\n  category: x\n  channels: [in_app]\n{in_app}c.d:\n  priority: high\n{in_app}"
    )
    call_command("load_notification_types", str(path))
    keys = [t["key"] for t in producer.get("/api/v1/notification-types").json()["results"]]
    assert keys == ["a.b", "c.d"]


def test_load_notification_types_reads_json(tmp_path, producer):
    path = tmp_path / "types.json"
    templates = {"in_app": {"en": {"title": "Hi"}}, "sms": {"en": {"text": "Hi"}}}
    path.write_text(json.dumps({"e.f": {"channels": ["in_app", "sms"], "templates": templates}}))
    call_command("load_notification_types", str(path))
    assert producer.get("/api/v1/notification-types/e.f").json()["channels"] == ["in_app", "sms"]


def test_create_api_key_prints_the_key_alone_on_the_last_line(capsys, comment_type):
    from rest_framework.test import APIClient

    call_command("create_api_key", "ci")
    key = capsys.readouterr().out.strip().splitlines()[-1]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    assert (
        client.post(
            "/api/v1/events", {"type": "comment.created", "recipients": ["a"]}, format="json"
        ).status_code
        == 202
    )


def test_token_endpoint_returns_token_and_expiry(producer):
    body = producer.post("/api/v1/recipients/ana/token").json()
    assert set(body) == {"token", "expires_at"}


def test_health_and_readiness(client):
    assert client.get("/healthz").status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert set(ready.json()["checks"]) == {"database", "redis", "broker", "channel_layer"}


def test_openapi_schema_and_docs_are_served(client):
    assert client.get("/api/schema/").status_code == 200
    assert client.get("/api/docs/").status_code == 200


def test_metrics_expose_queue_depths(client):
    text = client.get("/metrics").content.decode()
    assert 'clarion_queue_depth{queue="critical"}' in text
    assert 'clarion_deliveries_waiting{state="held"}' in text


def test_metrics_expose_the_age_of_the_oldest_waiting_event_per_priority(
    client, api_key, comment_type
):
    from django.db import connection

    from notifications.services.events import event_accept

    event_id = event_accept(
        api_key_id=api_key[0].id, body={"type": "comment.created", "recipients": ["u"]}
    ).id
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE notifications_event SET enqueued_at = now() - interval '42 seconds'"
            " WHERE id = %s",
            [event_id],
        )

    text = client.get("/metrics").content.decode()

    normal = next(
        line
        for line in text.splitlines()
        if line.startswith('clarion_fanout_backlog_seconds{priority="normal"}')
    )
    assert 42 <= float(normal.split()[-1]) < 60
    assert 'clarion_fanout_backlog_seconds{priority="critical"} 0.0' in text


def test_readiness_is_503_naming_an_unreachable_redis(client, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    settings.CHANNEL_LAYERS = {"default": {"CONFIG": {"hosts": ["redis://127.0.0.1:1/0"]}}}
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["redis"].startswith("unreachable")
    assert "redis" in body["detail"]


SUBSCRIPTION = {
    "endpoint": "https://push.example.com/send/abc",
    "keys": {
        "p256dh": "BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQtUbVlUls0VJXg7A8u"
        "-Ts1XbjhazAkj7I99e8QcYP7DkM",
        "auth": "tBHItJI5svbpez7KI4CCXg",
    },
}


def test_erase_removes_push_tokens_and_web_push_subscriptions_and_export_shows_them(producer):
    producer.put("/api/v1/recipients/ana", {"email": "ana@example.com"}, format="json")
    assert producer.put(
        "/api/v1/recipients/ana/push-tokens", {"token": "tok-1", "platform": "fcm"}, format="json"
    ).status_code in (200, 201)
    assert producer.put(
        "/api/v1/recipients/ana/web-push-subscriptions", SUBSCRIPTION, format="json"
    ).status_code in (200, 201)

    export = producer.get("/api/v1/recipients/ana/export").json()
    assert [t["token"] for t in export["push_tokens"]] == ["tok-1"]
    assert [s["endpoint"] for s in export["web_push_subscriptions"]] == [SUBSCRIPTION["endpoint"]]

    assert producer.delete("/api/v1/recipients/ana").status_code == 204
    assert not Recipient.objects.filter(external_id="ana").exists()
