"""Vacuum the event table often: it is a queue.

Every event is accepted, then done: its entry in the partial index of waiting
events (event_waiting_idx) dies at once. The fan-out sweep and the backlog
gauge walk that index from its oldest end, so until VACUUM removes the dead
entries each of them reads past all of them (seen: 1,130 index pages, 6 ms,
per sweep with nothing waiting, after 100,000 events). PostgreSQL's default
waits for 20% of the table to be dead; for a table of ten million events that
is two million dead entries between vacuums. A fixed threshold keeps the index
small whatever the table's size; vacuuming an append-mostly table this often
is cheap (the visibility map skips the pages already clean).
"""
from django.db import migrations

FAST = (
    "ALTER TABLE notifications_event SET (autovacuum_vacuum_scale_factor = 0,"
    " autovacuum_vacuum_threshold = 20000, autovacuum_vacuum_cost_delay = 1)"
)
DEFAULT = (
    "ALTER TABLE notifications_event RESET (autovacuum_vacuum_scale_factor,"
    " autovacuum_vacuum_threshold, autovacuum_vacuum_cost_delay)"
)


class Migration(migrations.Migration):
    dependencies = [("notifications", "0010_unread_counter")]

    operations = [migrations.RunSQL(FAST, DEFAULT)]
