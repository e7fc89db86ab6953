"""Recipient profiles as fan-out, digests and delivery read them, and the
`recipient` a template sees. The profile's columns are listed here once."""

from __future__ import annotations

from typing import Any, NamedTuple

from common.prepared import prepared_cursor
from common.sqljson import from_db_json

PROFILE_COLUMNS = ("id", "external_id", "email", "phone", "locale", "timezone", "data")


def profile_columns(alias: str, *, prefix: str = "") -> str:
    """The profile's columns of table alias `alias` for a SELECT list, each
    renamed `<prefix><column>` when a prefix is given (joins with other ids)."""
    if not prefix:
        return ", ".join(f"{alias}.{column}" for column in PROFILE_COLUMNS)
    return ", ".join(f"{alias}.{column} AS {prefix}{column}" for column in PROFILE_COLUMNS)


class Profile(NamedTuple):
    id: int
    external_id: str
    email: str
    phone: str
    locale: str
    timezone: str
    data: Any  # JSON: a dict, or its text where the driver did not decode it

    @classmethod
    def from_prefixed(cls, row: Any, prefix: str) -> Profile:
        """The profile inside a named row whose profile columns carry `prefix`."""
        return cls(*(getattr(row, prefix + column) for column in PROFILE_COLUMNS))


def recipient_context(profile: Profile) -> dict:
    """The `recipient` a template sees. Its `id` is the producer's id for the
    recipient (the external id), never the internal row id."""
    return {
        "id": profile.external_id,
        "external_id": profile.external_id,
        "email": profile.email,
        "phone": profile.phone,
        "locale": profile.locale,
        "timezone": profile.timezone,
        "data": from_db_json(profile.data) or {},
    }


_UPSERT = f"""
    WITH wanted AS (SELECT unnest(%(ids)s::text[]) AS external_id),
    created AS (
        INSERT INTO notifications_recipient
            (external_id, email, phone, locale, timezone, data, created_at, updated_at)
        SELECT external_id, '', '', '', '', '{{}}', now(), now() FROM wanted
        ON CONFLICT (external_id) DO NOTHING
        RETURNING {", ".join(PROFILE_COLUMNS)}
    )
    SELECT * FROM created
    UNION ALL
    SELECT {profile_columns("r")}
    FROM notifications_recipient r JOIN wanted USING (external_id)
"""
_BY_EXTERNAL_ID = (
    f"SELECT {profile_columns('r')} FROM notifications_recipient r WHERE r.external_id = ANY(%s)"
)


def recipients_upsert(external_ids: list[str]) -> list[Profile]:
    """Profiles of these recipients, creating the unknown ones.

    A recipient created at the same moment by another transaction is neither
    returned by our INSERT (it conflicted) nor visible to the same statement's
    SELECT (its snapshot predates the other commit): those are read again in a
    second statement, which sees them. Without it the recipient would silently
    miss this event.
    """
    wanted = sorted(set(external_ids))  # a fixed order keeps concurrent upserts from deadlocking
    with prepared_cursor() as cursor:
        cursor.execute(_UPSERT, {"ids": wanted})
        profiles = [Profile(*row) for row in cursor.fetchall()]
        if len(profiles) < len(wanted):
            found = {profile.external_id for profile in profiles}
            cursor.execute(
                _BY_EXTERNAL_ID,
                [[external_id for external_id in wanted if external_id not in found]],
            )
            profiles.extend(Profile(*row) for row in cursor.fetchall())
    return profiles
