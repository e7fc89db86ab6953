"""The admin's type editor, an event page and a recipient's preference grid in
real headless Chromium against the real ASGI server: edit a template, watch
the preview beside it follow, save; screenshots of each page for people to
look at (bench/results/screenshots/)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model

from notifications.models import Delivery, DeliveryAttempt, Event, Notification, Recipient
from notifications.services.types import notification_type_put
from preferences.services import preferences_get, preferences_put
from tests.test_admin_pages import BODY
from tests.test_bell_browser import browser as browser  # noqa: F401, PLC0414 (fixture)

# Playwright's sync API keeps an event loop in this thread; the test's own
# database calls (test data, not the server's) are still plain sync calls.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.pipeline]

SCREENSHOTS = Path(__file__).resolve().parent.parent / "bench" / "results" / "screenshots"
PASSWORD = "a-long-admin-password"
TITLE_BOX = "textarea[name=templates__in_app__en__title]"
TITLE_PREVIEW = (
    ".clarion-channel[data-channel=in_app] .clarion-locale[data-locale=en]"
    " .clarion-locale__preview pre[data-preview-field=title]"
)


@pytest.fixture
def workbench(db):
    """A type with two locales and a history, an event with its deliveries, a recipient."""
    get_user_model().objects.create_superuser("ops", "ops@example.com", PASSWORD)
    notification_type, _ = notification_type_put(key="comment.created", body=BODY)
    edited = {**BODY["templates"]["email"]["en"], "subject": "Re: {{ post_title }}"}
    notification_type_put(
        key="comment.created",
        body={**BODY, "templates": {**BODY["templates"], "email": {"en": edited}}},
    )
    event = Event.objects.create(
        type=notification_type,
        recipients={"ids": ["ana", "bo", "cy"]},
        priority="normal",
        status="done",
        recipient_count=3,
    )
    outcomes = (("ana", "delivered", 250), ("bo", "failed", 421), ("cy", "skipped", None))
    for external_id, status, code in outcomes:
        recipient = Recipient.objects.create(
            external_id=external_id, email=f"{external_id}@example.com", timezone="Europe/Lisbon"
        )
        notification = Notification.objects.create(
            event=event, recipient=recipient, title=f"zoe commented on Hello ({external_id})"
        )
        delivery = Delivery.objects.create(
            notification=notification,
            channel="email",
            status=status,
            attempts=0 if code is None else 1,
            reason="preference" if code is None else "",
        )
        if code is not None:
            DeliveryAttempt.objects.create(
                delivery=delivery, provider="smtp", outcome=status, status_code=code, duration_ms=40
            )
    ana = Recipient.objects.get(external_id="ana")
    preferences_put(
        recipient_id=ana.pk,
        body={"channels": {"sms": False}, "categories": {"social": {"email": False}}},
    )
    return notification_type, event, ana


def log_in(page, server) -> None:
    page.goto(f"{server.base_url}/admin/login/")
    page.fill("#id_username", "ops")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_selector("#site-name", timeout=15_000)


def test_a_type_is_edited_end_to_end_in_the_admin(browser, asgi_server, workbench):  # noqa: F811
    notification_type, event, ana = workbench
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    log_in(page, asgi_server)

    page.goto(
        f"{asgi_server.base_url}/admin/notifications/notificationtype/{notification_type.pk}/change/"
    )
    preview = page.locator(TITLE_PREVIEW)
    preview.wait_for(timeout=10_000)
    assert preview.inner_text() == "Ana commented on Hello"
    page.fill(TITLE_BOX, "{{ actor }} replied on {{ post_title }} about {{ mood }}")
    page.wait_for_function(
        f"document.querySelector({TITLE_PREVIEW!r})?.textContent === 'Ana replied on Hello about '",
        timeout=10_000,
    )
    lacks = page.locator(
        ".clarion-channel[data-channel=in_app] .clarion-locale[data-locale=en] .clarion-lacks"
    )
    assert lacks.is_visible() and "mood" in lacks.inner_text()
    email = page.locator(".clarion-channel[data-channel=email]")
    email.locator(".clarion-new-locale").fill("es")
    email.locator(".clarion-add-locale__button").click()
    email.locator(".clarion-locale[data-locale=es] .clarion-copy-default").click()
    spanish = email.locator(".clarion-locale[data-locale=es] pre[data-preview-field=subject]")
    spanish.wait_for(timeout=10_000)
    assert spanish.inner_text() == "Re: Hello"
    page.screenshot(path=str(SCREENSHOTS / "admin_type_editor.png"), full_page=True)
    page.click("input[name=_save]")
    page.wait_for_url("**/admin/notifications/notificationtype/", timeout=15_000)
    notification_type.refresh_from_db()
    assert notification_type.templates["in_app"]["en"]["title"] == (
        "{{ actor }} replied on {{ post_title }} about {{ mood }}"
    )
    assert notification_type.templates["email"]["es"] == notification_type.templates["email"]["en"]

    page.goto(f"{asgi_server.base_url}/admin/notifications/event/{event.pk}/change/")
    page.wait_for_selector("text=Deliveries by status")
    assert "failed: 1" in page.content()
    page.screenshot(path=str(SCREENSHOTS / "admin_event_deliveries.png"), full_page=True)

    page.goto(f"{asgi_server.base_url}/admin/notifications/recipient/{ana.pk}/change/")
    page.locator(".clarion-prefs tr[data-scope=global] td").nth(3).locator(
        "input[type=checkbox]"
    ).click()
    page.screenshot(path=str(SCREENSHOTS / "admin_recipient_preferences.png"), full_page=True)
    page.click("input[name=_save]")
    page.wait_for_url("**/admin/notifications/recipient/", timeout=15_000)
    assert preferences_get(recipient_id=ana.pk)["channels"] == {"sms": False, "push": True}
    assert errors == []
    context.close()
