"""The admin as the template and preference workbench: the type editor (templates
per channel × locale, rules as small forms, version history and restore), the
pipeline's records read-only with their links and counts, and a recipient's
preferences as a grid. Every form is posted as the browser posts it, scraped
from the page the admin served."""

from __future__ import annotations

import json
from html.parser import HTMLParser

import pytest

from common.choices import DeliveryStatus
from notifications.models import (
    Delivery,
    DeliveryAttempt,
    Event,
    Notification,
    NotificationType,
    PushToken,
    Recipient,
    WebPushSubscription,
)
from notifications.services.types import notification_type_put
from preferences.services import preferences_get, preferences_put
from templates_app.models import TemplateVersion

pytestmark = pytest.mark.django_db

WHOLE = "Must be a whole number of at least 1."
HHMM = "Must be a time of day as HH:MM (24-hour)."

TYPE_URL = "/admin/notifications/notificationtype/"
BODY = {
    "category": "social",
    "channels": ["in_app", "email"],
    "templates": {
        "in_app": {
            "en": {"title": "{{ actor }} commented on {{ post_title }}", "body": "{{ comment }}"},
            "pt-BR": {"title": "{{ actor }} comentou em {{ post_title }}"},
        },
        "email": {"en": {"subject": "New comment on {{ post_title }}", "text": "{{ comment }}"}},
    },
    "sample_data": {"post_title": "Hello", "comment": "Nice"},
}


class FormScraper(HTMLParser):
    """The fields the first form with a submit button posts: inputs, checked
    boxes, textareas and selected options, as a browser would send them."""

    def __init__(self):
        super().__init__()
        self.fields: list[tuple[str, str]] = []
        self._textarea: str | None = None
        self._select: str | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        name = a.get("name")
        if tag == "input" and name and a.get("type") not in ("submit", "button"):
            if a.get("type") in ("checkbox", "radio") and "checked" not in a:
                return
            default = "on" if a.get("type") == "checkbox" else ""
            self.fields.append((name, a.get("value") or default))
        elif tag == "textarea" and name:
            self._textarea, self._text = name, []
        elif tag == "select" and name:
            self._select = name
        elif tag == "option" and self._select and "selected" in a:
            self.fields.append((self._select, a.get("value", "")))

    def handle_data(self, data):
        if self._textarea is not None:
            self._text.append(data)

    def handle_endtag(self, tag):
        if tag == "textarea" and self._textarea is not None:
            text = "".join(self._text)
            self.fields.append((self._textarea, text[1:] if text.startswith("\n") else text))
            self._textarea = None
        elif tag == "select":
            self._select = None


def scrape(response) -> dict[str, list[str]]:
    assert response.status_code == 200, response.content[:500]
    parser = FormScraper()
    parser.feed(response.content.decode())
    fields: dict[str, list[str]] = {}
    for name, value in parser.fields:
        fields.setdefault(name, []).append(value)
    return fields


def post(client, url: str, fields: dict[str, list[str]], **changes):
    """Post the scraped form with `changes` (None removes a field, a list sets many values)."""
    data = dict(fields)
    for name, value in changes.items():
        if value is None:
            data.pop(name, None)
        else:
            data[name] = value if isinstance(value, list) else [value]
    data.pop("_restore", None)
    return client.post(url, data)


@pytest.fixture
def comment(db) -> NotificationType:
    return notification_type_put(key="comment.created", body=BODY)[0]


def change_url(notification_type: NotificationType) -> str:
    return f"{TYPE_URL}{notification_type.pk}/change/"


# --- the type editor -------------------------------------------------------


def test_the_type_editor_has_a_box_per_channel_locale_and_field(admin_client, comment):
    fields = scrape(admin_client.get(change_url(comment)))

    assert fields["templates__in_app__en__title"] == ["{{ actor }} commented on {{ post_title }}"]
    assert fields["templates__in_app__pt-BR__title"] == ["{{ actor }} comentou em {{ post_title }}"]
    assert fields["templates__email__en__subject"] == ["New comment on {{ post_title }}"]
    assert fields["channels"] == ["in_app", "email"]  # the checked boxes


def test_the_type_editor_lists_the_variables_each_template_uses_and_sample_data_lacks(
    admin_client, comment
):
    comment.sample_data = {"post_title": "Hello"}
    comment.save()

    page = admin_client.get(change_url(comment)).content.decode()

    assert 'Uses: <span class="clarion-used">actor, comment, post_title</span>' in page
    assert 'Missing in sample_data: <span class="clarion-missing-names">comment</span>' in page


def test_editing_a_template_field_saves_it_and_records_a_version(admin_client, comment):
    fields = scrape(admin_client.get(change_url(comment)))

    response = post(
        admin_client,
        change_url(comment),
        fields,
        templates__email__en__subject="Re: {{ post_title }}",
        **{"templates__email__pt-BR__subject": "Novo: {{ post_title }}"},
        **{"templates__email__pt-BR__text": "{{ comment }}"},
    )

    assert response.status_code == 302, response.content.decode()[:2000]
    comment.refresh_from_db()
    assert comment.templates["email"] == {
        "en": {"subject": "Re: {{ post_title }}", "text": "{{ comment }}"},
        "pt-BR": {"subject": "Novo: {{ post_title }}", "text": "{{ comment }}"},
    }
    assert list(
        TemplateVersion.objects.filter(type=comment, channel="email").values_list(
            "locale", "version"
        )
    ) == [("en", 2), ("en", 1), ("pt-BR", 1)]


def test_a_locale_whose_fields_are_all_emptied_is_left_out(admin_client, comment):
    fields = scrape(admin_client.get(change_url(comment)))

    post(admin_client, change_url(comment), fields, **{"templates__in_app__pt-BR__title": ""})

    comment.refresh_from_db()
    assert set(comment.templates["in_app"]) == {"en"}


def test_a_template_problem_shows_under_the_field_and_beside_its_box(admin_client, comment):
    fields = scrape(admin_client.get(change_url(comment)))

    response = post(admin_client, change_url(comment), fields, templates__email__en__subject="")

    page = response.content.decode()
    assert response.status_code == 200
    assert "templates.email.en.subject: An email needs a subject." in page  # under the field
    cell = page.split('name="templates__email__en__subject"', 1)[1].split("</div>", 1)[0]
    assert '<span class="clarion-error">An email needs a subject.</span>' in cell
    comment.refresh_from_db()
    assert comment.templates["email"]["en"]["subject"] == "New comment on {{ post_title }}"


def test_the_rules_round_trip_through_parse_type(admin_client, comment):
    fields = scrape(admin_client.get(change_url(comment)))

    response = post(
        admin_client,
        change_url(comment),
        fields,
        digest__on="1",
        digest__window_seconds="600",
        digest__mode="fixed",
        digest__key="{{ post_title }}",
        throttle__on="1",
        throttle__limit="3",
        throttle__window_seconds="3600",
        escalation__on="1",
        escalation__after_seconds="120",
        escalation__channels=["email", "email"],
    )

    assert response.status_code == 302, response.content.decode()[:3000]
    comment.refresh_from_db()
    assert comment.digest == {"window_seconds": 600, "mode": "fixed", "key": "{{ post_title }}"}
    assert comment.throttle == {"limit": 3, "window_seconds": 3600}
    assert comment.escalation == {"after_seconds": 120, "channels": ["email"]}  # deduplicated
    again = scrape(admin_client.get(change_url(comment)))
    assert again["digest__on"] == ["1"] and again["digest__window_seconds"] == ["600"]
    assert again["digest__mode"] == ["fixed"] and again["escalation__channels"] == ["email"]


def test_turning_a_rule_off_stores_null(admin_client, comment):
    comment.throttle = {"limit": 3, "window_seconds": 60}
    comment.save()
    fields = scrape(admin_client.get(change_url(comment)))

    post(admin_client, change_url(comment), fields, throttle__on=None)

    comment.refresh_from_db()
    assert comment.throttle is None


@pytest.mark.parametrize(
    ("changes", "path", "message"),
    [
        ({"digest__window_seconds": "soon"}, "digest.window_seconds", WHOLE),
        ({"digest__window_seconds": ""}, "digest.window_seconds", WHOLE),
        ({"digest__window_seconds": "²"}, "digest.window_seconds", WHOLE),  # a digit, not a number
        ({"digest__key": "{{ post_title"}, "digest.key", None),
        ({"throttle__limit": "0"}, "throttle.limit", WHOLE),
        (
            {"escalation__after_seconds": "5"},
            "escalation.after_seconds",
            "Must be whole seconds from 60 to 2592000.",
        ),
        ({"escalation__channels": None}, "escalation.channels", None),
    ],
)
def test_a_rule_problem_shows_beside_its_input(admin_client, comment, changes, path, message):
    fields = scrape(admin_client.get(change_url(comment)))
    rule = path.split(".")[0]
    base = {
        "digest": {"digest__on": "1", "digest__window_seconds": "60"},
        "throttle": {"throttle__on": "1", "throttle__limit": "1", "throttle__window_seconds": "60"},
        "escalation": {
            "escalation__on": "1",
            "escalation__after_seconds": "60",
            "escalation__channels": "email",
        },
    }[rule]

    response = post(admin_client, change_url(comment), fields, **{**base, **changes})

    page = response.content.decode()
    assert response.status_code == 200
    assert f"{path}: {message or ''}" in page
    part = path.replace(".", "__")
    beside = page.split(f'id="id_{part}"', 1)[1].split("</div>", 1)[0]
    assert '<span class="clarion-error">' in beside
    comment.refresh_from_db()
    assert getattr(comment, rule) is None


def test_required_channels_outside_the_channels_are_refused(admin_client, comment):
    fields = scrape(admin_client.get(change_url(comment)))

    response = post(admin_client, change_url(comment), fields, required_channels=["sms"])

    assert "Must be a subset of channels." in response.content.decode()


def test_an_enabled_channel_checkbox_without_a_template_is_refused(admin_client, comment):
    fields = scrape(admin_client.get(change_url(comment)))

    response = post(admin_client, change_url(comment), fields, channels=["in_app", "email", "sms"])

    assert "templates.sms: The channel sms is enabled but has no template." in (
        response.content.decode()
    )
    comment.refresh_from_db()
    assert comment.channels == ["in_app", "email"]


def test_json_posted_without_the_grid_still_saves(admin_client, comment):
    """A script posting the columns as JSON (no widget markers) is read as before."""
    fields = scrape(admin_client.get(change_url(comment)))
    fields = {k: v for k, v in fields.items() if not k.startswith(("templates__", "digest__"))}
    templates = {**BODY["templates"], "sms": {"en": {"text": "{{ comment }}"}}}

    response = post(
        admin_client,
        change_url(comment),
        fields,
        templates=json.dumps(templates),
        digest=json.dumps({"window_seconds": 30}),
        channels="in_app,email,sms",
    )

    assert response.status_code == 302
    comment.refresh_from_db()
    assert (comment.templates, comment.digest) == (templates, {"window_seconds": 30})
    assert comment.channels == ["in_app", "email", "sms"]


def test_the_preview_names_the_variables_each_template_uses(admin_client):
    response = admin_client.post(
        f"{TYPE_URL}preview/",
        {"templates": json.dumps(BODY["templates"]), "sample_data": "{}", "locale": "pt-BR"},
    )

    body = response.json()
    assert body["used"]["in_app.pt-BR"] == ["actor", "post_title"]
    assert body["channels"]["in_app"]["title"] == "Ana comentou em "  # the preview actor


# --- version history -------------------------------------------------------


def edit_subject(comment: NotificationType, subject: str) -> None:
    templates = json.loads(json.dumps(comment.templates))
    templates["email"]["en"]["subject"] = subject
    notification_type_put(key=comment.key, body={**BODY, "templates": templates})
    comment.refresh_from_db()


def test_the_history_shows_each_version_with_its_diff(admin_client, comment):
    edit_subject(comment, "Re: {{ post_title }}")

    page = admin_client.get(change_url(comment)).content.decode()

    history = page.split('id="clarion-history"', 1)[1]
    assert "email / en" in history
    assert '<span class="clarion-diff--del">-New comment on {{ post_title }}</span>' in history
    assert '<span class="clarion-diff--add">+Re: {{ post_title }}</span>' in history
    assert "Restore v1" in history and "Restore v2" not in history  # v2 is in use


def test_restoring_a_version_makes_it_current_as_a_new_version(admin_client, comment):
    edit_subject(comment, "Re: {{ post_title }}")
    first = TemplateVersion.objects.get(type=comment, channel="email", locale="en", version=1)
    fields = scrape(admin_client.get(change_url(comment)))

    response = admin_client.post(
        f"{TYPE_URL}{comment.pk}/restore/{first.pk}/", {**fields, "_restore": first.pk}
    )

    assert response.status_code == 302 and response["Location"] == change_url(comment)
    comment.refresh_from_db()
    assert comment.templates["email"]["en"]["subject"] == "New comment on {{ post_title }}"
    latest = TemplateVersion.objects.filter(type=comment, channel="email", locale="en").first()
    assert (latest.version, latest.fields) == (3, first.fields)
    page = admin_client.get(change_url(comment)).content.decode()
    assert "Restored email/en: it is now version 3." in page


def test_a_version_that_no_longer_passes_the_rules_is_not_restored(admin_client, comment):
    # An old version kept from before a rule existed: an email without a subject.
    old = TemplateVersion.objects.create(
        type=comment, channel="email", locale="en", version=9, fields={"text": "hi"}
    )

    response = admin_client.post(f"{TYPE_URL}{comment.pk}/restore/{old.pk}/", follow=True)

    assert "Not restored: templates.email.en.subject: An email needs a subject." in (
        response.content.decode()
    )
    comment.refresh_from_db()
    assert comment.templates["email"]["en"]["subject"] == "New comment on {{ post_title }}"


def test_restore_takes_only_a_post_of_a_version_of_that_type(admin_client, comment):
    other = notification_type_put(key="other", body=BODY)[0]
    version = TemplateVersion.objects.filter(type=other).first()

    assert admin_client.get(f"{TYPE_URL}{comment.pk}/restore/{version.pk}/").status_code == 405
    assert admin_client.post(f"{TYPE_URL}{comment.pk}/restore/{version.pk}/").status_code == 404


# --- send a test ------------------------------------------------------------


def send_test_url(notification_type: NotificationType) -> str:
    return f"{TYPE_URL}{notification_type.pk}/send-test/"


def test_the_type_page_offers_send_a_test(admin_client, comment):
    page = admin_client.get(change_url(comment)).content.decode()

    assert f'href="{send_test_url(comment)}">Send a test to…</a>' in page


def test_send_a_test_from_the_type_page_accepts_an_event_with_the_sample_data(
    admin_client, comment
):
    form = admin_client.get(send_test_url(comment)).content.decode()
    assert 'name="recipient"' in form and 'name="action"' not in form

    response = admin_client.post(send_test_url(comment), {"recipient": "tester"}, follow=True)

    assert response.redirect_chain == [(change_url(comment), 302)]
    event = Event.objects.get()
    assert (event.type_id, event.recipients["ids"], event.data) == (
        comment.pk,
        ["tester"],
        BODY["sample_data"],
    )
    assert f"Sent 1 test event(s) to tester: {event.id}" in response.content.decode()


@pytest.mark.parametrize("recipient", ["a\x00b", "x" * 10_000])
def test_a_hostile_test_recipient_is_refused_with_a_message_and_no_event(
    admin_client, comment, recipient
):
    response = admin_client.post(send_test_url(comment), {"recipient": recipient}, follow=True)

    assert response.status_code == 200
    assert "No test of comment.created sent: recipients[0]: Recipient id must be" in (
        response.content.decode()
    )
    assert not Event.objects.exists()


def test_send_a_test_of_a_type_that_does_not_exist_is_a_404(admin_client, comment):
    assert admin_client.get(f"{TYPE_URL}999999/send-test/").status_code == 404
    assert not Event.objects.exists()


# --- records, read-only ----------------------------------------------------


@pytest.fixture
def produced(comment) -> Event:
    """An event with two notifications, their email deliveries and attempts."""
    event = Event.objects.create(
        type=comment, recipients={"ids": ["ana", "bo"]}, priority="normal", status="done"
    )
    for external_id, status in (("ana", DeliveryStatus.SENT), ("bo", DeliveryStatus.FAILED)):
        recipient = Recipient.objects.create(external_id=external_id, email=f"{external_id}@x.test")
        notification = Notification.objects.create(
            event=event, recipient=recipient, title=f"for {external_id}"
        )
        delivery = Delivery.objects.create(
            notification=notification, channel="email", status=status, attempts=1
        )
        DeliveryAttempt.objects.create(
            delivery=delivery, provider="console", outcome=status, status_code=250, duration_ms=7
        )
    Notification.objects.filter(recipient__external_id="ana").update(read_at=event.created_at)
    return event


RECORDS = ["event", "notification", "delivery", "deliveryattempt"]


def record_pk(model: str):
    return (
        {
            "event": Event,
            "notification": Notification,
            "delivery": Delivery,
            "deliveryattempt": DeliveryAttempt,
        }[model]
        .objects.first()
        .pk
    )


@pytest.mark.parametrize("model", RECORDS)
def test_records_cannot_be_added_changed_or_deleted(admin_client, produced, model):
    base = f"/admin/notifications/{model}/"
    pk = record_pk(model)

    assert admin_client.get(f"{base}add/").status_code == 403
    assert admin_client.get(f"{base}{pk}/delete/").status_code == 403
    page = admin_client.get(f"{base}{pk}/change/")
    assert page.status_code == 200 and 'name="_save"' not in page.content.decode()
    assert admin_client.post(f"{base}{pk}/change/", {"status": "dead"}).status_code == 403
    listing = admin_client.get(base).content.decode()
    assert "delete_selected" not in listing and f"{base}add/" not in listing


def test_an_event_links_to_its_notifications_and_deliveries_with_counts(admin_client, produced):
    page = admin_client.get(f"/admin/notifications/event/{produced.pk}/change/").content.decode()

    assert f'?event__id__exact={produced.pk}">2 in all</a> · unread 1 · read 1' in page
    to_deliveries = f"?notification__event__id__exact={produced.pk}&amp;status__exact="
    assert f'{to_deliveries}failed">failed: 1' in page
    assert f'{to_deliveries}sent">sent: 1' in page


def test_the_event_delivery_link_lists_only_that_events_deliveries(admin_client, produced):
    other = Event.objects.create(type=produced.type, recipients={}, priority="low", status="done")
    notification = Notification.objects.create(event=other, recipient=Recipient.objects.first())
    stray = Delivery.objects.create(notification=notification, channel="sms")

    response = admin_client.get(
        f"/admin/notifications/delivery/?notification__event__id__exact={produced.pk}"
    )

    assert response.status_code == 200
    shown = {row.pk for row in response.context["cl"].result_list}
    theirs = Delivery.objects.filter(notification__event=produced).values_list("pk", flat=True)
    assert shown == set(theirs)
    assert stray.pk not in shown


def test_a_delivery_shows_its_attempt_timeline(admin_client, produced):
    delivery = Delivery.objects.get(status="failed")

    page = admin_client.get(f"/admin/notifications/delivery/{delivery.pk}/change/").content.decode()

    assert "console" in page and "250" in page and "7" in page
    assert f'data-copy="{produced.pk}"' in page  # its event, with a copy button


def test_lists_show_short_ids_with_a_copy_button(admin_client, produced):
    events = admin_client.get("/admin/notifications/event/").content.decode()
    notifications = admin_client.get("/admin/notifications/notification/").content.decode()

    short = str(produced.pk)[:8]
    for page in (events, notifications):
        assert f'data-copy="{produced.pk}"' in page and f">{short}…</code>" in page
        assert "clarion/admin/copy.js" in page


def test_operator_actions_still_run_on_read_only_events(admin_client, produced):
    response = admin_client.post(
        "/admin/notifications/event/", {"action": "republish", "_selected_action": [produced.pk]}
    )

    assert response.status_code == 302  # done events are skipped: nothing to re-publish


# --- recipients ------------------------------------------------------------


def recipient_url(recipient: Recipient) -> str:
    return f"/admin/notifications/recipient/{recipient.pk}/change/"


def test_a_recipient_page_shows_tokens_subscriptions_and_recent_notifications(
    admin_client, produced
):
    ana = Recipient.objects.get(external_id="ana")
    PushToken.objects.create(recipient=ana, platform="fcm", token="fcm-token-1234567890")
    WebPushSubscription.objects.create(
        recipient=ana, endpoint="https://push.example/abc", p256dh="k", auth="a"
    )

    page = admin_client.get(recipient_url(ana)).content.decode()

    assert 'data-copy="fcm-token-1234567890"' in page
    assert "https://push.example/abc" in page
    assert "for ana" in page and f"recipient__id__exact={ana.pk}" in page


def test_the_preference_grid_shows_the_stored_document(admin_client, comment):
    ana = Recipient.objects.create(external_id="ana")
    preferences_put(
        recipient_id=ana.pk,
        body={"channels": {"sms": False}, "categories": {"social": {"email": False}}},
    )

    fields = scrape(admin_client.get(recipient_url(ana)))

    keys = [name for name in fields if name.startswith("preferences__") and name.endswith("__key")]
    rows = {fields[name][0]: name.split("__")[1] for name in keys}
    assert fields[f"preferences__{rows['']}__sms"] == ["off"]
    assert fields[f"preferences__{rows['social']}__email"] == ["off"]
    assert fields[f"preferences__{rows['social']}__sms"] == [""]  # no row: as inherited


def test_the_preference_grid_saves_through_the_preferences_service(admin_client, comment):
    ana = Recipient.objects.create(external_id="ana", timezone="Europe/Lisbon")
    fields = scrape(admin_client.get(recipient_url(ana)))

    response = post(
        admin_client,
        recipient_url(ana),
        fields,
        preferences__0__push="off",
        preferences__1__email="off",
        preferences__1__in_app="on",
        pref_quiet_start="22:00",
        pref_quiet_end="07:00",
        pref_caps__email="5",
    )

    assert response.status_code == 302, response.content.decode()[:3000]
    assert preferences_get(recipient_id=ana.pk) == {
        "channels": {"push": False},
        "categories": {"social": {"email": False, "in_app": True}},
        "types": {},
        "quiet_hours": {"start": "22:00", "end": "07:00"},
        "daily_caps": {"email": 5},
    }


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"pref_quiet_start": "25:00", "pref_quiet_end": "07:00"}, f"quiet_hours.start: {HHMM}"),
        ({"pref_quiet_start": "22:00"}, f"quiet_hours.end: {HHMM}"),
        (
            {"pref_quiet_start": "07:00", "pref_quiet_end": "07:00"},
            "quiet_hours: start and end must differ.",
        ),
        ({"pref_caps__sms": "-3"}, "daily_caps.sms: Must be a whole number from 0 to 100000."),
        ({"pref_caps__sms": "²"}, "daily_caps.sms: Must be a whole number from 0 to 100000."),
        (
            {"preferences__1__key": "k" * 151, "preferences__1__email": "on"},
            "categories: Keys must be 1 to 150 characters.",
        ),
    ],
)
def test_the_preference_form_shows_the_services_errors(admin_client, comment, changes, message):
    ana = Recipient.objects.create(external_id="ana")
    fields = scrape(admin_client.get(recipient_url(ana)))

    response = post(admin_client, recipient_url(ana), fields, preferences__0__sms="off", **changes)

    assert response.status_code == 200 and message in response.content.decode()
    assert preferences_get(recipient_id=ana.pk)["channels"] == {}


def test_a_recipient_can_be_added_before_it_has_preferences(admin_client):
    fields = scrape(admin_client.get("/admin/notifications/recipient/add/"))

    response = post(admin_client, "/admin/notifications/recipient/add/", fields, external_id="zed")

    assert response.status_code == 302
    assert Recipient.objects.filter(external_id="zed").exists()
