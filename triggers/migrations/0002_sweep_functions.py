"""SQL the sweeps run in the database: the items' change sequence, event ids
made in SQL, and the evaluation of a trigger's `match` against an item."""

from django.db import migrations

# Time-ordered ids (RFC 9562 v7) for events a sweep inserts with INSERT ...
# SELECT: 48 bits of Unix milliseconds, 12 bits of sub-millisecond time
# (microseconds scaled, as common/ids.py does), the rest random.
UUID7 = """
CREATE OR REPLACE FUNCTION clarion_uuid7() RETURNS uuid
LANGUAGE sql VOLATILE PARALLEL SAFE AS $$
  WITH t AS (SELECT extract(epoch FROM clock_timestamp()) * 1000 AS now_ms),
  p AS (
    SELECT floor(now_ms)::bigint AS ms,
           floor((now_ms - floor(now_ms)) * 4096)::int AS sub,
           uuid_send(gen_random_uuid()) AS rnd
    FROM t
  )
  SELECT encode(
    substring(int8send(ms) FROM 3)
    || set_byte(set_byte(substring(rnd FROM 7 FOR 2), 0, 112 | (sub >> 8)), 1, sub & 255)
    || set_byte(substring(rnd FROM 9), 0, 128 | (get_byte(rnd, 8) & 63)),
    'hex')::uuid
  FROM p
$$;
"""

# match: {"attr": scalar | [scalars] | {"gte"/"gt"/"lte"/"lt": number}};
# attrs: the item's attributes with "id" set to the item's id.
# A scalar equals the attribute, or is one of its elements when the attribute
# is an array; a list holds the attribute (or one of its elements); a range
# bounds a numeric attribute. Nested CASEs: PostgreSQL does not promise to
# short-circuit AND, and a cast of a non-number would raise.
MATCHES = """
CREATE OR REPLACE FUNCTION clarion_trigger_matches(m jsonb, a jsonb) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT coalesce(bool_and(
    CASE jsonb_typeof(c.value)
      WHEN 'array' THEN
        CASE jsonb_typeof(a -> c.key)
          WHEN 'array' THEN EXISTS (
            SELECT 1 FROM jsonb_array_elements(a -> c.key) e(v) WHERE c.value @> jsonb_build_array(e.v))
          WHEN 'object' THEN false
          ELSE c.value @> jsonb_build_array(a -> c.key)
        END
      WHEN 'object' THEN
        CASE WHEN jsonb_typeof(a -> c.key) = 'number' THEN
          (NOT c.value ? 'gte' OR (a ->> c.key)::numeric >= (c.value ->> 'gte')::numeric)
          AND (NOT c.value ? 'gt' OR (a ->> c.key)::numeric > (c.value ->> 'gt')::numeric)
          AND (NOT c.value ? 'lte' OR (a ->> c.key)::numeric <= (c.value ->> 'lte')::numeric)
          AND (NOT c.value ? 'lt' OR (a ->> c.key)::numeric < (c.value ->> 'lt')::numeric)
        ELSE false END
      ELSE
        CASE jsonb_typeof(a -> c.key)
          WHEN 'array' THEN (a -> c.key) @> jsonb_build_array(c.value)
          ELSE coalesce((a -> c.key) = c.value, false)
        END
    END), true)
  FROM jsonb_each(m) c
$$;
"""

# The values an attribute offers to an anchor: an array's scalar elements, a
# scalar itself; nothing for null, an object or a missing attribute.
VALUES = """
CREATE OR REPLACE FUNCTION clarion_values(v jsonb) RETURNS SETOF jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT v WHERE jsonb_typeof(v) IN ('string', 'number', 'boolean')
  UNION ALL
  SELECT e FROM jsonb_array_elements(CASE WHEN jsonb_typeof(v) = 'array' THEN v END) e
  WHERE jsonb_typeof(e) IN ('string', 'number', 'boolean')
$$;
"""


class Migration(migrations.Migration):
    dependencies = [("triggers", "0001_initial")]

    operations = [
        migrations.RunSQL(
            "CREATE SEQUENCE IF NOT EXISTS triggers_item_change_seq",
            "DROP SEQUENCE IF EXISTS triggers_item_change_seq",
        ),
        migrations.RunSQL(UUID7, "DROP FUNCTION IF EXISTS clarion_uuid7()"),
        migrations.RunSQL(
            MATCHES, "DROP FUNCTION IF EXISTS clarion_trigger_matches(jsonb, jsonb)"
        ),
        migrations.RunSQL(VALUES, "DROP FUNCTION IF EXISTS clarion_values(jsonb)"),
    ]
