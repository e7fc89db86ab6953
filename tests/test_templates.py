"""Sandboxed, bounded templates per channel and locale; versions; admin preview."""

from __future__ import annotations

import time

import pytest

from notifications.models import Notification
from notifications.services.events import event_accept
from notifications.services.fanout import event_fan_out_page
from notifications.services.types import notification_type_put
from templates_app.engine import TemplateError, render
from templates_app.models import TemplateVersion
from templates_app.rendering import build_context, render_channel

CONTEXT = build_context(
    data={"comment": "<b>hi</b> & bye", "items": [1, 2]},
    actor="ana",
    event={"id": "e1"},
    recipient={"external_id": "r1", "email": "r1@example.com"},
)

INJECTIONS = [
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ actor.__class__ }}",
    "{{ actor|attr('__class__') }}",
    "{{ items|attr('__class__')|attr('__base__') }}",
    "{{ self.__init__.__globals__ }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ joiner.__init__.__globals__ }}",
    "{{ lipsum.__globals__['os'] }}",
    "{{ range.__self__ }}",
    "{{ event.__class__.__base__.__subclasses__() }}",
    "{{ items.append(3) }}",
    "{{ recipient.update({'email': 'x'}) }}",
    "{{ 'x'|format(1) }}",
    "{{ ().__class__ }}",
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
    "{{ 'a' * 1000000000 }}",
    "{{ items * 100000000 }}",
    "{{ 9 ** 99999999 }}",
    (
        "{{ 'x'|replace('x','xxxxxxxxxx')|replace('x','xxxxxxxxxx')|replace('x','xxxxxxxxxx')"
        "|replace('x','xxxxxxxxxx')|replace('x','xxxxxxxxxx')|replace('x','xxxxxxxxxx') }}"
    ),
    "{% macro m(n) %}{{ m(n + 1) }}{% endmacro %}{{ m(1) }}",
    "{% set x = namespace() %}",
    "{{ dict(a=1) }}",
]


@pytest.mark.parametrize("source", INJECTIONS)
def test_the_injection_corpus_is_refused(source):
    started = time.monotonic()
    with pytest.raises(TemplateError):
        render(source, CONTEXT)
    assert time.monotonic() - started < 2.0


@pytest.mark.parametrize(
    "source",
    ["{{ settings }}", "{{ config }}", "{{ request }}", "{{ SECRET_KEY }}", "{{ objects }}"],
)
def test_settings_and_the_orm_are_out_of_reach(source, settings):
    assert render(source, CONTEXT) == ""


def test_variables_are_escaped_in_html_and_in_app_but_not_in_text():
    templates = {
        "email": {"en": {"subject": "{{ comment }}", "html": "<p>{{ comment }}</p>"}},
        "in_app": {"en": {"title": "{{ actor }}", "body": "{{ comment }}"}},
    }
    email = render_channel(
        templates=templates, channel="email", locale="en", default_locale="en", context=CONTEXT
    )
    assert email["subject"] == "<b>hi</b> & bye"
    assert email["html"] == "<p>&lt;b&gt;hi&lt;/b&gt; &amp; bye</p>"
    in_app = render_channel(
        templates=templates, channel="in_app", locale="en", default_locale="en", context=CONTEXT
    )
    assert in_app["body"] == "&lt;b&gt;hi&lt;/b&gt; &amp; bye"


def test_a_plain_text_part_is_derived_from_html_when_none_is_given():
    templates = {
        "email": {
            "en": {
                "subject": "s",
                "html": "<h1>Hello {{ actor }}</h1>"
                "<p>See <a href='https://x.test/p'>the post</a></p>",
            }
        }
    }
    email = render_channel(
        templates=templates, channel="email", locale="en", default_locale="en", context=CONTEXT
    )
    assert email["text"] == "Hello ana\n\nSee the post (https://x.test/p)"


@pytest.mark.parametrize(
    "wanted,expected",
    [
        ("pt-BR", "Olá BR"),
        ("pt-PT", "Olá"),
        ("pt", "Olá"),
        ("de", "Hello"),
        ("", "Hello"),
        ("PT-br", "Olá BR"),
    ],
)
def test_locale_falls_back_from_region_to_language_to_the_type_default(wanted, expected):
    templates = {
        "sms": {"en": {"text": "Hello"}, "pt": {"text": "Olá"}, "pt-BR": {"text": "Olá BR"}}
    }
    out = render_channel(
        templates=templates, channel="sms", locale=wanted, default_locale="en", context=CONTEXT
    )
    assert out["text"] == expected


def test_templates_see_data_actor_recipient_and_event():
    assert render(
        "{{ actor }} {{ comment|length }} {{ recipient.email }} {{ event.id }} {{ missing }}",
        CONTEXT,
    ) == ("ana 15 r1@example.com e1 ")


@pytest.mark.django_db
def test_a_template_with_bad_syntax_is_refused_naming_its_path(producer):
    response = producer.put(
        "/api/v1/notification-types/x.y",
        {"templates": {"email": {"en": {"subject": "{{ actor ", "body": "x"}}}},
        format="json",
    )
    assert response.status_code == 422
    errors = response.json()["errors"]
    assert "templates.email.en.subject" in errors and "templates.email.en.body" in errors


@pytest.mark.django_db
def test_an_in_app_template_that_fails_leaves_the_fan_out_going(api_key, producer):
    notification_type_put(
        key="boom", body={"templates": {"in_app": {"en": {"title": "{{ 'a' * 10000000 }}"}}}}
    )
    event_id = event_accept(
        api_key_id=api_key[0].id, body={"type": "boom", "recipients": ["a", "b"]}
    ).id
    assert event_fan_out_page(event_id=event_id, page=0).inserted == 2
    assert set(Notification.objects.values_list("title", flat=True)) == {"boom"}


@pytest.mark.django_db
def test_editing_a_template_adds_a_version_and_does_not_change_what_was_sent(api_key):
    body = {"templates": {"in_app": {"en": {"title": "First {{ actor }}"}}}}
    notification_type, _ = notification_type_put(key="greeting", body=body)
    event_id = event_accept(
        api_key_id=api_key[0].id, body={"type": "greeting", "recipients": ["a"], "actor": "ana"}
    ).id
    event_fan_out_page(event_id=event_id, page=0)
    notification_type_put(
        key="greeting", body={"templates": {"in_app": {"en": {"title": "Second {{ actor }}"}}}}
    )
    notification_type_put(
        key="greeting", body={"templates": {"in_app": {"en": {"title": "Second {{ actor }}"}}}}
    )
    versions = list(
        TemplateVersion.objects.filter(type=notification_type).values_list("version", "fields")
    )
    assert versions == [(2, {"title": "Second {{ actor }}"}), (1, {"title": "First {{ actor }}"})]
    assert Notification.objects.get(event_id=event_id).title == "First ana"


@pytest.mark.django_db
def test_the_admin_live_preview_renders_posted_templates_against_sample_data(admin_client):
    response = admin_client.post(
        "/admin/notifications/notificationtype/preview/",
        {
            "templates": (
                '{"email": {"en": {"subject": "Hi {{ name }}", "html": "<b>{{ name }}</b>"}},'
                ' "sms": {"en": {"text": "{{ name"}}}'
            ),
            "sample_data": '{"name": "Ana <3"}',
            "locale": "en",
        },
    )
    body = response.json()
    assert body["channels"]["email"] == {
        "subject": "Hi Ana <3",
        "html": "<b>Ana &lt;3</b>",
        "text": "Ana <3",
    }
    assert "templates.sms.en.text" in body["errors"]


@pytest.mark.django_db
def test_the_admin_change_page_shows_the_preview(admin_client):
    notification_type, _ = notification_type_put(
        key="greeting", body={"templates": {"in_app": {"en": {"title": "Hi"}}}}
    )
    page = admin_client.get(
        f"/admin/notifications/notificationtype/{notification_type.pk}/change/"
    ).content.decode()
    assert "clarion-preview" in page and "template_preview.js" in page


@pytest.mark.django_db
def test_the_admin_sends_a_test_to_a_recipient(admin_client):
    from notifications.models import Event

    notification_type, _ = notification_type_put(
        key="greeting",
        body={
            "templates": {"in_app": {"en": {"title": "Hi {{ name }}"}}},
            "sample_data": {"name": "Ana"},
        },
    )
    response = admin_client.post(
        "/admin/notifications/notificationtype/",
        {"action": "send_test", "_selected_action": [notification_type.pk], "recipient": "tester"},
    )
    assert response.status_code == 302
    event = Event.objects.get()
    assert (event.type_id, event.recipients["ids"], event.data) == (
        notification_type.pk,
        ["tester"],
        {"name": "Ana"},
    )


def test_a_key_named_like_a_dict_method_reads_the_key():
    from templates_app.engine import render

    source = "{% for item in digest.items %}{{ item.actor }},{% endfor %}{{ data.keys }}"
    assert (
        render(
            source,
            {"digest": {"items": [{"actor": "a"}, {"actor": "b"}]}, "data": {"keys": 3}},
            autoescape=False,
        )
        == "a,b,3"
    )
