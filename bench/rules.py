"""Scenarios `fanout_rules` and `templates`.

fanout_rules: the same in-process fan-out of one event (in-app + email) to a
100,000-subscriber topic, with the recipient rules off (no preference rows,
no delivery settings) and on (a third of the recipients with preference rows
at type/category/global scope, a third with quiet hours, half of those inside
the window now, a third with a daily email cap), alternated off/on three times
in one run. Reported: the median of each mode, and the median (min-max) of the
three ratios on/off, each from an adjacent off/on pair (a pair shares the
machine's mood, so the ratio is steadier than either rate). Also the number of
queries one page takes in each mode.
Goal: rules on >= 80% of the rate with them off (median), same query count per page.

templates: renders per second of a typical email (subject + text + html with
a loop and filters), in one process (one core), with the sandboxed engine.
"""

from __future__ import annotations

import statistics
import time
from unittest import mock

from bench.common import metric, say
from bench.env import BenchEnv, django_setup, vacuum_if_dirty
from bench.fanout import RECIPIENT_PREFIX, ensure_topic, topic_key

TYPE_KEY = "bench.rules"
GOAL_RATIO = 0.80


def _ensure_type() -> None:
    from notifications.services import types

    types.notification_type_put(
        key=TYPE_KEY,
        body={
            "channels": ["in_app", "email"],
            "category": "bench",
            "templates": {
                "in_app": {"en": {"title": "{{ actor }} released {{ release }}"}},
                "email": {
                    "en": {"subject": "{{ actor }} released {{ release }}", "text": "{{ release }}"}
                },
            },
        },
    )


def _rules_on(env: BenchEnv, n: int) -> None:
    """Preference rows, quiet hours and caps for thirds of the topic's recipients, set-based."""
    say("adding preference rows, quiet hours and caps for thirds of the recipients")
    with env.connect() as conn:
        conn.execute("SET synchronous_commit = off")
        ids = (
            f"SELECT id FROM notifications_recipient WHERE external_id LIKE '{RECIPIENT_PREFIX}%%'"
        )
        conn.execute(
            f"""
            INSERT INTO preferences_channelpreference
                (recipient_id, scope, key, channel, enabled, updated_at)
            SELECT id, s.scope, s.key, s.channel, s.enabled, now()
            FROM ({ids}) r
            CROSS JOIN (VALUES ('type', %s, 'email', false), ('category', 'bench', 'email', true),
                               ('global', '', 'sms', false)) AS s(scope, key, channel, enabled)
            WHERE r.id %% 3 = 0
            ON CONFLICT DO NOTHING
            """,
            (TYPE_KEY,),
        )
        # Quiet hours for a third: half of them (odd ids) inside the window right now.
        conn.execute(
            f"""
            INSERT INTO preferences_deliverysettings
                (recipient_id, quiet_start, quiet_end, daily_caps, updated_at)
            SELECT id,
                   CASE WHEN id % 2 = 1 THEN (now() AT TIME ZONE 'UTC')::time - interval '1 hour'
                        ELSE (now() AT TIME ZONE 'UTC')::time + interval '1 hour' END,
                   CASE WHEN id % 2 = 1 THEN (now() AT TIME ZONE 'UTC')::time + interval '2 hours'
                        ELSE (now() AT TIME ZONE 'UTC')::time + interval '3 hours' END,
                   '{{}}', now()
            FROM ({ids}) r WHERE r.id % 3 = 1
            ON CONFLICT DO NOTHING
            """
        )
        conn.execute(
            f"""
            INSERT INTO preferences_deliverysettings (recipient_id, daily_caps, updated_at)
            SELECT id, '{{"email": 1000}}', now() FROM ({ids}) r WHERE r.id % 3 = 2
            ON CONFLICT DO NOTHING
            """
        )


def _rules_off(env: BenchEnv) -> None:
    with env.connect() as conn:
        conn.execute(
            f"DELETE FROM preferences_channelpreference WHERE recipient_id IN"
            f" (SELECT id FROM notifications_recipient"
            f" WHERE external_id LIKE '{RECIPIENT_PREFIX}%%')"
        )
        conn.execute(
            f"DELETE FROM preferences_deliverysettings WHERE recipient_id IN"
            f" (SELECT id FROM notifications_recipient"
            f" WHERE external_id LIKE '{RECIPIENT_PREFIX}%%')"
        )


def _fan_out(n: int) -> dict:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from notifications.api.auth import api_key_create
    from notifications.services import events
    from notifications.services.fanout import event_fan_out_page

    key_id = api_key_create(name="bench-rules")[0].id
    body = {
        "type": TYPE_KEY,
        "recipients": [{"topic": topic_key(n)}],
        "actor": "bench",
        "data": {"release": "2.4"},
    }
    with mock.patch.object(events, "on_commit_fan_out", lambda items: None):
        event_id = events.event_accept(api_key_id=key_id, body=body).id
    page, inserted, queries_first_page = 0, 0, None
    t0 = time.perf_counter()
    while True:
        with CaptureQueriesContext(connection) as captured:
            result = event_fan_out_page(event_id=event_id, page=page)
        if queries_first_page is None:
            queries_first_page = len(captured)
        inserted += result.inserted
        if result.done:
            break
        page = result.next_page
    elapsed = time.perf_counter() - t0
    return {
        "recipients_per_s": round(inserted / elapsed, 1),
        "seconds": round(elapsed, 3),
        "queries_per_page": queries_first_page,
        "recipients": inserted,
    }


def _delete_events(env: BenchEnv) -> None:
    from bench import data

    data.delete_events_of_type(env, TYPE_KEY)


def run(env: BenchEnv, opts) -> dict:
    n = 20_000 if opts.quick else 100_000
    django_setup()
    _ensure_type()
    ensure_topic(env, n)
    _rules_off(env)
    _delete_events(env)
    runs: dict[str, list[dict]] = {"off": [], "on": []}
    for mode in ("off", "on") * 3:
        if mode == "on":
            _rules_on(env, n)
        else:
            _rules_off(env)
        result = _fan_out(n)
        runs[mode].append(result)
        say(
            f"rules {mode}: {result['recipients_per_s']:,.0f} rcpt/s,"
            f" {result['queries_per_page']} queries/page"
        )
        _delete_events(env)
        vacuum_if_dirty(env, "notifications_notification")
        vacuum_if_dirty(env, "notifications_delivery")
    _rules_off(env)
    median = {
        mode: statistics.median(r["recipients_per_s"] for r in results)
        for mode, results in runs.items()
    }
    ratios = [
        on["recipients_per_s"] / off["recipients_per_s"] for off, on in zip(runs["off"], runs["on"])
    ]
    ratio = statistics.median(ratios)
    queries = {mode: runs[mode][0]["queries_per_page"] for mode in runs}
    return {
        "metrics": [
            metric(
                f"fan-out in-app+email, rules off ({n:,}), median of 3",
                round(median["off"]),
                "rcpt/s",
            ),
            metric(
                f"fan-out in-app+email, rules on ({n:,}), median of 3",
                round(median["on"]),
                "rcpt/s",
            ),
            metric(
                "ratio rules on / off, median of 3 pairs"
                f" (min-max {min(ratios):.3f}-{max(ratios):.3f})",
                round(ratio, 3),
                "x",
                at_least=GOAL_RATIO,
            ),
            metric("queries per page, rules off", queries["off"], ""),
            metric("queries per page, rules on", queries["on"], "", at_most=queries["off"]),
        ],
        "details": {"runs": runs, "pair_ratios": [round(r, 4) for r in ratios]},
    }


EMAIL = {
    "subject": "{{ actor }} commented on {{ post_title }}",
    "text": "Hi {{ recipient.name|default('there') }},\n\n{{ actor }} wrote: {{ comment }}\n"
    "{% for item in items %}- {{ item.title|truncate(40) }}\n{% endfor %}\nOpen: {{ url }}",
    "html": "<p>Hi {{ recipient.name|default('there') }},</p>"
    "<p><b>{{ actor }}</b> wrote: {{ comment }}</p>"
    "<ul>{% for item in items %}"
    "<li>{{ item.title|truncate(40) }} ({{ item.count }})</li>"
    "{% endfor %}</ul>"
    '<p><a href="{{ url }}">Open the post</a></p>',
}


def run_templates(env: BenchEnv, opts) -> dict:
    django_setup()
    from templates_app.rendering import build_context, render_channel

    templates = {"email": {"en": EMAIL}}
    context = build_context(
        data={
            "post_title": "Release notes",
            "comment": "Looks <great> & works",
            "url": "https://example.com/p/1",
            "items": [
                {"title": f"Item number {i} with a longer title", "count": i} for i in range(5)
            ],
        },
        actor="ana",
        event={"id": "e"},
        recipient={"name": "Bruno", "email": "b@example.com"},
    )
    seconds = 3.0 if opts.quick else 10.0
    say(f"rendering a typical email (subject + text + html) for {seconds:.0f}s in one process")
    count = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(200):
            render_channel(
                templates=templates,
                channel="email",
                locale="en",
                default_locale="en",
                context=context,
            )
        count += 200
    rate = count / (time.perf_counter() - t0)
    return {
        "metrics": [metric("email renders per second, one core", round(rate, 1), "renders/s")],
        "details": {"renders": count},
    }
