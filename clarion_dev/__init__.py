"""Development helpers for Clarion (not used in production).

`clarion_dev.services` starts private PostgreSQL and Redis servers from pip
packages (the `embedded` extra) so that `make run` / `make test` work on a
machine that gives no DATABASE_URL / REDIS_URL.  Nothing is imported here on
purpose: production images do not ship the extra, and importing this package
must stay free.
"""
