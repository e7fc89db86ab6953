"""A producer's status webhook endpoints: create (the secret is shown once),
list, delete. Each is owned by the API key that created it.

The URL is checked against the address rule when it is registered
(`common.webhook_urls.check_url`: http(s), a host, no literal private
address); names are checked again on every call, at connect time.
"""

from __future__ import annotations

import base64
import secrets
import uuid

from django.db import transaction

from common.errors import InvalidInput, NotFound
from common.webhook_urls import MAX_URL_LENGTH, check_url
from notifications.models import WebhookEndpoint
from notifications.services.status_webhooks import EVENT_TYPES, subscribed_cache_clear

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32


def webhook_endpoint_create(*, api_key_id: int, body: object) -> tuple[WebhookEndpoint, str]:
    """Validate and store an endpoint; returns it and its secret (shown once)."""
    url, event_types = _parse(body)
    secret = SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()
    with transaction.atomic():
        endpoint = WebhookEndpoint.objects.create(
            api_key_id=api_key_id, url=url, event_types=event_types, secret=secret
        )
        transaction.on_commit(subscribed_cache_clear)
    return endpoint, secret


def webhook_endpoints_list(*, api_key_id: int) -> list[WebhookEndpoint]:
    return list(WebhookEndpoint.objects.filter(api_key_id=api_key_id).order_by("created_at", "id"))


def webhook_endpoint_delete(*, api_key_id: int, endpoint_id: str) -> None:
    """Remove one of this key's endpoints, with its queued calls; NotFound
    for an id that is malformed, unknown or another key's."""
    try:
        pk = uuid.UUID(endpoint_id)
    except (ValueError, TypeError, AttributeError):
        raise NotFound("No such webhook endpoint.") from None
    with transaction.atomic():
        deleted, _ = WebhookEndpoint.objects.filter(id=pk, api_key_id=api_key_id).delete()
        if not deleted:
            raise NotFound("No such webhook endpoint.")
        transaction.on_commit(subscribed_cache_clear)


def webhook_endpoint_json(endpoint: WebhookEndpoint, *, secret: str | None = None) -> dict:
    body = {
        "id": str(endpoint.id),
        "url": endpoint.url,
        "event_types": list(endpoint.event_types),
        "created_at": endpoint.created_at,
    }
    if secret is not None:
        body["secret"] = secret
    return body


def _parse(body: object) -> tuple[str, list[str]]:
    if not isinstance(body, dict):
        raise InvalidInput(
            "The body must be a JSON object.", errors={"non_field_errors": ["Expected an object."]}
        )
    errors: dict[str, list[str]] = {}
    url = body.get("url")
    if url is None:
        errors["url"] = ["This field is required."]
    elif not isinstance(url, str):
        errors["url"] = ["Must be a string."]
    elif len(url) > MAX_URL_LENGTH:
        errors["url"] = [f"Must be at most {MAX_URL_LENGTH} characters."]
    else:
        problem = check_url(url)
        if problem:
            errors["url"] = [problem]
    event_types = body.get("event_types")
    if event_types is None:
        errors["event_types"] = ["This field is required."]
    elif not isinstance(event_types, list) or not event_types:
        errors["event_types"] = ["Must be a non-empty list of event types."]
    else:
        unknown = [t for t in event_types if not isinstance(t, str) or t not in EVENT_TYPES]
        if unknown:
            shown = ", ".join(repr(t)[:60] for t in unknown[:5])
            errors["event_types"] = [
                f"Unknown event types: {shown}. Known: {', '.join(EVENT_TYPES)}."
            ]
    if errors:
        raise InvalidInput("The webhook endpoint has invalid fields.", errors=errors)
    return url, list(dict.fromkeys(event_types))
