"""Public endpoints of the delivery app, outside the API: provider status
callbacks (`/hooks/…`), one-click unsubscribe and open/click tracking."""

from django.conf import settings
from django.urls import include, path

from delivery.hooks import email_events, tracking, unsubscribe
from delivery.hooks.twilio_status import twilio_status

urlpatterns: list = [
    path("hooks/twilio/status", twilio_status, name="twilio-status"),
    path("t/o/<str:token>", tracking.open_pixel, name="delivery-open"),
    path("t/c/<str:token>", tracking.click, name="delivery-click"),
    # <path:…>: a mangled token (a "/" in it) still reaches the view and gets its 400 page.
    path(
        "hooks/unsubscribe/<path:token>", unsubscribe.unsubscribe_view, name="delivery-unsubscribe"
    ),
    path("hooks/email/events", email_events.email_events_view, name="delivery-email-events"),
]

# django-anymail's ESP webhooks (/hooks/anymail/<esp>/tracking/), feeding its
# `tracking` signal (delivery/hooks/email_events.py). Only with a basic-auth
# secret: without one anybody could post bounces that turn recipients' email off.
if getattr(settings, "ANYMAIL", {}).get("WEBHOOK_SECRET"):
    urlpatterns.append(path("hooks/anymail/", include("anymail.urls")))
