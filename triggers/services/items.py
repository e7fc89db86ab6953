"""The producer's items (`POST /api/v1/items`): validated, then upserted in
one statement per request.

Each write takes a position from the items' change sequence (creation, and
every update that changes the item); the saved-search sweep reads items by
that position. Writers hold a shared advisory lock for their transaction and
the sweep takes it exclusively for an instant to learn how far positions are
committed (`committed_position`), so an item whose transaction commits late
is never skipped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

import orjson
from django.conf import settings
from django.db import connection, transaction
from django.utils.dateparse import parse_datetime

from common.errors import InvalidInput, TooLarge
from notifications.validation import validate_external_id

KIND_RE = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}$")
BATCH_LIMIT = 1000
ITEM_FIELDS = {"kind", "id", "attributes", "expires_at"}
# pg_advisory_xact_lock(class, object): item writers share it, the sweep takes it alone.
ITEM_WRITE_LOCK = (0x636C62, 1)  # "clb"


@dataclass(frozen=True)
class ItemInput:
    kind: str
    external_id: str
    attributes_json: str
    expires_at: datetime | None


def validate_kind(value: object) -> str | None:
    if not isinstance(value, str) or not KIND_RE.match(value):
        return "Must be 1 to 64 letters, digits or _ . : -"
    known = settings.CLARION["ITEM_KINDS"]
    if known and value not in known:
        return f"Unknown kind {value!r}; this deployment takes {', '.join(known)}."
    return None


def parse_item(body: object, prefix: str = "") -> tuple[ItemInput | None, dict[str, list[str]]]:
    """One item body: (item, {}) or (None, errors keyed by field path)."""
    if not isinstance(body, dict):
        return None, {prefix or "non_field_errors": ["Expected an item object."]}
    errors: dict[str, list[str]] = {
        f"{prefix}{name}": ["Unknown field."] for name in sorted(set(body) - ITEM_FIELDS)
    }
    kind = body.get("kind")
    if kind is None:
        errors[f"{prefix}kind"] = ["This field is required."]
    elif problem := validate_kind(kind):
        errors[f"{prefix}kind"] = [problem]
    item_id = body.get("id")
    if item_id is None:
        errors[f"{prefix}id"] = ["This field is required."]
    elif problem := validate_external_id(item_id):
        errors[f"{prefix}id"] = [f"Item id {problem}."]
    attributes = body.get("attributes", {})
    attributes_json = "{}"
    if attributes is None:
        attributes = {}
    if not isinstance(attributes, dict):
        errors[f"{prefix}attributes"] = ["Must be a JSON object."]
    else:
        raw = orjson.dumps(attributes)
        limit = settings.CLARION["MAX_ITEM_ATTRIBUTES_BYTES"]
        if len(raw) > limit:
            errors[f"{prefix}attributes"] = [
                f"Must be at most {limit} bytes as JSON (got {len(raw)})."
            ]
        elif long := [k for k in attributes if len(k) > 64]:
            errors[f"{prefix}attributes"] = [
                f"Attribute names are at most 64 characters ({long[0][:64]!r}…)."
            ]
        else:
            attributes_json = raw.decode()
    expires_at = None
    raw_expiry = body.get("expires_at")
    if raw_expiry is not None:
        try:
            expires_at = parse_datetime(raw_expiry) if isinstance(raw_expiry, str) else None
        except ValueError:
            expires_at = None
        if expires_at is None or expires_at.tzinfo is None:
            errors[f"{prefix}expires_at"] = ["Must be an ISO 8601 date-time with a time zone."]
            expires_at = None
    if errors:
        return None, errors
    return ItemInput(kind, item_id, attributes_json, expires_at), {}


def parse_items(body: object) -> list[ItemInput]:
    """The items of a request: one item, or `{"items": [...]}` of 1 to 1,000.
    All or nothing: 422 naming every bad field (`items[3].kind`)."""
    if isinstance(body, dict) and "items" in body:
        if set(body) != {"items"}:
            extra = sorted(set(body) - {"items"})
            raise InvalidInput(
                "A batch holds only items.", errors={name: ["Unknown field."] for name in extra}
            )
        bodies = body["items"]
        if not isinstance(bodies, list) or not 1 <= len(bodies) <= BATCH_LIMIT:
            error = InvalidInput if not isinstance(bodies, list) or not bodies else TooLarge
            raise error(
                f"A batch holds 1 to {BATCH_LIMIT} items.",
                errors={"items": [f"Must be a list of 1 to {BATCH_LIMIT} items."]},
            )
        prefixes = [f"items[{i}]." for i in range(len(bodies))]
    else:
        bodies, prefixes = [body], [""]
    items: list[ItemInput] = []
    errors: dict[str, list[str]] = {}
    for item_body, prefix in zip(bodies, prefixes):
        item, problems = parse_item(item_body, prefix)
        errors.update(problems)
        if item is not None:
            items.append(item)
    if errors:
        too_large = any("bytes as JSON" in m for ms in errors.values() for m in ms)
        raise (TooLarge if too_large else InvalidInput)(
            "The items have invalid fields.", errors=errors
        )
    return items


@dataclass(frozen=True)
class ItemsWritten:
    created: int
    updated: int
    unchanged: int

    def as_json(self) -> dict:
        return {
            "status": "accepted",
            "created": self.created,
            "updated": self.updated,
            "unchanged": self.unchanged,
        }


# New items take one position for both created_seq and changed_seq; an
# update takes a new changed_seq and a version only when something changed
# (posting the same item again is not an update a favourite hears of).
_UPSERT = """
WITH input AS (
    SELECT kind, external_id, attributes::jsonb AS attributes, expires_at,
           nextval('triggers_item_change_seq') AS seq
    FROM unnest(%s::text[], %s::text[], %s::text[], %s::timestamptz[])
         AS t(kind, external_id, attributes, expires_at)
)
INSERT INTO triggers_item AS item
    (kind, external_id, attributes, expires_at, created_seq, changed_seq, version,
     created_at, updated_at)
SELECT kind, external_id, attributes, expires_at, seq, seq, 0, now(), now() FROM input
ON CONFLICT (kind, external_id) DO UPDATE
    SET attributes = EXCLUDED.attributes, expires_at = EXCLUDED.expires_at,
        changed_seq = EXCLUDED.changed_seq, version = item.version + 1, updated_at = now()
    WHERE item.attributes IS DISTINCT FROM EXCLUDED.attributes
       OR item.expires_at IS DISTINCT FROM EXCLUDED.expires_at
RETURNING (xmax = 0) AS created
"""


def items_put(items: list[ItemInput]) -> ItemsWritten:
    """Create or update items (the last of duplicates in one request wins)."""
    latest = {(item.kind, item.external_id): item for item in items}
    rows = list(latest.values())
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock_shared(%s, %s)", ITEM_WRITE_LOCK)
        cursor.execute(
            _UPSERT,
            [
                [r.kind for r in rows],
                [r.external_id for r in rows],
                [r.attributes_json for r in rows],
                [r.expires_at for r in rows],
            ],
        )
        created = sum(1 for (was_created,) in cursor.fetchall() if was_created)
        changed = cursor.rowcount
    return ItemsWritten(created, changed - created, len(rows) - changed)


def committed_position() -> int:
    """The change position up to which every item write has committed (or
    rolled back): waits for the writes in flight, then reads the sequence."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", ITEM_WRITE_LOCK)
        cursor.execute("SELECT last_value, is_called FROM triggers_item_change_seq")
        last_value, is_called = cursor.fetchone()
    return last_value if is_called else 0
