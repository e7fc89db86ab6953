"""Opens (a pixel) and clicks (a redirect) of emails through signed links:
status moves forward, a click reads the in-app notification, and no token
leads anywhere the template did not link to."""

from __future__ import annotations

import pytest

from delivery.tracking import click_url, link_urls, open_url, tracked_html
from notifications.models import Delivery, Notification
from tests.test_dispatch import NIGHT, send_event

HTML = (
    '<p><a href="https://example.com/post/7?x=1&amp;y=2">post</a>'
    " <a href='http://example.org/b'>b</a> <a href=\"mailto:x@y\">m</a>"
    ' <a href="https://example.com/post/7?x=1&amp;y=2">again</a></p></body>'
)


def sent_email(api_key, external_id: str) -> Delivery:
    event_id = send_event(api_key, external_id, NIGHT)
    email = Delivery.objects.get(notification__event_id=event_id, channel="email")
    Delivery.objects.filter(id=email.id).update(
        status="sent", content={"subject": "s", "html": HTML}
    )
    return email


def path_of(url: str) -> str:
    return url.split("://", 1)[1].split("/", 1)[1].join(["/", ""])


def test_links_go_through_click_redirects_and_a_pixel_is_added(settings):
    html = tracked_html(5, HTML)

    assert html.count("/t/c/") == 3 and "mailto:x@y" in html
    assert "example.com/post" not in html and "/t/o/" in html
    assert html.index("/t/o/") < html.index("</body>")


def test_link_urls_are_distinct_and_unescaped():
    assert link_urls(HTML) == ["https://example.com/post/7?x=1&y=2", "http://example.org/b"]


@pytest.mark.django_db
def test_the_pixel_marks_the_delivery_opened(client, api_key, social_type):
    email = sent_email(api_key, "t1")

    response = client.get(path_of(open_url(email.id)))

    assert response.status_code == 200 and response["Content-Type"] == "image/gif"
    email.refresh_from_db()
    assert email.status == "opened"


@pytest.mark.django_db
def test_a_click_redirects_to_the_rendered_url_marks_clicked_and_reads_the_notification(
    client, api_key, social_type
):
    email = sent_email(api_key, "t2")

    response = client.get(path_of(click_url(email.id, 0)))

    assert (response.status_code, response["Location"]) == (
        302,
        "https://example.com/post/7?x=1&y=2",
    )
    email.refresh_from_db()
    assert email.status == "clicked"
    assert Notification.objects.get(id=email.notification_id).read_at is not None


@pytest.mark.django_db
def test_an_open_after_a_click_does_not_move_the_status_back(client, api_key, social_type):
    email = sent_email(api_key, "t3")
    client.get(path_of(click_url(email.id, 1)))
    client.get(path_of(open_url(email.id)))
    email.refresh_from_db()
    assert email.status == "clicked"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "token",
    ["forged", "x" * 5000, "a%00b", "..%2F..%2Fadmin", "eyJkIjoxfQ:1:abc"],
)
def test_a_bad_click_token_is_refused_and_redirects_nowhere(client, token):
    response = client.get(f"/t/c/{token}")
    assert response.status_code in (400, 404) and "Location" not in response


@pytest.mark.django_db
def test_a_click_token_for_a_link_the_template_did_not_render_is_a_404(
    client, api_key, social_type
):
    email = sent_email(api_key, "t4")
    response = client.get(path_of(click_url(email.id, 7)))
    assert response.status_code == 404 and "Location" not in response


@pytest.mark.django_db
def test_an_open_token_used_as_a_click_is_refused(client, api_key, social_type):
    email = sent_email(api_key, "t5")
    token = open_url(email.id).rsplit("/", 1)[1]
    assert client.get(f"/t/c/{token}").status_code == 400


@pytest.mark.django_db
def test_an_expired_click_link_is_a_410(client, api_key, social_type, settings):
    email = sent_email(api_key, "t6")
    url = click_url(email.id, 0)
    settings.CLARION = {**settings.CLARION, "TRACKING_TOKEN_MAX_AGE_SECONDS": -1}
    assert client.get(path_of(url)).status_code == 410


@pytest.mark.django_db
def test_a_bad_pixel_token_still_answers_the_image_and_changes_nothing(client):
    response = client.get("/t/o/garbage")
    assert response.status_code == 200 and response["Content-Type"] == "image/gif"
