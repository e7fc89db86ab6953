"""Django's PostgreSQL backend hands jsonb columns of raw queries back as text
(so JSONField can decode them itself); raw-SQL code decodes through here."""

from __future__ import annotations

import json
from typing import Any


def from_db_json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, (str, bytes)) else value
