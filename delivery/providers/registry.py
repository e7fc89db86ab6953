"""Which providers send each channel, from `CLARION["PROVIDERS"]`.

The setting is a list of `(channel, url)` in failover order (env
`CLARION_PROVIDERS="email=smtp://…, email=smtp://backup…, sms=twilio://…"`);
the URL's scheme names the provider module (`SCHEMES`), the rest of the URL
its configuration. A value without `://` is the dotted path of a class
taking no arguments (tests, and providers of a deployment's own).

Providers are built once per worker process and kept, so an HTTP client's
pooled connections and an OAuth token live as long as the process.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote, urlsplit

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from common.choices import EXTERNAL_CHANNELS
from delivery.providers.base import Provider

# scheme -> the class that sends it (a `from_url(ProviderUrl)` classmethod builds it).
SCHEMES: dict[str, str] = {
    "console": "delivery.console.ConsoleProvider",
    "smtp": "delivery.providers.smtp.SmtpProvider",
    "smtps": "delivery.providers.smtp.SmtpProvider",
    "django": "delivery.providers.django_email.DjangoEmailProvider",
    "twilio": "delivery.providers.twilio.TwilioProvider",
    "fcm": "delivery.providers.fcm.FcmProvider",
    "apns": "delivery.providers.apns.ApnsProvider",
    "webpush": "delivery.providers.webpush.WebPushProvider",
    "webhook": "delivery.providers.webhook.WebhookProvider",
}


@dataclass(frozen=True)
class ProviderUrl:
    """A provider URL taken apart: `scheme://user:password@host:port/path?query`."""

    channel: str
    scheme: str
    username: str
    password: str
    host: str
    port: int | None
    path: str
    query: dict[str, str]

    @classmethod
    def parse(cls, channel: str, url: str) -> ProviderUrl:
        parts = urlsplit(url)
        try:
            port = parts.port
        except ValueError as exc:
            raise ImproperlyConfigured(f"CLARION_PROVIDERS: bad port in {channel}={url!r}") from exc
        return cls(
            channel=channel,
            scheme=parts.scheme.lower(),
            username=unquote(parts.username or ""),
            password=unquote(parts.password or ""),
            host=parts.hostname or "",
            port=port,
            path=unquote(parts.path or ""),
            query=dict(parse_qsl(parts.query, keep_blank_values=True)),
        )

    def flag(self, name: str, default: bool = False) -> bool:
        raw = self.query.get(name)
        return default if raw is None else raw.strip().lower() in {"1", "true", "yes", "on"}

    @property
    def label(self) -> str:
        """Names it in attempts, breakers and metrics: never the credentials."""
        where = self.host + (f":{self.port}" if self.port else "")
        return f"{self.channel}:{self.scheme}" + (f":{where}" if where else "")


@dataclass(frozen=True)
class ConfiguredProvider:
    name: str  # unique per deployment: the breaker's key and the metrics label
    provider: Provider


_lock = threading.Lock()
_built: dict[tuple, dict[str, list[ConfiguredProvider]]] = {}


def configured_pairs() -> list[tuple[str, str]]:
    raw = settings.CLARION.get("PROVIDERS") or []
    return list(raw.items()) if isinstance(raw, dict) else [tuple(pair) for pair in raw]


def providers_for(channel: str) -> list[ConfiguredProvider]:
    """The channel's providers in failover order (empty: none configured)."""
    return all_providers().get(channel, [])


def all_providers() -> dict[str, list[ConfiguredProvider]]:
    key = tuple(configured_pairs())
    built = _built.get(key)
    if built is None:
        with _lock:
            built = _built.get(key)
            if built is None:
                built = _build(key)
                _built.clear()  # settings changed (tests): drop the old clients
                _built[key] = built
    return built


def provider_labels(pairs: Iterable[tuple[str, str]] | None = None) -> list[tuple[str, str]]:
    """(channel, unique name) of every configured provider, without building
    any (the web process names them on /metrics)."""
    labels: list[tuple[str, str]] = []
    names: set[str] = set()
    for channel, value in configured_pairs() if pairs is None else pairs:
        if "://" in value:
            name = ProviderUrl.parse(channel, value).label
        else:
            name = f"{channel}:{value.rsplit('.', 1)[-1]}"
        unique, n = name, 2
        while unique in names:
            unique, n = f"{name}#{n}", n + 1
        names.add(unique)
        labels.append((channel, unique))
    return labels


def _build(pairs: Iterable[tuple[str, str]]) -> dict[str, list[ConfiguredProvider]]:
    pairs = list(pairs)
    chains: dict[str, list[ConfiguredProvider]] = {}
    for (channel, value), (_, name) in zip(pairs, provider_labels(pairs), strict=True):
        if channel not in EXTERNAL_CHANNELS:
            raise ImproperlyConfigured(
                f"CLARION_PROVIDERS: unknown channel {channel!r}"
                f" (one of {', '.join(EXTERNAL_CHANNELS)})"
            )
        if "://" not in value:
            provider = import_string(value)()
        else:
            url = ProviderUrl.parse(channel, value)
            path = SCHEMES.get(url.scheme)
            if path is None:
                raise ImproperlyConfigured(
                    f"CLARION_PROVIDERS: unknown scheme {url.scheme!r} in {channel}=…"
                    f" (one of {', '.join(sorted(SCHEMES))})"
                )
            cls = import_string(path)
            provider = cls.from_url(url) if hasattr(cls, "from_url") else cls()
        chains.setdefault(channel, []).append(ConfiguredProvider(name, provider))
    return chains
