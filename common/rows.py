"""Reading raw rows by name.

A raw query's rows are read by column name, never by position: either into
a row type of its own (a NamedTuple or dataclass next to the query, built
with `Row(*row)` or psycopg's `class_row`), or as named tuples.
"""

from __future__ import annotations

from django.db.backends.utils import CursorWrapper
from psycopg.rows import class_row, namedtuple_row


def named_rows(cursor: CursorWrapper) -> CursorWrapper:
    """Make a Django cursor (over psycopg) return named tuples, fields named
    after the SELECT list's columns (alias duplicates with `AS`)."""
    cursor.cursor.row_factory = namedtuple_row
    return cursor


def rows_as(cursor: CursorWrapper, row_type: type) -> CursorWrapper:
    """Make a Django cursor return `row_type(**columns)` for each row."""
    cursor.cursor.row_factory = class_row(row_type)
    return cursor
