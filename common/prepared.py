"""Prepared statements for the statements that run on every fan-out.

Django's psycopg connections bind parameters on the client and never prepare
(its default, safe behind any connection pooler), so PostgreSQL parses and
plans every statement anew. The fan-out's page statement and the push's read
are large CTEs: planning them took 1.4-1.5 ms each here, three times longer
than executing them, on every lane hold, on the critical path of every
notification and in PostgreSQL's share of the two cores.

`prepared_cursor()` is a Django cursor (same connection and transaction, the
same error mapping, seen by `CaptureQueriesContext`) over a psycopg cursor
that binds on the server: psycopg prepares a statement once it has run
`PREPARE_THRESHOLD` times on that connection, and PostgreSQL reuses the plan.
Only cursors made here prepare; every other query keeps Django's client-side
binding. `DB_PREPARED_STATEMENTS=false` turns it off (a transaction-pooling
PgBouncer older than 1.21 cannot follow prepared statements).
"""

from __future__ import annotations

import psycopg
from django.conf import settings
from django.db import connection
from django.db.backends.utils import CursorDebugWrapper, CursorWrapper

# A statement run this many times on a connection is prepared there. Above 1,
# so that one-off statements built from varying text never fill psycopg's
# cache of prepared statements (prepared_max, 100 per connection).
PREPARE_THRESHOLD = 2


def prepared_cursor() -> CursorWrapper:
    """A cursor whose repeated statements are prepared; use as `with prepared_cursor() as cursor:`.

    Parameters bind on the server: give each one a type PostgreSQL can
    infer (a cast such as `%s::uuid[]` where it could not)."""
    if not settings.CLARION["PREPARED_STATEMENTS"]:
        return connection.cursor()
    connection.close_if_health_check_failed()
    connection.ensure_connection()
    with connection.wrap_database_errors:
        raw = connection.connection
        if raw.prepare_threshold != PREPARE_THRESHOLD:
            raw.prepare_threshold = PREPARE_THRESHOLD
        cursor = psycopg.Cursor(raw)
        connection.validate_thread_sharing()
        if connection.queries_logged:
            return _LoggedPreparedCursor(cursor, connection)
        return CursorWrapper(cursor, connection)


class _LoggedPreparedCursor(CursorDebugWrapper):
    """Logs each statement as the client-side cursor would have sent it: psycopg
    keeps no query text for a statement it runs prepared."""

    def execute(self, sql, params=None):
        with self.debug_sql(self.db.ops.compose_sql(sql, params) if params else sql, params):
            return super(CursorDebugWrapper, self).execute(sql, params)
