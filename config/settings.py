"""Clarion settings. Every knob is read from the environment; see docs/deployment.md."""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url
from kombu import Queue

from config.env import (
    env_bool,
    env_float,
    env_int,
    env_list,
    env_pairs,
    env_str,
    secret_key,
    service_urls,
)

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = env_bool("DEBUG", False)
# Required (ImproperlyConfigured otherwise); `make run` provides one of its own.
SECRET_KEY = secret_key()
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list(
    "CSRF_TRUSTED_ORIGINS", ["http://127.0.0.1:8000", "http://localhost:8000"]
)

DATABASE_URL, REDIS_URL = service_urls()

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI and ReDoc served from our own static files
    "django_celery_beat",
    "django_prometheus",
    "channels",
    "corsheaders",
    "notifications",
    "preferences",
    "templates_app",
    "delivery",
    "realtime",
    "triggers",
]

MIDDLEWARE = [
    "notifications.api.middleware.ApiProblemsMiddleware",
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "corsheaders.middleware.CorsMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {"default": dj_database_url.parse(DATABASE_URL)}
# Every process keeps one connection per thread (web: the WEB_THREADS pool of
# config/asgi.py; workers: one per pool process). DB_POOL=true switches to a
# psycopg pool per process instead, for deployments with many more threads
# than the database should see connections.
if env_bool("DB_POOL", False):
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": env_int("DB_POOL_MIN_SIZE", 1),
        "max_size": env_int("DB_POOL_MAX_SIZE", 16),
        "timeout": env_float("DB_POOL_TIMEOUT", 10.0),
    }
else:
    DATABASES["default"]["CONN_MAX_AGE"] = env_int("DB_CONN_MAX_AGE", 600)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True

# The fan-out's prepared statements (common/prepared.py) take arrays
# of ids: a custom plan per call would re-plan them every time (an estimate
# for one array length never looks cheaper than the generic plan's), which is
# what preparing them saves. Only prepared statements (those, and the
# statements of PL/pgSQL triggers) follow this setting.
_plan_cache_mode = env_str("DB_PLAN_CACHE_MODE", "force_generic_plan")
if env_bool("DB_PREPARED_STATEMENTS", True) and _plan_cache_mode != "auto":
    _options = DATABASES["default"].setdefault("OPTIONS", {})
    _options["options"] = (
        f"{_options.get('options', '')} -c plan_cache_mode={_plan_cache_mode}".strip()
    )

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "clarion:cache",
    }
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"] if (BASE_DIR / "static").exists() else []
# Static files (admin, the bell widget) served by the app itself, compressed
# and cache-busted, so a deployment needs no separate file server.
# STATIC_MANIFEST=true (the Docker image, after collectstatic at build time):
# hashed, compressed, cached forever. Otherwise files are found in the apps.
STATIC_MANIFEST = env_bool("STATIC_MANIFEST", False)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if STATIC_MANIFEST
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
WHITENOISE_USE_FINDERS = not STATIC_MANIFEST

SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", False)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", False)
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0)
if env_bool("USE_X_FORWARDED_PROTO", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# The bell widget calls the inbox API from the producer's pages: those origins
# (default: CSRF_TRUSTED_ORIGINS) may, and only for the recipient-token API.
CORS_ALLOWED_ORIGINS = env_list("CORS_ALLOWED_ORIGINS", CSRF_TRUSTED_ORIGINS)
CORS_URLS_REGEX = r"^/api/v1/inbox.*$"
CORS_ALLOW_HEADERS = ["authorization", "content-type"]

# Request bodies above this are refused with 413 before parsing (a batch of
# 1,000 events with 64 KiB of data each would be far larger, but such a batch is
# not a sane request either; producers split it).
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("CLARION_MAX_BODY_BYTES", 16 * 1024 * 1024)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["notifications.api.auth.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # Per-API-key rate limits (429 problem+json with Retry-After); recipients are not limited.
    "DEFAULT_THROTTLE_CLASSES": ["notifications.api.throttles.ApiKeyRateThrottle"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["notifications.api.parsers.StrictJSONParser"],
    "EXCEPTION_HANDLER": "notifications.api.problems.problem_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "notifications.api.schema.ApiSchema",
    "UNAUTHENTICATED_USER": None,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Clarion API",
    "DESCRIPTION": "Producer and inbox API of the Clarion notification platform.\n\n"
    "Producers authenticate with `Authorization: Bearer <api key>`; a recipient's browser"
    " with `Authorization: Recipient <token>` (a token from"
    " `POST /api/v1/recipients/{external_id}/token`). Every 4xx/5xx answer is"
    " `application/problem+json` (RFC 9457).",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Tags and operation ids from the path after /api/v1 (`events`, `inbox`).
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    # The docs pages load Swagger UI and ReDoc from this app's static files
    # (drf-spectacular-sidecar, served by WhiteNoise): no CDN, so they work offline.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # validatorUrl null: no badge fetched from swagger.io.
    "SWAGGER_UI_SETTINGS": {
        "deepLinking": True,
        "persistAuthorization": True,
        "validatorUrl": None,
    },
    # The problem+json answers every operation shares (notifications/api/schema.py,
    # which also holds the Bearer and Recipient security schemes).
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "notifications.api.schema.add_common_problems",
    ],
    "ENUM_NAME_OVERRIDES": {
        "Channel": "common.choices.Channel",
        "Priority": "common.choices.Priority",
        "DeliveryStatus": "common.choices.DeliveryStatus",
    },
}

# --- Clarion pipeline -------------------------------------------------------
CLARION = {
    # Event intake (notifications/api/intake.py): concurrent group-commit
    # writers per web process, and the most events one commit takes.
    "INTAKE_WRITERS": env_int("CLARION_INTAKE_WRITERS", 2),
    # An intake request not committed this long after its body arrived is
    # answered 503 + Retry-After and its events are rolled back (a frozen or
    # unreachable database): answers stay prompt during outages.
    "INTAKE_DEADLINE_SECONDS": env_float("CLARION_INTAKE_DEADLINE_SECONDS", 1.0),
    "INTAKE_GROUP_MAX_EVENTS": env_int("CLARION_INTAKE_GROUP_MAX_EVENTS", 5000),
    # Backpressure (notifications/services/backpressure.py): while the fan-out
    # backlog (age of the oldest waiting event, seconds) passes a bound, the
    # intake answers that priority's new events 429 + Retry-After; `high` and
    # `critical` are never refused. 0 turns a level off. The backlog is read
    # at most once per CHECK_SECONDS per web process.
    "BACKPRESSURE_LOW_SECONDS": env_float("CLARION_BACKPRESSURE_LOW_SECONDS", 5.0),
    "BACKPRESSURE_NORMAL_SECONDS": env_float("CLARION_BACKPRESSURE_NORMAL_SECONDS", 15.0),
    "BACKPRESSURE_CHECK_SECONDS": env_float("CLARION_BACKPRESSURE_CHECK_SECONDS", 0.5),
    # Recipients per fan-out page: one Celery task and a constant number of
    # queries per page.
    "FANOUT_PAGE_SIZE": env_int("CLARION_FANOUT_PAGE_SIZE", 10000),
    # An event accepted or mid-fan-out whose last enqueue is older than this is
    # re-enqueued by the relay (lost publish, killed worker). Doubles per retry.
    "RELAY_STALE_SECONDS": env_float("CLARION_RELAY_STALE_SECONDS", 60.0),
    # A page that began and is no longer running (its worker died) is
    # re-published this long after it began.
    "RELAY_DEAD_PAGE_SECONDS": env_float("CLARION_RELAY_DEAD_PAGE_SECONDS", 5.0),
    "RELAY_INTERVAL_SECONDS": env_float("CLARION_RELAY_INTERVAL_SECONDS", 3.0),
    "RELAY_BATCH": env_int("CLARION_RELAY_BATCH", 500),
    # How often the Beat sweep sends digest windows that have closed.
    "DIGEST_FLUSH_INTERVAL_SECONDS": env_float("CLARION_DIGEST_FLUSH_INTERVAL_SECONDS", 5.0),
    # Deliveries: how often the Beat sweep hands due deliveries (new ones, and
    # those whose quiet hours ended) to the send workers, how many per claim,
    # and how long a claim holds a delivery before a sweep may claim it again
    # (a worker that died mid-send). Above CELERY_TASK_TIME_LIMIT.
    "DELIVERY_DISPATCH_INTERVAL_SECONDS": env_float(
        "CLARION_DELIVERY_DISPATCH_INTERVAL_SECONDS", 2.0
    ),
    "DELIVERY_CLAIM_BATCH": env_int("CLARION_DELIVERY_CLAIM_BATCH", 1000),
    "DELIVERY_LEASE_SECONDS": env_int("CLARION_DELIVERY_LEASE_SECONDS", 600),
    # Providers per channel in failover order, one URL each (docs/providers.md):
    # CLARION_PROVIDERS="email=smtp://host:587?starttls=1, email=smtp://backup:25,
    # sms=twilio://SID:TOKEN@api.twilio.com?from=%2B1555..., webhook=webhook://".
    # A channel without one records its deliveries as skipped / no_provider.
    "PROVIDERS": env_pairs("CLARION_PROVIDERS", []),
    # Retries: attempts before a delivery is dead, and the exponential backoff
    # with full jitter between them (base * 2**attempt, at most the cap; a
    # provider's Retry-After is honoured when longer).
    "DELIVERY_MAX_ATTEMPTS": env_int("CLARION_DELIVERY_MAX_ATTEMPTS", 8),
    "DELIVERY_RETRY_BASE_SECONDS": env_float("CLARION_DELIVERY_RETRY_BASE_SECONDS", 5.0),
    "DELIVERY_RETRY_MAX_SECONDS": env_float("CLARION_DELIVERY_RETRY_MAX_SECONDS", 3600.0),
    # Timeout of every outbound call (connect, read, write, pool), in seconds.
    "PROVIDER_TIMEOUT_SECONDS": env_float("CLARION_PROVIDER_TIMEOUT_SECONDS", 10.0),
    # Circuit breaker per provider, shared by all workers through Redis: it
    # opens when, within the window, at least BREAKER_MIN_CALLS calls were
    # made and at least BREAKER_FAILURE_RATIO of them failed; after the
    # cooldown one probe batch is let through (half-open); its success closes it.
    "BREAKER_WINDOW_SECONDS": env_float("CLARION_BREAKER_WINDOW_SECONDS", 30.0),
    "BREAKER_MIN_CALLS": env_int("CLARION_BREAKER_MIN_CALLS", 10),
    "BREAKER_FAILURE_RATIO": env_float("CLARION_BREAKER_FAILURE_RATIO", 0.5),
    "BREAKER_COOLDOWN_SECONDS": env_float("CLARION_BREAKER_COOLDOWN_SECONDS", 30.0),
    # Where links in messages point (unsubscribe, open pixel, click redirect,
    # provider status callbacks): this deployment's public origin.
    "PUBLIC_URL": env_str("CLARION_PUBLIC_URL", "http://127.0.0.1:8000").rstrip("/"),
    # Opens (a pixel) and clicks (a redirect) of emails, through signed tokens
    # valid this long.
    "TRACK_OPENS": env_bool("CLARION_TRACK_OPENS", True),
    "TRACK_CLICKS": env_bool("CLARION_TRACK_CLICKS", True),
    "TRACKING_TOKEN_MAX_AGE_SECONDS": env_int(
        "CLARION_TRACKING_TOKEN_MAX_AGE_SECONDS", 90 * 24 * 3600
    ),
    # One-click unsubscribe links (List-Unsubscribe) keep working this long
    # after the email went out: people unsubscribe from old mail too.
    "UNSUBSCRIBE_TOKEN_MAX_AGE_SECONDS": env_int(
        "CLARION_UNSUBSCRIBE_TOKEN_MAX_AGE_SECONDS", 365 * 24 * 3600
    ),
    # The Standard Webhooks secret ("whsec_…") that inbound hooks verify
    # (POST /hooks/email/events); empty: derived from SECRET_KEY, never from
    # the outbound secret its receivers hold (delivery/hooks/signing.py).
    "HOOK_SIGNING_SECRET": env_str("CLARION_HOOK_SIGNING_SECRET", ""),
    # Webhook targets (the webhook channel, status webhooks) may be private or
    # loopback addresses: development and tests only.
    "WEBHOOK_ALLOW_PRIVATE": env_bool("CLARION_WEBHOOK_ALLOW_PRIVATE", False),
    # The Standard Webhooks secret ("whsec_…") that signs the webhook
    # channel's calls; empty: derived from SECRET_KEY.
    "WEBHOOK_SIGNING_SECRET": env_str("CLARION_WEBHOOK_SIGNING_SECRET", ""),
    # Web push VAPID keys (`python manage.py create_vapid_keys` prints them).
    "VAPID_PRIVATE_KEY": env_str("CLARION_VAPID_PRIVATE_KEY", ""),
    "VAPID_PUBLIC_KEY": env_str("CLARION_VAPID_PUBLIC_KEY", ""),
    # How often the Beat sweep sends due status webhook calls.
    "STATUS_WEBHOOK_INTERVAL_SECONDS": env_float("CLARION_STATUS_WEBHOOK_INTERVAL_SECONDS", 2.0),
    # The API's publisher waits this long after the first accepted event for
    # more, so one Celery message carries many events under load.
    "PUBLISH_LINGER_SECONDS": env_float("CLARION_PUBLISH_LINGER_SECONDS", 0.002),
    # The fan-out's statements run as prepared statements (common/prepared.py);
    # false for a transaction-pooling PgBouncer older than 1.21.
    "PREPARED_STATEMENTS": env_bool("DB_PREPARED_STATEMENTS", True),  # see DATABASES
    "IDEMPOTENCY_TTL_HOURS": env_int("CLARION_IDEMPOTENCY_TTL_HOURS", 48),
    # Rate limit of API keys without their own ("N/s", "N/m", "N/h"; empty:
    # unlimited). A token bucket in Redis per key (notifications/services/ratelimits.py).
    "API_RATE_LIMIT": env_str("CLARION_API_RATE_LIMIT", ""),
    "MAX_EXPLICIT_RECIPIENTS": 1000,
    "MAX_DATA_BYTES": 64 * 1024,
    "MAX_BATCH_EVENTS": 1000,
    "RECIPIENT_TOKEN_TTL_SECONDS": env_int("CLARION_RECIPIENT_TOKEN_TTL_SECONDS", 3600),
    # --- Triggers and sweeps (triggers/) ---
    # How often Beat runs each sweep.
    "SAVED_SEARCH_SWEEP_INTERVAL_SECONDS": env_float(
        "CLARION_SAVED_SEARCH_SWEEP_INTERVAL_SECONDS", 30.0
    ),
    "REMINDER_SWEEP_INTERVAL_SECONDS": env_float("CLARION_REMINDER_SWEEP_INTERVAL_SECONDS", 30.0),
    "ESCALATION_SWEEP_INTERVAL_SECONDS": env_float(
        "CLARION_ESCALATION_SWEEP_INTERVAL_SECONDS", 30.0
    ),
    # Items a saved-search sweep matches per statement (its memory bound).
    "SWEEP_ITEM_CHUNK": env_int("CLARION_SWEEP_ITEM_CHUNK", 10_000),
    # Notifications an escalation sweep reads per statement.
    "SWEEP_ESCALATION_CHUNK": env_int("CLARION_SWEEP_ESCALATION_CHUNK", 10_000),
    # Due reminder offsets released per statement.
    "SWEEP_REMINDER_CHUNK": env_int("CLARION_SWEEP_REMINDER_CHUNK", 50_000),
    # Database sessions that release a backlog of due reminders together.
    "SWEEP_REMINDER_SESSIONS": env_int("CLARION_SWEEP_REMINDER_SESSIONS", 2),
    # The item kinds producers may post and search (comma-separated); empty:
    # any kind that is a well-formed name.
    "ITEM_KINDS": env_list("CLARION_ITEM_KINDS", []),
    # A posted item's attributes, as JSON.
    "MAX_ITEM_ATTRIBUTES_BYTES": env_int("CLARION_MAX_ITEM_ATTRIBUTES_BYTES", 16 * 1024),
    "MAX_TRIGGERS_PER_RECIPIENT": env_int("CLARION_MAX_TRIGGERS_PER_RECIPIENT", 100),
    # How long GET /api/v1/sweeps and the admin keep sweep runs.
    "SWEEP_RUN_RETENTION_DAYS": env_int("CLARION_SWEEP_RUN_RETENTION_DAYS", 7),
}

# --- Email ------------------------------------------------------------------
# The From address of email providers without `?from=` (docs/providers.md).
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "Clarion <noreply@localhost>")
# What `email=django://` sends through: any Django email backend, e.g.
# "anymail.backends.postmark.EmailBackend".
EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.smtp.EmailBackend")
EMAIL_TIMEOUT = env_float("EMAIL_TIMEOUT", 10.0)
# django-anymail's settings from ANYMAIL_* variables, prefix dropped:
# ANYMAIL_POSTMARK_SERVER_TOKEN=… is ANYMAIL["POSTMARK_SERVER_TOKEN"]. The
# ESPs' tracking webhooks (/hooks/anymail/<esp>/tracking/) are served only
# once ANYMAIL_WEBHOOK_SECRET ("user:password", HTTP basic auth) is set.
ANYMAIL = {
    name.removeprefix("ANYMAIL_"): value
    for name, value in os.environ.items()
    if name.startswith("ANYMAIL_") and name != "ANYMAIL_"
}

# --- Celery -----------------------------------------------------------------
PRIORITIES = ("critical", "high", "normal", "low")
CELERY_BROKER_URL = REDIS_URL
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 300)
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 240)
CELERY_TASK_DEFAULT_QUEUE = "normal"
CELERY_TASK_QUEUES = [Queue(name) for name in PRIORITIES]
CELERY_TASK_CREATE_MISSING_QUEUES = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_WORKER_SEND_TASK_EVENTS = env_bool("CELERY_WORKER_SEND_TASK_EVENTS", False)
# The visibility timeout must exceed every task time limit, or a long task's
# message is handed to a second worker while the first still runs it.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 3600),
    "socket_timeout": 10,
    "socket_connect_timeout": 5,
    "retry_on_timeout": True,
    "health_check_interval": 25,
}
CELERY_BROKER_POOL_LIMIT = 20
# django-celery-beat's DatabaseScheduler, made to stop promptly on SIGTERM (see the module).
CELERY_BEAT_SCHEDULER = "notifications.scheduler:BeatScheduler"
# Celery's Django fixup otherwise closes the database connection around every
# task (measured: ~one new PostgreSQL session per fan-out task).
CELERY_DB_REUSE_MAX = env_int("CELERY_DB_REUSE_MAX", 1000)

# --- Channels ---------------------------------------------------------------
# redis-py's defaults do not suit a websocket server: the async pool caps at
# 100 connections (handshakes are refused in a connect burst) and a 5 s
# socket_timeout races channels-redis's 5 s blocking read (channels_redis#422).
CHANNEL_LAYERS = {
    "default": {
        # channels-redis's layer plus group_send_many (many group sends, few round trips).
        "BACKEND": "realtime.layers.BatchingRedisChannelLayer",
        "CONFIG": {
            "hosts": [
                {
                    "address": REDIS_URL,
                    "max_connections": env_int("CHANNEL_LAYER_MAX_CONNECTIONS", 1000),
                    "socket_timeout": env_float("CHANNEL_LAYER_SOCKET_TIMEOUT", 30.0),
                    "socket_connect_timeout": 5,
                    "socket_keepalive": True,
                    "health_check_interval": 25,
                    "retry_on_timeout": True,
                }
            ],
            "prefix": "clarion:asgi",
            "capacity": env_int("CHANNEL_LAYER_CAPACITY", 1000),
            "expiry": 60,
            "group_expiry": 86400,
        },
    }
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # One INFO line per outbound request, with the full URL: a chat
        # webhook's URL carries its secret in the path, and at a thousand
        # sends a second the lines cost CPU. Attempts are in the database.
        "httpx": {"level": "WARNING"},
        "httpcore": {"level": "WARNING"},
    },
}

PROMETHEUS_EXPORT_MIGRATIONS = False
