"""Topic membership, in bulk."""

from __future__ import annotations

from django.db import connection, transaction

from common.errors import InvalidInput, NotFound
from notifications.models import Topic
from notifications.services.profiles import recipients_upsert
from notifications.validation import validate_external_id, validate_topic_key

MAX_CHANGES_PER_CALL = 10_000


def _ids(body: dict, name: str, errors: dict) -> list[str]:
    value = body.get(name, [])
    if value is None:
        return []
    if not isinstance(value, list):
        errors.setdefault(name, []).append("Must be a list of recipient ids.")
        return []
    bad = [i for i, item in enumerate(value) if validate_external_id(item)]
    for index in bad[:10]:
        errors.setdefault(f"{name}[{index}]", []).append("Not a valid recipient id.")
    return sorted(set(value)) if not bad else []


def topic_subscribers_update(*, key: str, body: object) -> dict[str, int]:
    """Add and remove subscribers; unknown recipients are created on the fly."""
    problem = validate_topic_key(key)
    if problem:
        raise InvalidInput(f"Topic key {problem}.", errors={"key": [problem]})
    if not isinstance(body, dict):
        raise InvalidInput(
            "Expected a JSON object.",
            errors={"non_field_errors": ['Expected {"add": [...], "remove": [...]}.']},
        )
    errors: dict[str, list[str]] = {}
    for name in sorted(set(body) - {"add", "remove"}):
        errors[name] = ["Unknown field."]
    add, remove = _ids(body, "add", errors), _ids(body, "remove", errors)
    if len(add) + len(remove) > MAX_CHANGES_PER_CALL:
        errors.setdefault("add", []).append(f"At most {MAX_CHANGES_PER_CALL} changes per call.")
    if errors:
        raise InvalidInput("The subscriber change has invalid fields.", errors=errors)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO notifications_topic (key, created_at) VALUES (%s, now())"
            " ON CONFLICT (key) DO UPDATE SET key = EXCLUDED.key RETURNING id",
            [key],
        )
        (topic_id,) = cursor.fetchone()
        added = removed = 0
        if add:
            recipient_ids = sorted(profile.id for profile in recipients_upsert(add))
            cursor.execute(
                """
                INSERT INTO notifications_subscription (topic_id, recipient_id, created_at)
                SELECT %s, r, now() FROM unnest(%s::bigint[]) r
                ON CONFLICT (topic_id, recipient_id) DO NOTHING
                """,
                [topic_id, recipient_ids],
            )
            added = cursor.rowcount
        if remove:
            cursor.execute(
                """
                DELETE FROM notifications_subscription s USING notifications_recipient r
                WHERE s.topic_id = %s AND s.recipient_id = r.id AND r.external_id = ANY(%s)
                """,
                [topic_id, remove],
            )
            removed = cursor.rowcount
        cursor.execute(
            "SELECT count(*) FROM notifications_subscription WHERE topic_id = %s", [topic_id]
        )
        (total,) = cursor.fetchone()
    return {"added": added, "removed": removed, "subscribers": total}


def topic_subscribers_page(
    *, key: str, after: int, limit: int
) -> tuple[list[tuple[int, str]], bool]:
    """A keyset page of (recipient id, external id) after `after`; and whether more follow."""
    topic = Topic.objects.filter(key=key).only("id").first()
    if topic is None:
        raise NotFound(f"No topic {key!r}.")
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT s.recipient_id, r.external_id FROM notifications_subscription s
            JOIN notifications_recipient r ON r.id = s.recipient_id
            WHERE s.topic_id = %s AND s.recipient_id > %s
            ORDER BY s.recipient_id LIMIT %s
            """,
            [topic.id, after, limit + 1],
        )
        rows = cursor.fetchall()
    return rows[:limit], len(rows) > limit
