"""The web push provider against a local push service that checks VAPID and
DECRYPTS what it receives (tests/fakes/push_service.py): real sockets, real
RFC 8291 encryption, no mocks. Then the whole path through the send service:
a subscription registered, an event delivered, a gone subscription pruned."""

from __future__ import annotations

import io
import json
import os
import time

import httpx
import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.utils import timezone

from delivery.providers.base import FAILED, RETRY, SENT, Message
from delivery.providers.registry import ProviderUrl, providers_for
from delivery.providers.webpush import MAX_PLAINTEXT, WebPushProvider, vapid_keys_generate
from delivery.services.dispatch import deliveries_claim_due
from delivery.services.send import deliveries_send
from notifications.models import Delivery, DeliveryAttempt, Recipient, WebPushSubscription
from notifications.selectors import notification_type_cache_clear
from notifications.services.events import event_accept
from notifications.services.fanout import event_fan_out_page
from notifications.services.types import notification_type_put
from notifications.services.web_push_subscriptions import (
    subscription_parse,
    web_push_subscription_upsert,
    web_push_targets,
)
from tests.fakes.push_service import PushServiceFake, b64url_decode
from tests.test_bell_browser import browser as bell_browser  # noqa: F401 - a fixture
from tests.test_push_providers import closed_port

PRIVATE_KEY, PUBLIC_KEY = vapid_keys_generate()
SUBJECT = "mailto:ops@example.com"
PROVIDER_URL = f"webpush://?vapid_subject={SUBJECT}"


@pytest.fixture
def web_push_settings(settings):
    settings.CLARION = {
        **settings.CLARION,
        "VAPID_PRIVATE_KEY": PRIVATE_KEY,
        "VAPID_PUBLIC_KEY": PUBLIC_KEY,
        "WEBHOOK_ALLOW_PRIVATE": True,  # the fake push service is on 127.0.0.1, over http
        "PROVIDERS": [("web_push", PROVIDER_URL)],
    }
    return settings


@pytest.fixture
def push():
    with PushServiceFake() as fake:
        yield fake


@pytest.fixture
def provider(web_push_settings) -> WebPushProvider:
    return WebPushProvider.from_url(ProviderUrl.parse("web_push", PROVIDER_URL))


def message(delivery_id: int, *targets: str, **content) -> Message:
    return Message(
        delivery_id=delivery_id,
        channel="web_push",
        address="",
        targets=targets,
        content={"title": "Ana commented", "body": "Nice!", "url": "/posts/7", **content},
    )


# --- the provider ----------------------------------------------------------------


def test_the_push_service_decrypts_exactly_the_payload_that_was_sent(push, provider):
    device = push.subscribe(application_server_key=PUBLIC_KEY)

    [outcome] = provider.send([message(41, device.target())])

    assert outcome.status == SENT and outcome.status_code == 201
    assert outcome.provider_message_id.startswith(f"{push.origin}/message/")
    [received] = push.accepted()
    assert received.payload == {
        "title": "Ana commented",
        "body": "Nice!",
        "url": "/posts/7",
        "delivery_id": 41,
    }


def test_the_vapid_jwt_is_verified_for_the_push_services_origin_and_a_day_at_most(push, provider):
    device = push.subscribe(application_server_key=PUBLIC_KEY)

    provider.send([message(42, device.target())])

    [received] = push.accepted()
    assert received.vapid_key == PUBLIC_KEY
    assert received.claims["aud"] == push.origin
    assert received.claims["sub"] == SUBJECT
    assert time.time() < received.claims["exp"] <= time.time() + 24 * 3600
    assert received.header("Authorization").startswith("vapid t=")
    assert (received.header("TTL"), received.header("Urgency")) == ("86400", "normal")
    assert received.header("Content-Encoding") == "aes128gcm"
    assert received.header("Idempotency-Key") == "clarion-delivery-42"


def test_one_vapid_jwt_serves_many_messages_to_one_push_service(push, provider):
    browsers = [push.subscribe() for _ in range(3)]

    provider.send([message(n, b.target()) for n, b in enumerate(browsers, start=1)])

    headers = {r.header("Authorization") for r in push.accepted()}
    assert len(push.accepted()) == 3 and len(headers) == 1


def test_a_subscription_made_with_another_applicationserverkey_is_refused(push, provider):
    _, other_public = vapid_keys_generate()
    device = push.subscribe(application_server_key=other_public)

    [outcome] = provider.send([message(43, device.target())])

    assert (outcome.status, outcome.status_code, outcome.invalid_targets) == (FAILED, 403, ())


def test_410_for_the_only_subscription_fails_invalid_token_and_lists_its_endpoint(push, provider):
    device = push.subscribe()
    push.gone(device)

    [outcome] = provider.send([message(44, device.target())])

    assert (outcome.status, outcome.reason, outcome.status_code) == (FAILED, "invalid_token", 410)
    assert outcome.invalid_targets == (device.endpoint,)


def test_a_gone_subscription_beside_a_live_one_is_listed_and_the_message_sent(push, provider):
    live, dead = push.subscribe(), push.subscribe()
    push.gone(dead)

    [outcome] = provider.send([message(45, dead.target(), live.target())])

    assert outcome.status == SENT
    assert outcome.invalid_targets == (dead.endpoint,)
    assert [r.payload["delivery_id"] for r in push.accepted()] == [45]


def test_429_is_retried_after_its_retry_after(push, provider):
    device = push.subscribe()
    push.fail_next(1, status=429, retry_after="120")

    [outcome] = provider.send([message(46, device.target())])

    assert (outcome.status, outcome.reason, outcome.retry_after) == (RETRY, "http_429", 120.0)
    assert outcome.invalid_targets == ()


def test_503_is_retried(push, provider):
    device = push.subscribe()
    push.fail_next(1, status=503, retry_after="7")

    [outcome] = provider.send([message(47, device.target())])

    assert (outcome.status, outcome.reason, outcome.retry_after) == (RETRY, "http_503", 7.0)


@pytest.mark.parametrize("status", [400, 413])
def test_400_and_413_fail_at_once_without_pruning(push, provider, status):
    device = push.subscribe()
    push.fail_next(1, status=status)

    [outcome] = provider.send([message(48, device.target())])

    assert (outcome.status, outcome.reason) == (FAILED, f"http_{status}")
    assert outcome.invalid_targets == ()


def test_a_long_body_is_cut_to_one_record_the_push_service_accepts(push, provider):
    device = push.subscribe()

    [outcome] = provider.send([message(49, device.target(), body="é" * 5000)])

    assert outcome.status == SENT
    [received] = push.accepted()
    assert len(received.plaintext) <= MAX_PLAINTEXT
    assert received.payload["body"].endswith("…") and len(received.payload["body"]) > 1500
    assert received.payload["url"] == "/posts/7"


def test_one_outcome_per_message_of_a_batch(push, provider):
    ok, gone = push.subscribe(), push.subscribe()
    push.gone(gone)

    outcomes = provider.send([message(1, ok.target()), message(2, gone.target())])

    assert [(o.delivery_id, o.status) for o in outcomes] == [(1, SENT), (2, FAILED)]


def test_an_http_endpoint_is_refused_without_the_development_switch(push, provider, settings):
    device = push.subscribe()
    settings.CLARION = {**settings.CLARION, "WEBHOOK_ALLOW_PRIVATE": False}

    [outcome] = provider.send([message(50, device.target())])

    assert (outcome.status, outcome.reason) == (FAILED, "blocked_address")
    assert outcome.invalid_targets == ()
    assert push.received == []


def test_an_unreachable_push_service_is_a_retryable_connection_error(push, provider):
    device = push.subscribe()
    device.endpoint = f"http://127.0.0.1:{closed_port()}/push/x"

    [outcome] = provider.send([message(51, device.target())])

    assert (outcome.status, outcome.reason) == (RETRY, "connection_error")


def test_the_key_command_prints_keys_the_provider_signs_with_and_browsers_accept(push, settings):
    out = io.StringIO()
    call_command("create_vapid_keys", stdout=out)
    lines = dict(line.split("=", 1) for line in out.getvalue().split())
    private_key = lines["CLARION_VAPID_PRIVATE_KEY"]
    public_key = lines["CLARION_VAPID_PUBLIC_KEY"]
    settings.CLARION = {
        **settings.CLARION,
        "VAPID_PRIVATE_KEY": private_key,
        "VAPID_PUBLIC_KEY": public_key,
        "WEBHOOK_ALLOW_PRIVATE": True,
    }
    provider = WebPushProvider.from_url(
        ProviderUrl.parse("web_push", f"webpush://?vapid_subject={SUBJECT}&ttl=60&urgency=high")
    )
    # A device accepts the public key as applicationServerKey: 65 bytes, uncompressed.
    device = push.subscribe(application_server_key=public_key)

    [outcome] = provider.send([message(52, device.target())])

    assert outcome.status == SENT
    [received] = push.accepted()
    assert received.vapid_key == public_key
    assert (received.header("TTL"), received.header("Urgency")) == ("60", "high")
    assert received.payload["delivery_id"] == 52


def test_a_public_key_that_is_not_the_private_keys_half_is_refused_at_start(settings):
    _, other_public = vapid_keys_generate()
    settings.CLARION = {
        **settings.CLARION,
        "VAPID_PRIVATE_KEY": PRIVATE_KEY,
        "VAPID_PUBLIC_KEY": other_public,
    }

    with pytest.raises(ImproperlyConfigured, match="public half"):
        WebPushProvider.from_url(ProviderUrl.parse("web_push", PROVIDER_URL))


@pytest.mark.parametrize(
    ("url", "clarion", "match"),
    [
        ("webpush://", {}, "vapid_subject"),
        (PROVIDER_URL + "&ttl=soon", {}, "ttl"),
        (PROVIDER_URL + "&urgency=now", {}, "urgency"),
        (PROVIDER_URL, {"VAPID_PRIVATE_KEY": ""}, "create_vapid_keys"),
        (PROVIDER_URL, {"VAPID_PRIVATE_KEY": "not-a-key"}, "P-256"),
    ],
)
def test_a_misconfigured_provider_is_refused_at_start(web_push_settings, url, clarion, match):
    web_push_settings.CLARION = {**web_push_settings.CLARION, **clarion}

    with pytest.raises(ImproperlyConfigured, match=match):
        WebPushProvider.from_url(ProviderUrl.parse("web_push", url))


def test_the_registry_builds_the_provider_from_clarion_providers(web_push_settings):
    [configured] = providers_for("web_push")

    assert isinstance(configured.provider, WebPushProvider)
    assert configured.provider.public_key == PUBLIC_KEY
    assert "PRIVATE" not in repr(configured.provider) and PRIVATE_KEY not in repr(
        configured.provider
    )


# --- through the send service ------------------------------------------------------

WEB_PUSH_TYPE = {
    "category": "social",
    "priority": "normal",
    "channels": ["in_app", "web_push"],
    "templates": {
        "in_app": {"en": {"title": "{{ actor }} commented", "body": "{{ comment }}"}},
        "web_push": {
            "en": {
                "title": "{{ actor }} commented",
                "body": "{{ comment }}",
                "url": "/posts/{{ post_id }}",
            }
        },
    },
}


@pytest.fixture
def web_push_type(db, clean_redis):
    notification_type_cache_clear()
    return notification_type_put(key="comment.web_push", body=WEB_PUSH_TYPE)[0]


def deliver(api_key, external_id: str) -> Delivery:
    event_id = event_accept(
        api_key_id=api_key[0].id,
        body={
            "type": "comment.web_push",
            "recipients": [external_id],
            "actor": "zoe",
            "data": {"comment": "Nice!", "post_id": 7},
        },
    ).id
    now = timezone.now()
    event_fan_out_page(event_id=event_id, page=0, now=now)
    claim = deliveries_claim_due(now=now)
    ids = [d for d, channel, _ in claim.deliveries if channel == "web_push"]
    deliveries_send(delivery_ids=ids, lease=claim.lease)
    return Delivery.objects.get(notification__event_id=event_id, channel="web_push")


@pytest.mark.django_db
def test_an_event_reaches_the_browser_and_a_gone_subscription_is_pruned(
    push, web_push_settings, web_push_type, api_key
):
    ana = Recipient.objects.create(external_id="ana")
    live, dead = push.subscribe(application_server_key=PUBLIC_KEY), push.subscribe()
    for device in (live, dead):
        web_push_subscription_upsert(
            recipient_id=ana.id, subscription=subscription_parse(device.as_json())
        )
    push.gone(dead)

    delivery = deliver(api_key, "ana")

    assert (delivery.status, delivery.provider) == ("sent", "web_push:webpush")
    [received] = push.accepted()
    assert received.payload == {
        "title": "zoe commented",
        "body": "Nice!",
        "url": "/posts/7",
        "delivery_id": delivery.id,
    }
    assert delivery.provider_message_id.startswith(f"{push.origin}/message/")
    assert list(WebPushSubscription.objects.values_list("endpoint", flat=True)) == [live.endpoint]
    [attempt] = DeliveryAttempt.objects.filter(delivery=delivery)
    assert (attempt.outcome, attempt.status_code) == ("sent", 201)


@pytest.mark.django_db
def test_a_recipient_whose_only_subscription_is_gone_fails_and_loses_it(
    push, web_push_settings, web_push_type, api_key
):
    bo = Recipient.objects.create(external_id="bo")
    device = push.subscribe()
    web_push_subscription_upsert(
        recipient_id=bo.id, subscription=subscription_parse(device.as_json())
    )
    push.gone(device)

    delivery = deliver(api_key, "bo")

    assert (delivery.status, delivery.reason) == ("failed", "invalid_token")
    assert not WebPushSubscription.objects.exists()


@pytest.mark.django_db
def test_a_recipient_without_a_subscription_is_skipped_no_address(
    push, web_push_settings, web_push_type, api_key
):
    Recipient.objects.create(external_id="cy")

    delivery = deliver(api_key, "cy")

    assert (delivery.status, delivery.reason) == ("skipped", "no_address")
    assert push.received == []


# --- the bell in headless Chromium ---------------------------------------------------
#
# A real browser cannot get a push subscription offline (Chromium's PushManager
# registers with Google's push service), so the page's PushManager hands out a
# subscription of the local push service instead; everything else is real: the
# bell finds the Push API and the served key, registers /clarion-sw.js, PUTs the
# subscription with its recipient token, and Clarion encrypts to it. The push
# event itself is delivered to the service worker through the DevTools protocol.

FAKE_PUSH_MANAGER = """
(() => {
  const fake = %s;
  PushManager.prototype.subscribe = async function (options) {
    window.__clarionSubscribeKey = Array.from(new Uint8Array(options.applicationServerKey));
    window.__clarionSubscription = {
      endpoint: fake.endpoint,
      options: {applicationServerKey: new Uint8Array(options.applicationServerKey).buffer},
      toJSON: () => fake,
      unsubscribe: async () => { window.__clarionSubscription = null; return true; },
    };
    return window.__clarionSubscription;
  };
  PushManager.prototype.getSubscription = async function () {
    return window.__clarionSubscription || null;
  };
})();
"""


@pytest.fixture(scope="module")
def chromium(request):
    """The bell tests' headless Chromium (tests/test_bell_browser.py)."""
    return request.getfixturevalue("bell_browser")


@pytest.fixture(scope="module")
def web_push_server(django_db_setup, django_db_blocker):
    """The ASGI server with DEBUG on (the demo page) and web push configured."""
    from django.conf import settings as django_settings
    from django.db import connection

    from tests.servers import AsgiServer
    from tests.workers import database_url_for

    server = AsgiServer(
        database_url=database_url_for(connection.settings_dict),
        redis_url=django_settings.REDIS_URL,
        debug=True,
        extra_env={
            "CLARION_VAPID_PRIVATE_KEY": PRIVATE_KEY,
            "CLARION_VAPID_PUBLIC_KEY": PUBLIC_KEY,
            "CLARION_WEBHOOK_ALLOW_PRIVATE": "true",
        },
    )
    server.start()
    yield server
    server.stop()


def open_demo(context, server, recipient: str):
    page = context.new_page()
    page.goto(f"{server.base_url}/demo/?recipient={recipient}")
    page.wait_for_selector("body[data-ready=true]", timeout=15_000)
    page.evaluate("window.clarionBell.pushReady")
    return page


@pytest.mark.django_db(transaction=True)
def test_the_bell_registers_its_service_worker_and_subscription_and_the_push_arrives(
    chromium, web_push_server, push, web_push_settings, clean_redis
):
    os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # Playwright's loop in this thread
    alice = Recipient.objects.create(external_id="alice")
    device = push.subscribe(application_server_key=PUBLIC_KEY)
    context = chromium.new_context(permissions=["notifications"])
    context.add_init_script(FAKE_PUSH_MANAGER % json.dumps(device.as_json()))
    page = open_demo(context, web_push_server, "alice")

    page.click("[aria-haspopup=true]")
    page.click("[data-testid=clarion-push-optin]")
    page.wait_for_selector("[data-testid=clarion-push][data-state=on]", timeout=10_000)

    # The key the bell subscribed with is the served VAPID key, decoded.
    assert bytes(page.evaluate("window.__clarionSubscribeKey")) == b64url_decode(PUBLIC_KEY)
    registration = page.evaluate(
        """async () => {
            const r = await navigator.serviceWorker.getRegistration();
            return {scope: r.scope, script: r.active.scriptURL};
        }"""
    )
    assert registration == {
        "scope": f"{web_push_server.base_url}/",
        "script": f"{web_push_server.base_url}/clarion-sw.js",
    }
    worker = httpx.get(f"{web_push_server.base_url}/clarion-sw.js")
    assert worker.headers["Service-Worker-Allowed"] == "/"
    assert worker.headers["Content-Type"].startswith("text/javascript")
    [row] = WebPushSubscription.objects.filter(recipient=alice)
    assert (row.endpoint, row.p256dh, row.auth) == (device.endpoint, device.p256dh, device.auth)
    assert "Chrome" in row.user_agent

    # Clarion encrypts to what the browser registered; the push service decrypts it.
    provider = WebPushProvider.from_url(ProviderUrl.parse("web_push", PROVIDER_URL))
    [outcome] = provider.send([message(60, *web_push_targets([alice.id])[alice.id])])
    assert outcome.status == SENT
    [received] = push.accepted()

    # The browser hands the decrypted data to the service worker, which shows it.
    cdp = context.new_cdp_session(page)
    registrations: list[dict] = []
    cdp.on(
        "ServiceWorker.workerRegistrationUpdated",
        lambda event: registrations.extend(event["registrations"]),
    )
    cdp.send("ServiceWorker.enable")
    page.wait_for_timeout(200)
    [registration_id] = {r["registrationId"] for r in registrations if not r["isDeleted"]}
    cdp.send(
        "ServiceWorker.deliverPushMessage",
        {
            "origin": web_push_server.base_url,
            "registrationId": registration_id,
            "data": received.plaintext.decode(),
        },
    )
    shown = page.wait_for_function(
        """async () => {
            const r = await navigator.serviceWorker.getRegistration();
            const found = await r.getNotifications();
            return found.length ? found.map((n) => ({title: n.title, body: n.body,
                                                     tag: n.tag, url: n.data.url})) : null;
        }""",
        timeout=10_000,
    ).json_value()
    assert shown == [
        {"title": "Ana commented", "body": "Nice!", "tag": "clarion-60", "url": "/posts/7"}
    ]

    # Turning it off removes the subscription from Clarion too.
    page.click("[data-testid=clarion-push-optin]")
    page.wait_for_selector("[data-testid=clarion-push][data-state=off]", timeout=10_000)
    assert not WebPushSubscription.objects.filter(recipient=alice).exists()
    context.close()


@pytest.mark.django_db(transaction=True)
def test_the_bell_offers_no_opt_in_when_clarion_serves_no_vapid_key(
    chromium, demo_server, clean_redis
):
    os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    Recipient.objects.create(external_id="alice")
    context = chromium.new_context(permissions=["notifications"])
    page = open_demo(context, demo_server, "alice")

    page.click("[aria-haspopup=true]")

    assert page.evaluate("'PushManager' in window")  # the API is there; the key is not
    assert page.locator("[data-testid=clarion-push]").is_hidden()
    assert page.evaluate("navigator.serviceWorker.getRegistration()") is None
    context.close()
