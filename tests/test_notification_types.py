"""Notification types that cannot fail silently: every enabled channel has a
complete template, and the demo data renders fully from its sample_data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from django.conf import settings
from django.core.management import CommandError, call_command

from notifications.models import NotificationType
from notifications.services.types import notification_type_put
from templates_app.preview import template_names_missing, template_preview

pytestmark = pytest.mark.django_db

IN_APP = {"in_app": {"en": {"title": "Hi {{ name }}"}}}
EMAIL = {"email": {"en": {"subject": "Hello {{ name }}", "text": "Hi {{ name }}"}}}
DEMO_FILE = Path(settings.BASE_DIR) / "demo" / "notification_types.yaml"
NO_EMAIL_TEMPLATE = "The channel email is enabled but has no template."
NO_SUBJECT = "An email needs a subject."
ADMIN_ADD = "/admin/notifications/notificationtype/add/"
ADMIN_PREVIEW = "/admin/notifications/notificationtype/preview/"


def put_errors(producer, body: dict, key: str = "x.y") -> dict:
    """The `errors` of a refused PUT of a type (asserting it was refused as problem+json)."""
    response = producer.put(f"/api/v1/notification-types/{key}", body, format="json")
    assert (response.status_code, response["Content-Type"]) == (422, "application/problem+json")
    return response.json()["errors"]


def put_status(producer, body: dict, key: str = "x.y") -> int:
    return producer.put(f"/api/v1/notification-types/{key}", body, format="json").status_code


def test_an_enabled_channel_without_a_template_is_422_naming_it(producer):
    errors = put_errors(producer, {"channels": ["in_app", "email"], "templates": IN_APP})

    assert errors == {"templates.email": [NO_EMAIL_TEMPLATE]}


def test_a_type_without_templates_is_422_for_its_default_in_app_channel(producer):
    assert put_errors(producer, {"category": "x"}) == {
        "templates.in_app": ["The channel in_app is enabled but has no template."]
    }


def test_an_email_without_a_subject_is_422_naming_the_field(producer):
    body = {"channels": ["email"], "templates": {"email": {"en": {"text": "Hi"}}}}

    assert put_errors(producer, body) == {"templates.email.en.subject": [NO_SUBJECT]}


def test_a_blank_subject_counts_as_missing(producer):
    email = {"en": {"subject": "  ", "html": "<p>Hi</p>"}}

    errors = put_errors(producer, {"channels": ["email"], "templates": {"email": email}})

    assert errors == {"templates.email.en.subject": [NO_SUBJECT]}


def test_an_email_needs_a_text_or_an_html_body(producer):
    body = {"channels": ["email"], "templates": {"email": {"en": {"subject": "Hi"}}}}

    assert put_errors(producer, body) == {
        "templates.email.en.text": ["An email needs a text or an html body."]
    }


def test_an_email_with_only_an_html_body_is_accepted(producer):
    email = {"en": {"subject": "Hi", "html": "<p>Hi</p>"}}

    assert put_status(producer, {"channels": ["email"], "templates": {"email": email}}) == 201


@pytest.mark.parametrize(
    "channel,template,path,message",
    [
        (
            "in_app",
            {"body": "b"},
            "templates.in_app.en.title",
            "An in-app notification needs a title.",
        ),
        ("sms", {"text": ""}, "templates.sms.en.text", "An SMS needs a text."),
        ("push", {}, "templates.push.en.title", "A push notification needs a title or a body."),
        (
            "web_push",
            {"url": "/x"},
            "templates.web_push.en.title",
            "A web push notification needs a title or a body.",
        ),
        (
            "webhook",
            {"payload": ""},
            "templates.webhook.en.payload",
            "A webhook template needs a payload.",
        ),
    ],
)
def test_each_channel_names_the_field_it_requires(producer, channel, template, path, message):
    body = {"channels": [channel], "templates": {channel: {"en": template}}}

    assert put_errors(producer, body) == {path: [message]}


def test_a_push_with_only_a_body_is_accepted(producer):
    body = {"channels": ["push"], "templates": {"push": {"en": {"body": "b"}}}}

    assert put_status(producer, body) == 201


def test_every_locale_of_a_template_needs_the_required_fields(producer):
    templates = {"email": {"en": EMAIL["email"]["en"], "pt-BR": {"text": "Olá"}}}

    errors = put_errors(producer, {"channels": ["email"], "templates": templates})

    assert errors == {"templates.email.pt-BR.subject": [NO_SUBJECT]}


def test_an_enabled_channel_needs_a_template_for_the_default_locale(producer):
    sms = {"pt-BR": {"text": "Olá"}}
    body = {"channels": ["sms"], "default_locale": "en", "templates": {"sms": sms}}

    assert put_errors(producer, body) == {
        "templates.sms": ["The channel sms has no template for the default locale en."]
    }


def test_a_regional_default_locale_is_served_by_its_language_template(producer):
    sms = {"en": {"text": "Hi"}}
    body = {"channels": ["sms"], "default_locale": "en-GB", "templates": {"sms": sms}}

    assert put_status(producer, body) == 201


def test_a_webhook_channel_needs_no_template(producer):
    assert put_status(producer, {"channels": ["in_app", "webhook"], "templates": IN_APP}) == 201


def test_a_complete_template_for_a_channel_not_enabled_is_allowed(producer):
    assert put_status(producer, {"channels": ["in_app"], "templates": {**IN_APP, **EMAIL}}) == 201


def test_an_incomplete_template_for_a_channel_not_enabled_is_refused(producer):
    templates = {**IN_APP, "email": {"en": {"text": "Hi"}}}

    errors = put_errors(producer, {"channels": ["in_app"], "templates": templates})

    assert errors == {"templates.email.en.subject": [NO_SUBJECT]}


def test_a_refused_type_changes_nothing(producer):
    notification_type_put(key="x.y", body={"channels": ["in_app"], "templates": IN_APP})

    put_errors(producer, {"channels": ["in_app", "email"], "templates": IN_APP})

    assert NotificationType.objects.get(key="x.y").channels == ["in_app"]


def test_loading_a_file_with_an_incomplete_type_fails_naming_the_type_and_field(tmp_path):
    path = tmp_path / "types.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "a.ok": {"channels": ["in_app"], "templates": IN_APP},
                "b.broken": {"channels": ["in_app", "email"], "templates": IN_APP},
            }
        )
    )

    with pytest.raises(CommandError) as raised:
        call_command("load_notification_types", str(path))

    assert f"b.broken.templates.email: {NO_EMAIL_TEMPLATE}" in str(raised.value)
    assert not NotificationType.objects.exists()  # all or nothing


def test_every_demo_type_loads_with_a_template_for_each_channel():
    call_command("load_notification_types", str(DEMO_FILE))

    types = NotificationType.objects.order_by("key")
    assert [t.key for t in types] == [
        "announcement.posted",
        "comment.created",
        "order.shipped",
        "security.login",
    ]
    for demo in types:
        assert set(demo.channels) <= set(demo.templates), demo.key


def test_every_demo_type_has_sample_data_with_every_variable_its_templates_read():
    for key, body in yaml.safe_load(DEMO_FILE.read_text()).items():
        assert body.get("sample_data"), key
        assert template_names_missing(body["templates"], body["sample_data"]) == {}, key


def test_every_demo_template_renders_fully_from_its_sample_data():
    for key, body in yaml.safe_load(DEMO_FILE.read_text()).items():
        locales = {locale for variants in body["templates"].values() for locale in variants}
        for locale in ("", *locales):
            preview = template_preview(
                templates=body["templates"],
                sample_data=body["sample_data"],
                locale=locale,
                default_locale="en",
            )
            assert preview["errors"] == {}, (key, locale)
            assert set(preview["channels"]) == set(body["templates"]), (key, locale)


def test_names_the_context_provides_are_not_missing_from_sample_data():
    title = "{{ actor }} {{ event.id }} {{ recipient.email }} {{ digest.count }}"
    body = "{% for i in range(2) %}{{ loop.index }}{{ post }}{% endfor %}"
    templates = {"in_app": {"en": {"title": title, "body": body}}}

    assert template_names_missing(templates, {}) == {"in_app.en": ["post"]}


def test_the_admin_preview_lists_variables_sample_data_lacks(admin_client):
    templates = {**IN_APP, "sms": {"en": {"text": "{{ name }} {{ code }}"}}}

    response = admin_client.post(
        ADMIN_PREVIEW, {"templates": json.dumps(templates), "sample_data": '{"name": "Ana"}'}
    )

    assert response.json()["missing"] == {"sms.en": ["code"]}


def test_the_admin_preview_reports_a_required_field_that_renders_empty(admin_client):
    templates = {"email": {"en": {"subject": "{{ headline }}", "text": "x"}}}

    response = admin_client.post(
        ADMIN_PREVIEW, {"templates": json.dumps(templates), "sample_data": "{}"}
    )

    assert response.json()["errors"] == {
        "templates.email": [f"email.subject rendered empty: {NO_SUBJECT}"]
    }


def test_the_admin_change_page_notes_variables_missing_in_sample_data(admin_client):
    notification_type, _ = notification_type_put(
        key="greeting",
        body={
            "channels": ["in_app", "email"],
            "templates": {**IN_APP, **EMAIL},
            "sample_data": {"other": 1},
        },
    )

    page = admin_client.get(f"/admin/notifications/notificationtype/{notification_type.pk}/change/")

    text = page.content.decode()
    assert "in_app.en — Missing in sample_data: name" in text
    assert "email.en — Missing in sample_data: name" in text


def admin_form(**fields) -> dict:
    """What the admin's add form posts for a type (and its empty inline of versions)."""
    return {
        "key": "greeting",
        "category": "general",
        "priority": "normal",
        "channels": "in_app",
        "required_channels": "",
        "default_locale": "en",
        "templates": json.dumps(IN_APP),
        "sample_data": "{}",
        "digest": "null",
        "throttle": "null",
        "template_versions-TOTAL_FORMS": "0",
        "template_versions-INITIAL_FORMS": "0",
        **fields,
    }


def test_the_admin_form_saves_a_complete_type(admin_client):
    response = admin_client.post(ADMIN_ADD, admin_form())

    assert response.status_code == 302
    assert NotificationType.objects.get().templates == IN_APP


def test_the_admin_form_refuses_an_enabled_channel_without_a_template(admin_client):
    response = admin_client.post(ADMIN_ADD, admin_form(channels="in_app,email"))

    assert response.status_code == 200
    assert f"templates.email: {NO_EMAIL_TEMPLATE}" in response.content.decode()
    assert not NotificationType.objects.exists()


def test_the_admin_form_refuses_an_email_without_a_subject(admin_client):
    templates = json.dumps({**IN_APP, "email": {"en": {"text": "Hi"}}})

    response = admin_client.post(
        ADMIN_ADD, admin_form(channels="in_app,email", templates=templates)
    )

    assert response.status_code == 200
    assert f"templates.email.en.subject: {NO_SUBJECT}" in response.content.decode()
    assert not NotificationType.objects.exists()
