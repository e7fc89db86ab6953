"""The statement that inserts one page of fan-out, with every per-recipient
rule applied set-based inside it (see docs/preferences.md).

A page is a relation `page(recipient_id, title, body, url)`; the statement

1. inserts a notification per row (`ON CONFLICT DO NOTHING`: exactly once),
   visible unless the recipient turned in-app off;
2. works out, for recipients with delivery settings, whether their quiet
   hours are on now in their time zone and when they end, and their local day;
3. inserts a delivery per new notification and external channel: `skipped`
   (`preference`) where the recipient turned the channel off, else `queued`,
   due now or at the end of the quiet hours (`quiet_hours`);
4. returns the page's size and last recipient, the recipients notified (and
   their events, for a page of several events), and the queued deliveries
   that a daily cap or the type's throttle must still pass (checked against
   Redis counters by services.limits).

`critical` bypasses quiet hours, caps and throttles. Preferences and
settings are read once per page (an index scan on `recipient_id = ANY(page
ids)`) and hash-joined, never looked up row by row.
"""

from __future__ import annotations

from functools import lru_cache

from notifications.services.profiles import profile_columns

OFF = "decided.enabled IS FALSE AND NOT ch = ANY(%(required)s::text[])"
_OFF = OFF

# The rules every statement that creates deliveries applies, as SQL pieces
# (also triggers/services/escalation_sweep.py). `{rows}` names a relation
# with a recipient_id column.
#
# The most specific on/off per (recipient, channel): type, then category,
# then global. One index scan for all the rows (recipient_id = ANY(ids)).
DECIDED = """
    SELECT DISTINCT ON (p.recipient_id, p.channel) p.recipient_id, p.channel, p.enabled
    FROM preferences_channelpreference p
    WHERE p.recipient_id = ANY(ARRAY(SELECT recipient_id FROM {rows}))
      AND ((p.scope = 'type' AND p.key = %(type_key)s)
        OR (p.scope = 'category' AND p.key = %(category)s)
        OR (p.scope = 'global' AND p.key = ''))
    ORDER BY p.recipient_id, p.channel,
             CASE p.scope WHEN 'type' THEN 0 WHEN 'category' THEN 1 ELSE 2 END
"""
# Quiet hours, caps and local clock of the recipients that have settings:
# the time-zone conversion is done once per recipient, here.
SETTINGS = """
    SELECT s.recipient_id, s.quiet_start, s.quiet_end, s.daily_caps, z.tz,
           (%(now)s::timestamptz AT TIME ZONE z.tz) AS local_now
    FROM preferences_deliverysettings s
    CROSS JOIN LATERAL (SELECT coalesce(nullif(s.timezone, ''), 'UTC') AS tz) z
    WHERE s.recipient_id = ANY(ARRAY(SELECT recipient_id FROM {rows}))
"""
# When quiet hours that are on now end (NULL: not in quiet hours), from a
# row `s` of SETTINGS.
QUIET_RELEASE_AT = """CASE WHEN s.quiet_start IS NOT NULL AND NOT %(critical)s AND (
                    CASE WHEN s.quiet_start < s.quiet_end
                         THEN s.local_now::time >= s.quiet_start
                              AND s.local_now::time < s.quiet_end
                         ELSE s.local_now::time >= s.quiet_start
                              OR s.local_now::time < s.quiet_end END)
                THEN ((CASE WHEN s.local_now::time < s.quiet_end THEN s.local_now::date
                            ELSE s.local_now::date + 1 END) + s.quiet_end) AT TIME ZONE s.tz
           END"""

_PAGE_STATEMENT = f"""
WITH page AS MATERIALIZED ({{page_sql}}),
-- The most specific on/off per (recipient, channel): type, then category, then
-- global. One index scan for the whole page (recipient_id = ANY(page's ids)).
decided AS ({DECIDED.format(rows="page")}),
-- Quiet hours, caps and local clock of the page's recipients that have
-- settings: the time-zone conversion is done once per recipient, here.
page_settings AS ({SETTINGS.format(rows="page")}),
ins AS (
    INSERT INTO notifications_notification
        (event_id, recipient_id, title, body, url, visible, created_at)
    SELECT coalesce(page.event_id, %(event_id)s::uuid), page.recipient_id,
           page.title, page.body, page.url,
           %(visible)s AND (%(in_app_required)s OR coalesce(in_app.enabled, TRUE)), now()
    FROM page
    LEFT JOIN decided in_app
        ON in_app.recipient_id = page.recipient_id AND in_app.channel = 'in_app'
    {{order_by}}
    ON CONFLICT (event_id, recipient_id) DO NOTHING
    RETURNING id, recipient_id, event_id
),
rules AS (
    SELECT ins.id AS notification_id, ins.recipient_id, ins.event_id, s.daily_caps,
           s.local_now::date AS local_day,
           {QUIET_RELEASE_AT} AS release_at
    FROM ins LEFT JOIN page_settings s ON s.recipient_id = ins.recipient_id
),
deliveries AS (
    INSERT INTO notifications_delivery
        (notification_id, channel, status, reason, address, attempts, next_attempt_at,
         created_at, updated_at)
    SELECT rules.notification_id, ch,
           CASE WHEN {_OFF} THEN 'skipped' ELSE 'queued' END,
           CASE WHEN {_OFF} THEN 'preference'
                WHEN rules.release_at IS NOT NULL THEN 'quiet_hours' ELSE '' END,
           '', 0, coalesce(rules.release_at, %(now)s::timestamptz), now(), now()
    FROM rules CROSS JOIN unnest(%(channels)s::text[]) AS ch
    LEFT JOIN decided ON decided.recipient_id = rules.recipient_id AND decided.channel = ch
    ON CONFLICT (notification_id, channel) DO NOTHING
    RETURNING id, notification_id, channel, status
),
limited AS (
    SELECT d.id, rules.recipient_id, d.channel, (rules.daily_caps ->> d.channel)::int AS cap,
           rules.local_day, rules.event_id
    FROM deliveries d JOIN rules ON rules.notification_id = d.notification_id
    WHERE d.status = 'queued' AND NOT %(critical)s
      AND (%(throttled)s OR coalesce(rules.daily_caps ? d.channel, FALSE))
)
SELECT (SELECT count(*) FROM page) AS taken, (SELECT max(recipient_id) FROM page) AS last_id,
       notified.recipient_ids AS notified, notified.event_ids AS notified_events,
       coalesce((SELECT json_agg(json_build_array(id, recipient_id, channel, cap,
                                                  local_day::text, event_id))
                 FROM limited), '[]') AS limited
-- One pass over the new notifications, so both arrays are in the same order;
-- their events are only spelled out for a page of several events.
FROM (SELECT coalesce(array_agg(recipient_id), '{{}}') AS recipient_ids,
             CASE WHEN %(several_events)s THEN array_agg(event_id::text) END AS event_ids
      FROM ins) notified
"""


def page_statement(page_sql: str) -> str:
    """The full statement for a page given as SQL producing (recipient_id, title,
    body, url, event_id[, ord]). With `ord`, notifications are created (their
    ids taken) in that order, so several events' notifications keep the events'
    order in the inbox; a single event's order does not matter."""
    return _page_statement(page_sql, page_sql is EVENTS_PAGE)


@lru_cache(maxsize=16)
def _page_statement(page_sql: str, ordered: bool) -> str:
    order_by = "ORDER BY page.ord" if ordered else ""
    return _compact(_PAGE_STATEMENT.replace("{page_sql}", page_sql).replace("{order_by}", order_by))


def _compact(sql: str) -> str:
    """The statement without indentation and comment lines. psycopg caches the
    conversion of a statement to PostgreSQL's placeholders only up to 4,096
    bytes (`MAX_CACHED_STATEMENT_LENGTH`); written out, the page statement is
    4,400-4,800, so every page re-parsed it (py-spy: `_query2pg_nocache`)."""
    lines = (line.strip() for line in sql.splitlines())
    return "\n".join(line for line in lines if line and not line.startswith("--"))


# Pages of a topic, in recipient-id order after a cursor, with the shared rendering.
TOPIC_PAGE = """
    SELECT s.recipient_id, %(title)s::text AS title, %(body)s::text AS body, %(url)s::text AS url,
           NULL::uuid AS event_id
    FROM notifications_subscription s
    WHERE s.topic_id = (SELECT id FROM notifications_topic WHERE key = %(topic)s)
      AND s.recipient_id > %(cursor)s
    ORDER BY s.recipient_id
    LIMIT %(limit)s
"""

# Recipients given by id, with the shared rendering.
IDS_PAGE = """
    SELECT unnest(%(rids)s::bigint[]) AS recipient_id,
           %(title)s::text AS title, %(body)s::text AS body, %(url)s::text AS url,
           NULL::uuid AS event_id
"""

# Recipients rendered one by one.
RENDERED_PAGE = """
    SELECT x.*, NULL::uuid AS event_id
    FROM unnest(%(rids)s::bigint[], %(titles)s::text[], %(bodies)s::text[], %(urls)s::text[])
        AS x(recipient_id, title, body, url)
"""

# Rendered one by one, each under its own event: digest notifications (under
# their window's first event) and the first pages of several small events.
EVENTS_PAGE = """
    SELECT * FROM unnest(%(rids)s::bigint[], %(titles)s::text[], %(bodies)s::text[],
                         %(urls)s::text[], %(event_ids)s::uuid[]) WITH ORDINALITY
        AS x(recipient_id, title, body, url, event_id, ord)
"""

# The recipient ids of a topic page (for digests, which need no rendering per page).
TOPIC_IDS = """
    SELECT s.recipient_id FROM notifications_subscription s
    WHERE s.topic_id = (SELECT id FROM notifications_topic WHERE key = %(topic)s)
      AND s.recipient_id > %(cursor)s
    ORDER BY s.recipient_id
    LIMIT %(limit)s
"""

# The profiles of a topic page, for per-recipient rendering.
TOPIC_PROFILES = f"""
    SELECT {profile_columns("r")}
    FROM notifications_subscription s JOIN notifications_recipient r ON r.id = s.recipient_id
    WHERE s.topic_id = (SELECT id FROM notifications_topic WHERE key = %(topic)s)
      AND s.recipient_id > %(cursor)s
    ORDER BY s.recipient_id
    LIMIT %(limit)s
"""

DIGEST_PAGE = EVENTS_PAGE
