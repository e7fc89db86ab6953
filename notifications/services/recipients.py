"""Recipient profiles: create/replace, erase, export."""

from __future__ import annotations

import re
import zoneinfo

from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import validate_email
from django.db import connection, transaction

from common.errors import InvalidInput, NotFound
from common.rows import named_rows
from common.sqljson import from_db_json
from notifications.models import Recipient
from notifications.recipient_signals import recipient_erasing, recipient_exporting
from notifications.services.push import tokens_revoked_on_commit
from notifications.services.tokens import recipient_tokens_revoke_before
from notifications.validation import validate_external_id
from preferences.models import DeliverySettings
from preferences.services import preferences_get

LOCALE_RE = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$")
PHONE_RE = re.compile(r"^\+[1-9][0-9]{6,14}$")
PROFILE_FIELDS = ("email", "phone", "locale", "timezone", "data")
_TIMEZONES: set[str] | None = None


def _timezones() -> set[str]:
    global _TIMEZONES
    if _TIMEZONES is None:
        _TIMEZONES = zoneinfo.available_timezones()
    return _TIMEZONES


def check_external_id(external_id: str) -> None:
    problem = validate_external_id(external_id)
    if problem:
        raise InvalidInput(f"Recipient id {problem}.", errors={"external_id": [problem]})


def parse_profile(body: object) -> dict:
    """A complete profile from a PUT body; missing fields take their empty value."""
    if not isinstance(body, dict):
        raise InvalidInput(
            "Expected a JSON object.", errors={"non_field_errors": ["Expected an object."]}
        )
    errors: dict[str, list[str]] = {}
    for name in sorted(set(body) - set(PROFILE_FIELDS) - {"external_id"}):
        errors[name] = ["Unknown field."]
    profile = {"email": "", "phone": "", "locale": "", "timezone": "", "data": {}}
    for name in ("email", "phone", "locale", "timezone"):
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, str):
            errors.setdefault(name, []).append("Must be a string.")
            continue
        profile[name] = value.strip()
    if profile["email"]:
        try:
            validate_email(profile["email"])
        except DjangoValidationError:
            errors.setdefault("email", []).append("Enter a valid email address.")
    if profile["phone"] and not PHONE_RE.match(profile["phone"]):
        errors.setdefault("phone", []).append("Must be in E.164 form, e.g. +15551234567.")
    if profile["locale"] and not LOCALE_RE.match(profile["locale"]):
        errors.setdefault("locale", []).append("Must be a BCP 47 tag such as 'en' or 'pt-BR'.")
    if profile["timezone"] and profile["timezone"] not in _timezones():
        errors.setdefault("timezone", []).append(
            "Must be an IANA time zone such as 'Europe/Lisbon'."
        )
    data = body.get("data")
    if data is not None:
        if not isinstance(data, dict):
            errors.setdefault("data", []).append("Must be a JSON object.")
        else:
            profile["data"] = data
    if errors:
        raise InvalidInput("The profile has invalid fields.", errors=errors)
    return profile


def recipient_put(*, external_id: str, body: object) -> tuple[Recipient, bool]:
    """Create or replace a recipient's profile; returns (recipient, created)."""
    check_external_id(external_id)
    profile = parse_profile(body)
    with transaction.atomic():
        recipient, created = Recipient.objects.update_or_create(
            external_id=external_id, defaults=profile
        )
        # Quiet hours are read in the recipient's zone from the settings' copy.
        DeliverySettings.objects.filter(recipient_id=recipient.id).update(
            timezone=recipient.timezone
        )
    return recipient, created


def recipient_get(*, external_id: str) -> Recipient:
    recipient = Recipient.objects.filter(external_id=external_id).first()
    if recipient is None:
        raise NotFound(f"No recipient {external_id!r}.")
    return recipient


def recipient_tokens_revoke(*, external_id: str) -> None:
    """End every recipient token issued until now, without erasing anything;
    open sockets authenticated by one are closed (4401)."""
    recipient = recipient_get(external_id=external_id)
    with transaction.atomic():
        cutoff = recipient_tokens_revoke_before(recipient_id=recipient.id)
        tokens_revoked_on_commit(recipient_id=recipient.id, before_ms=cutoff, erased=False)


def recipient_erase(*, external_id: str) -> None:
    """Erase a recipient with its notifications, deliveries and subscriptions.

    Set-based deletes: a recipient with a million notifications is a few
    statements, not a million ORM objects.
    """
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT id FROM notifications_recipient WHERE external_id = %s FOR UPDATE",
                [external_id],
            )
            found = cursor.fetchone()
            if found is None:
                raise NotFound(f"No recipient {external_id!r}.")
            (recipient_id,) = found
            cursor.execute(
                """
                DELETE FROM notifications_deliveryattempt WHERE delivery_id IN (
                    SELECT d.id FROM notifications_delivery d
                    JOIN notifications_notification n ON n.id = d.notification_id
                    WHERE n.recipient_id = %s)
                """,
                [recipient_id],
            )
            cursor.execute(
                "DELETE FROM notifications_delivery WHERE notification_id IN"
                " (SELECT id FROM notifications_notification WHERE recipient_id = %s)",
                [recipient_id],
            )
            cursor.execute(
                "DELETE FROM notifications_notification WHERE recipient_id = %s", [recipient_id]
            )
            cursor.execute(
                "DELETE FROM notifications_subscription WHERE recipient_id = %s", [recipient_id]
            )
            cursor.execute(
                "DELETE FROM preferences_channelpreference WHERE recipient_id = %s", [recipient_id]
            )
            cursor.execute(
                "DELETE FROM preferences_deliverysettings WHERE recipient_id = %s", [recipient_id]
            )
            for table in ("notifications_pushtoken", "notifications_webpushsubscription"):
                cursor.execute(f"DELETE FROM {table} WHERE recipient_id = %s", [recipient_id])
            recipient_erasing.send(sender=Recipient, recipient_id=recipient_id)
            cursor.execute("DELETE FROM notifications_recipient WHERE id = %s", [recipient_id])
        # Its tokens stop authenticating with the row; its open sockets close.
        tokens_revoked_on_commit(recipient_id=recipient_id, before_ms=2**62, erased=True)


def recipient_json(recipient: Recipient) -> dict:
    """A recipient's profile as the API shows it."""
    return {
        "external_id": recipient.external_id,
        "email": recipient.email,
        "phone": recipient.phone,
        "locale": recipient.locale,
        "timezone": recipient.timezone,
        "data": recipient.data,
        "created_at": recipient.created_at,
        "updated_at": recipient.updated_at,
    }


def recipient_export(*, external_id: str) -> dict:
    """Everything stored about a recipient (its data-subject export)."""
    recipient = recipient_get(external_id=external_id)
    with connection.cursor() as cursor:
        named_rows(cursor).execute(
            """
            SELECT n.id, t.key AS type, n.title, n.body, n.url, n.created_at, n.read_at,
                   n.archived_at, e.actor, e.data
            FROM notifications_notification n
            JOIN notifications_event e ON e.id = n.event_id
            JOIN notifications_notificationtype t ON t.id = e.type_id
            WHERE n.recipient_id = %s ORDER BY n.id
            """,
            [recipient.id],
        )
        notifications = [
            {
                "id": str(row.id),
                "type": row.type,
                "title": row.title,
                "body": row.body,
                "url": row.url,
                "created_at": row.created_at,
                "read_at": row.read_at,
                "archived_at": row.archived_at,
                "actor": row.actor,
                "data": from_db_json(row.data),
            }
            for row in cursor.fetchall()
        ]
        cursor.execute(
            """
            SELECT d.notification_id, d.channel, d.status, d.reason, d.address, d.content,
                   d.created_at, d.updated_at
            FROM notifications_delivery d
            JOIN notifications_notification n ON n.id = d.notification_id
            WHERE n.recipient_id = %s ORDER BY d.id
            """,
            [recipient.id],
        )
        deliveries = [
            {
                "notification_id": str(row.notification_id),
                "channel": row.channel,
                "status": row.status,
                "reason": row.reason,
                "address": row.address,
                "content": from_db_json(row.content),
                "created_at": row.created_at,
                "updated_at": row.updated_at,
            }
            for row in cursor.fetchall()
        ]
        cursor.execute(
            "SELECT t.key FROM notifications_subscription s"
            " JOIN notifications_topic t ON t.id = s.topic_id"
            " WHERE s.recipient_id = %s ORDER BY t.key",
            [recipient.id],
        )
        topics = [row.key for row in cursor.fetchall()]
        cursor.execute(
            "SELECT platform, token, created_at FROM notifications_pushtoken"
            " WHERE recipient_id = %s ORDER BY id",
            [recipient.id],
        )
        push_tokens = [row._asdict() for row in cursor.fetchall()]
        cursor.execute(
            "SELECT endpoint, user_agent, created_at FROM notifications_webpushsubscription"
            " WHERE recipient_id = %s ORDER BY id",
            [recipient.id],
        )
        web_push = [row._asdict() for row in cursor.fetchall()]
    export = {
        "recipient": recipient_json(recipient),
        "preferences": preferences_get(recipient_id=recipient.id),
        "topics": topics,
        "notifications": notifications,
        "deliveries": deliveries,
        "push_tokens": push_tokens,
        "web_push_subscriptions": web_push,
    }
    for _, sections in recipient_exporting.send(sender=Recipient, recipient_id=recipient.id):
        export.update(sections or {})
    return export
