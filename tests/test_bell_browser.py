"""The bell widget in real headless Chromium against the real stack."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import pytest

from clarion_dev.browser import chromium_path
from notifications.models import Recipient
from notifications.services.events import event_accept
from tests.helpers import wait_for

# Playwright's sync API keeps an event loop in this thread; the test's own
# database calls (test data, not the server's) are still plain sync calls.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.pipeline]

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    path = chromium_path()
    assert path, (
        "Chromium is needed for the browser tests: apt-get install chromium"
        " (make test does it as root)"
    )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=path,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--no-first-run",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
            ],
        )
        yield browser
        browser.close()


@pytest.fixture
def people(db):
    for external_id in ("alice", "bob"):
        Recipient.objects.get_or_create(external_id=external_id)


def open_bell(context, server, recipient: str):
    page = context.new_page()
    page.goto(f"{server.base_url}/demo/?recipient={recipient}")
    page.wait_for_selector("body[data-ready=true]", timeout=15_000)
    return page


def badge(page) -> str:
    node = page.locator("[data-testid=clarion-badge]")
    return "" if node.is_hidden() else node.inner_text()


def post_event(server, api_key, recipient: str, comment: str) -> None:
    response = httpx.post(
        f"{server.base_url}/api/v1/events",
        headers={"Authorization": f"Bearer {api_key[1]}"},
        json={
            "type": "comment.created",
            "recipients": [recipient],
            "actor": "zoe",
            "data": {"comment": comment},
        },
    )
    assert response.status_code == 202


def test_badge_lights_up_within_a_second_of_a_posted_event(
    browser, demo_server, worker, clean_redis, api_key, comment_type, people
):
    context = browser.new_context()
    page = open_bell(context, demo_server, "alice")
    assert badge(page) == ""
    started = time.monotonic()
    post_event(demo_server, api_key, "alice", "hello there")
    page.wait_for_function(
        "document.querySelector('[data-testid=clarion-badge]').textContent === '1'", timeout=5_000
    )
    elapsed = time.monotonic() - started
    assert elapsed < 1.0, f"badge took {elapsed:.3f}s"
    page.click("[aria-haspopup=true]")
    assert page.locator("[data-testid=clarion-item]").count() == 1
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "bell.png"))
    context.close()


def test_clicking_an_item_marks_it_read_and_a_second_tab_follows(
    browser, demo_server, worker, clean_redis, api_key, comment_type, people
):
    post_event(demo_server, api_key, "alice", "first")
    post_event(demo_server, api_key, "alice", "second")
    wait_for(
        lambda: Recipient.objects.get(external_id="alice").notification_set.count() == 2,
        what="fan-out",
    )
    context = browser.new_context()
    tab1, tab2 = open_bell(context, demo_server, "alice"), open_bell(context, demo_server, "alice")
    assert badge(tab1) == badge(tab2) == "2"
    tab1.click("[aria-haspopup=true]")
    tab1.locator("[data-testid=clarion-item]").first.click()  # marks it read, then opens its url
    tab2.wait_for_function(
        "document.querySelector('[data-testid=clarion-badge]').textContent === '1'", timeout=5_000
    )
    tab2.click("[aria-haspopup=true]")
    assert tab2.locator(".clarion-bell__item--unread").count() == 1
    tab2.click("text=Mark all as read")
    tab3 = open_bell(context, demo_server, "alice")
    assert badge(tab3) == ""
    context.close()


def test_a_token_for_one_recipient_never_shows_anothers_items(
    browser, demo_server, worker, clean_redis, api_key, comment_type, people
):
    context = browser.new_context()
    page = open_bell(context, demo_server, "alice")
    post_event(demo_server, api_key, "bob", "secret for bob")
    post_event(demo_server, api_key, "alice", "for alice")
    page.wait_for_function(
        "document.querySelector('[data-testid=clarion-badge]').textContent === '1'", timeout=5_000
    )
    page.click("[aria-haspopup=true]")
    texts = page.locator("[data-testid=clarion-item]").all_inner_texts()
    assert len(texts) == 1 and "for alice" in texts[0]
    assert "secret for bob" not in page.content()
    context.close()


def test_the_page_reconnects_after_a_server_restart_and_shows_what_it_missed_once(
    browser, worker, clean_redis, api_key, comment_type, people
):
    from django.conf import settings
    from django.db import connection

    from tests.servers import AsgiServer
    from tests.workers import database_url_for

    server = AsgiServer(
        database_url=database_url_for(connection.settings_dict),
        redis_url=settings.REDIS_URL,
        debug=True,
    )
    server.start()
    try:
        context = browser.new_context()
        page = open_bell(context, server, "alice")
        post_event(server, api_key, "alice", "before the restart")
        page.wait_for_function(
            "document.querySelector('[data-testid=clarion-badge]').textContent === '1'",
            timeout=5_000,
        )
        server.kill()
        for n in range(2):  # accepted while the web server is down; the worker fans them out
            event_accept(
                api_key_id=api_key[0].id,
                body={
                    "type": "comment.created",
                    "recipients": ["alice"],
                    "data": {"comment": f"missed {n}"},
                },
            )
        wait_for(
            lambda: Recipient.objects.get(external_id="alice").notification_set.count() == 3,
            what="fan-out",
        )
        server.start()
        page.wait_for_function(
            "document.querySelector('[data-testid=clarion-badge]').textContent === '3'",
            timeout=40_000,
        )
        page.click("[aria-haspopup=true]")
        texts = page.locator("[data-testid=clarion-item]").all_inner_texts()
        assert len(texts) == 3
        assert sum("missed 0" in t for t in texts) == 1 and sum("missed 1" in t for t in texts) == 1
        context.close()
    finally:
        server.stop()


def test_markup_in_event_data_shows_as_text_and_never_runs(
    browser, demo_server, worker, clean_redis, api_key, comment_type, people
):
    context = browser.new_context()
    page = open_bell(context, demo_server, "alice")
    dialogs = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    post_event(demo_server, api_key, "alice", "<img src=x onerror=alert(1)><b>bold?</b>")
    page.wait_for_function(
        "document.querySelector('[data-testid=clarion-badge]').textContent === '1'", timeout=5_000
    )
    page.click("[aria-haspopup=true]")
    body = page.locator(".clarion-bell__body").first
    assert body.inner_text() == "<img src=x onerror=alert(1)><b>bold?</b>"
    assert page.locator(".clarion-bell__list img").count() == 0
    assert dialogs == []
    context.close()
