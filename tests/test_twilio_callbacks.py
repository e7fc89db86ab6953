"""Twilio's status callbacks (`POST /hooks/twilio/status?delivery=N`): signed
by the configured account's auth token over the public URL, they move an SMS
delivery to delivered or failed, and nothing else moves it."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest
from django.test import Client
from twilio.request_validator import RequestValidator

from delivery.providers import Message
from delivery.providers.registry import providers_for
from notifications.models import Delivery, Recipient
from notifications.selectors import notification_type_cache_clear
from notifications.services.events import event_accept
from notifications.services.fanout import event_fan_out_page
from notifications.services.types import notification_type_put
from tests.fakes.twilio_server import TwilioFake

PUBLIC_URL = "https://clarion.example.com"
SMS_TYPE = {
    "category": "social",
    "channels": ["in_app", "sms"],
    "templates": {
        "in_app": {"en": {"title": "{{ actor }} commented"}},
        "sms": {"en": {"text": "{{ actor }}: {{ comment }}"}},
    },
}
SID = "SM" + "0" * 31 + "1"
OTHER_SID = "SM" + "0" * 31 + "2"


@pytest.fixture
def fake():
    with TwilioFake() as server:
        yield server


@pytest.fixture
def configured(fake, settings):
    settings.CLARION = {
        **settings.CLARION,
        "PROVIDERS": [("sms", fake.provider_url())],
        "PUBLIC_URL": PUBLIC_URL,
    }
    return fake


@pytest.fixture
def client() -> Client:
    return Client(enforce_csrf_checks=True)  # as Twilio meets it: no CSRF token, no cookie


def sms_deliveries(api_key, count: int = 1) -> list[Delivery]:
    """`count` SMS deliveries made by the real intake and fan-out, queued."""
    notification_type_cache_clear()
    notification_type_put(key="comment.created", body=SMS_TYPE)
    ids = [f"sms-{n}" for n in range(count)]
    for n, external_id in enumerate(ids):
        Recipient.objects.update_or_create(
            external_id=external_id, defaults={"phone": f"+1555765{n:04d}"}
        )
    body = {
        "type": "comment.created",
        "recipients": ids,
        "actor": "ana",
        "data": {"comment": "Nice!"},
    }
    event_fan_out_page(event_id=event_accept(api_key_id=api_key[0].id, body=body).id, page=0)
    return list(Delivery.objects.filter(channel="sms").order_by("id"))


def mark_sent(delivery: Delivery, sid: str) -> None:
    """What the send service records when Twilio accepted the message."""
    Delivery.objects.filter(id=delivery.id).update(status="sent", provider_message_id=sid)


@pytest.fixture
def sent(api_key, clean_redis, configured) -> Delivery:
    [delivery] = sms_deliveries(api_key)
    mark_sent(delivery, SID)
    return delivery


def callback_url(delivery_id: object) -> str:
    return f"{PUBLIC_URL}/hooks/twilio/status?delivery={delivery_id}"


def post(client: Client, url: str, form: dict, signature: str | None):
    headers = {} if signature is None else {"X-Twilio-Signature": signature}
    return client.post(
        url.removeprefix(PUBLIC_URL),
        data=urlencode(form),
        content_type="application/x-www-form-urlencoded",
        headers=headers,
    )


def signed_post(
    client: Client, fake: TwilioFake, delivery_id: object, status: str, sid: str = SID, **kwargs
):
    url, form, signature = fake.status_callback(
        sid, status, url=callback_url(delivery_id), **kwargs
    )
    return post(client, url, form, signature)


def state(delivery: Delivery) -> tuple[str, str]:
    delivery.refresh_from_db()
    return delivery.status, delivery.reason


def test_delivered_moves_the_delivery_to_delivered(client, configured, sent):
    response = signed_post(client, configured, sent.id, "delivered")
    assert response.status_code == 204
    assert state(sent) == ("delivered", "")


def test_undelivered_with_an_error_code_fails_as_carrier_failed(client, configured, sent):
    response = signed_post(client, configured, sent.id, "undelivered", error_code=30003)
    assert response.status_code == 204
    assert state(sent) == ("failed", "carrier_failed:30003")


def test_failed_without_an_error_code_fails_as_undelivered(client, configured, sent):
    signed_post(client, configured, sent.id, "failed")
    assert state(sent) == ("failed", "undelivered")


def test_a_failure_after_delivered_still_fails_it(client, configured, sent):
    signed_post(client, configured, sent.id, "delivered")
    signed_post(client, configured, sent.id, "undelivered", error_code=30005)
    assert state(sent) == ("failed", "carrier_failed:30005")


@pytest.mark.parametrize("status", ["queued", "sending", "sent", "accepted", "read", ""])
def test_interim_statuses_change_nothing(client, configured, sent, status):
    response = signed_post(client, configured, sent.id, status)
    assert response.status_code == 204
    assert state(sent) == ("sent", "")


def test_a_missing_signature_is_401_and_changes_nothing(client, configured, sent):
    url, form, _ = configured.status_callback(SID, "delivered", url=callback_url(sent.id))
    assert post(client, url, form, None).status_code == 401
    assert state(sent) == ("sent", "")


def test_a_signature_by_another_token_is_401_and_changes_nothing(client, configured, sent):
    url, form, signature = configured.status_callback(
        SID, "delivered", url=callback_url(sent.id), auth_token="someone-elses-token"
    )
    assert post(client, url, form, signature).status_code == 401
    assert state(sent) == ("sent", "")


def test_a_signature_over_another_url_is_401(client, configured, sent):
    # Signed for delivery 1, posted about this one: the query is signed too.
    _, form, signature = configured.status_callback(SID, "delivered", url=callback_url(1))
    assert post(client, callback_url(sent.id), form, signature).status_code == 401
    assert state(sent) == ("sent", "")


def test_the_signature_is_checked_against_the_public_url_not_the_host(client, configured, sent):
    # Django sees Host "testserver"; Twilio signed the URL it was given.
    _, form, signature = configured.status_callback(
        SID, "delivered", url=f"http://testserver/hooks/twilio/status?delivery={sent.id}"
    )
    assert post(client, callback_url(sent.id), form, signature).status_code == 401
    assert state(sent) == ("sent", "")


def test_a_changed_form_field_breaks_the_signature(client, configured, sent):
    url, form, signature = configured.status_callback(SID, "sent", url=callback_url(sent.id))
    assert post(client, url, {**form, "MessageStatus": "delivered"}, signature).status_code == 401
    assert state(sent) == ("sent", "")


def test_a_callback_about_another_message_is_409_and_changes_nothing(client, configured, sent):
    response = signed_post(client, configured, sent.id, "undelivered", sid=OTHER_SID)
    assert response.status_code == 409
    assert state(sent) == ("sent", "")


def test_a_delivery_without_a_recorded_sid_is_matched_by_id(client, configured, sent):
    Delivery.objects.filter(id=sent.id).update(provider_message_id="")
    assert signed_post(client, configured, sent.id, "delivered").status_code == 204
    assert state(sent) == ("delivered", "")


def test_without_a_delivery_parameter_the_sid_names_the_delivery(
    client, configured, api_key, clean_redis
):
    first, second = sms_deliveries(api_key, count=2)
    mark_sent(first, SID)
    mark_sent(second, OTHER_SID)
    url, form, signature = configured.status_callback(
        OTHER_SID, "delivered", url=f"{PUBLIC_URL}/hooks/twilio/status"
    )
    assert post(client, url, form, signature).status_code == 204
    assert (state(first), state(second)) == (("sent", ""), ("delivered", ""))


def test_a_second_twilio_accounts_token_is_accepted_too(client, fake, settings, sent):
    with TwilioFake(account_sid="AC" + "f" * 32, auth_token="backup-token") as backup:
        settings.CLARION = {
            **settings.CLARION,
            "PROVIDERS": [("sms", fake.provider_url()), ("sms", backup.provider_url())],
        }
        assert signed_post(client, backup, sent.id, "delivered").status_code == 204
    assert state(sent) == ("delivered", "")


def test_with_no_twilio_provider_every_callback_is_401(client, configured, settings, sent):
    settings.CLARION = {**settings.CLARION, "PROVIDERS": [("sms", "console://")]}
    assert signed_post(client, configured, sent.id, "delivered").status_code == 401
    assert state(sent) == ("sent", "")


def test_an_unknown_delivery_is_404(client, configured, sent):
    assert signed_post(client, configured, sent.id + 1000, "delivered").status_code == 404


def test_an_email_delivery_is_not_moved_by_an_sms_callback(client, configured, sent):
    Delivery.objects.filter(id=sent.id).update(channel="email")
    assert signed_post(client, configured, sent.id, "delivered").status_code == 404
    assert state(sent) == ("sent", "")


@pytest.mark.parametrize(
    ("delivery", "fields", "expected", "after"),
    [
        ("9" * 40, {}, 400, ("sent", "")),  # beyond bigint
        ("99999999999999999", {}, 404, ("sent", "")),
        ("1\x00", {}, 400, ("sent", "")),
        ("-1", {}, 400, ("sent", "")),
        ("{id}", {"MessageSid": "SM\x00" + "0" * 31}, 400, ("sent", "")),
        ("{id}", {"MessageSid": "x" * 100_000}, 400, ("sent", "")),
        ("{id}", {"MessageSid": ""}, 400, ("sent", "")),
        ("{id}", {"MessageStatus": "delivered\x00"}, 204, ("sent", "")),
        # A code that is not a number is left out of the reason.
        (
            "{id}",
            {"MessageStatus": "failed", "ErrorCode": "1'; DROP TABLE x"},
            204,
            ("failed", "undelivered"),
        ),
    ],
)
def test_hostile_signed_input_is_a_4xx_not_a_500(
    client, configured, sent, delivery, fields, expected, after
):
    url = callback_url(delivery.replace("{id}", str(sent.id)))
    _, form, _ = configured.status_callback(SID, "delivered", url=url)
    form.update(fields)
    signature = RequestValidator(configured.auth_token).compute_signature(url, form)
    assert post(client, url, form, signature).status_code == expected
    assert state(sent) == after


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"MessageSid=\x00&MessageStatus=delivered",
        b"\xff\xfe\x00garbage=%zz&&&==",
        b"MessageStatus=" + b"d" * 1_000_000,
        b"&".join(b"f%d=1" % n for n in range(2000)),  # over DATA_UPLOAD_MAX_NUMBER_FIELDS
    ],
)
def test_hostile_unsigned_bodies_are_refused_without_a_500(client, configured, sent, body):
    response = client.post(
        f"/hooks/twilio/status?delivery={sent.id}",
        data=body,
        content_type="application/x-www-form-urlencoded",
        headers={"X-Twilio-Signature": "bm90IGEgc2lnbmF0dXJl"},
    )
    assert response.status_code in (400, 401)
    assert state(sent) == ("sent", "")


def test_a_broken_multipart_body_is_refused_without_a_500(client, configured, sent):
    response = client.post(
        f"/hooks/twilio/status?delivery={sent.id}",
        data=b"--x\r\nbroken",
        content_type="multipart/form-data; boundary=",
        headers={"X-Twilio-Signature": "x"},
    )
    assert response.status_code in (400, 401)


def test_get_is_405(client, configured):
    assert client.get("/hooks/twilio/status?delivery=1").status_code == 405


@pytest.mark.django_db(transaction=True)
def test_a_sent_sms_is_marked_delivered_by_twilios_callback(
    live_server, fake, settings, api_key, clean_redis
):
    """The whole loop over HTTP: send through the provider to the fake, which
    posts the signed callback to the StatusCallback it was given."""
    settings.CLARION = {
        **settings.CLARION,
        "PROVIDERS": [("sms", fake.provider_url())],
        "PUBLIC_URL": live_server.url,
    }
    [delivery] = sms_deliveries(api_key)
    [outcome] = providers_for("sms")[0].provider.send(
        [Message(delivery.id, "sms", "+15557650000", {"text": "ana: Nice!"})]
    )
    assert outcome.status == "sent", outcome
    mark_sent(delivery, outcome.provider_message_id)
    assert fake.post_status(outcome.provider_message_id, "sent").status_code == 204
    assert state(delivery) == ("sent", "")
    assert fake.post_status(outcome.provider_message_id, "delivered").status_code == 204
    assert state(delivery) == ("delivered", "")
