# syntax=docker/dockerfile:1
#
# One image for every Clarion process: the ASGI web server (default CMD), the
# Celery workers, Celery Beat and one-shot management commands
# (`python manage.py migrate`, `createsuperuser`, ...). See docs/deployment.md.
#
# Production installs the project itself (`pip install .`), without the
# `embedded`/`dev` extras: the database and Redis come from DATABASE_URL and
# REDIS_URL, which every container must set.

FROM python:3.11-slim

# PYTHONPATH=/app: the code is imported from the source tree in /app, not from
# the copy `pip install .` puts in site-packages, so settings.BASE_DIR is /app
# (STATIC_ROOT=/app/staticfiles, demo/ and manage.py are found) whichever
# entry point starts the process (uvicorn, celery, manage.py).
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONPATH=/app \
    DJANGO_SETTINGS_MODULE=config.settings \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    STATIC_MANIFEST=true

WORKDIR /app

RUN groupadd --system --gid 10001 clarion \
 && useradd --system --uid 10001 --gid clarion --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin clarion

# Dependencies first, in their own layer, so a code change does not reinstall
# them: read [project].dependencies from pyproject.toml (tomllib is stdlib in
# 3.11). All of them ship manylinux wheels, so no compiler is needed.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt

# The project itself (no extras: production never imports clarion_dev.services).
COPY . .
RUN pip install . \
 && rm -rf build ./*.egg-info

# Static files at build time. Settings require DATABASE_URL/REDIS_URL at import
# (manage.py would start embedded servers only when one is missing, and they
# are not installed) but never connect at import, so dummy values are enough.
# They are set for this command only, not baked into the image.
RUN DATABASE_URL=postgresql://build:build@127.0.0.1:5432/build \
    REDIS_URL=redis://127.0.0.1:6379/0 \
    SECRET_KEY=collectstatic-only-not-a-secret \
    python manage.py collectstatic --no-input --verbosity 0

USER 10001:10001

EXPOSE 8000

# Liveness of the web server (the process answers HTTP; /readyz also checks
# PostgreSQL and Redis, see docker-compose.yml). Django answers 400 to a Host
# it does not allow, so the request carries the first entry of ALLOWED_HOSTS
# ("*" skipped, a leading "." stripped; "localhost" when none is set).
# Worker/Beat containers started from this image override or disable it.
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as r; h = [x.strip().lstrip('.') for x in os.environ.get('ALLOWED_HOSTS', '').split(',') if x.strip() not in ('', '*')]; r.urlopen(r.Request('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8000'), headers={'Host': (h or ['localhost'])[0]}), timeout=8)"]

# The Procfile's `web` line, bound to all interfaces. A shell runs it so that
# PORT and WEB_CONCURRENCY are expanded at start; `exec` replaces the shell, so
# uvicorn itself receives SIGTERM and shuts down gracefully.
CMD ["/bin/sh", "-c", "exec uvicorn config.asgi:application --host 0.0.0.0 --port ${PORT:-8000} --workers ${WEB_CONCURRENCY:-2} --http httptools --ws websockets-sansio --ws-per-message-deflate false --timeout-graceful-shutdown 10 --lifespan off --no-access-log"]
