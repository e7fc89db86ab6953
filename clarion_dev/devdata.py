"""The data folder of `make run` / `make test`, and the development SECRET_KEY kept in it.

The source is public, so a built-in key would let anyone forge sessions and
recipient tokens. `make run` instead makes a random key once, keeps it in
``DEVDATA/secret_key`` (mode 0600) and passes it to every process it starts;
``manage.py`` in a second shell on the same private servers reads the same
file (clarion_dev.environment), so tokens minted there verify in the server.

No third-party imports: manage.py imports this module (through
clarion_dev.environment) in every process, production images included.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

REPO_ROOT: Path = Path(__file__).resolve().parent.parent

#: Where the private servers and `make run` keep their data; ``CLARION_DEVDATA``
#: overrides it (e.g. a throw-away directory for CI). Read at import time.
DEVDATA: Path = (
    Path(os.environ.get("CLARION_DEVDATA") or (REPO_ROOT / ".devdata")).expanduser().absolute()
)

SECRET_KEY_FILE = "secret_key"


def secret_key_read(devdata: Path = DEVDATA) -> str | None:
    """The development key kept in ``devdata``, or None when there is none yet."""
    try:
        key = (devdata / SECRET_KEY_FILE).read_text().strip()
    except FileNotFoundError:
        return None
    return key or None


def secret_key_ensure(devdata: Path = DEVDATA) -> str:
    """The development key kept in ``devdata``, made (once, mode 0600) if missing.

    The file is created with O_EXCL under a temporary name and then linked into
    place, so two processes starting at once agree on one key and nobody ever
    reads a half-written file.
    """
    key = secret_key_read(devdata)
    if key:
        return key
    devdata.mkdir(parents=True, exist_ok=True)
    path = devdata / SECRET_KEY_FILE
    tmp = devdata / f".{SECRET_KEY_FILE}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(50) + "\n")
        try:
            os.link(tmp, path)  # fails if another process got there first: use its key
        except FileExistsError:
            pass
    finally:
        tmp.unlink(missing_ok=True)
    key = secret_key_read(devdata)
    if not key:
        raise RuntimeError(f"{path} is empty; delete it and start again")
    return key


VAPID_FILE = "vapid.json"


def vapid_keys_ensure(devdata: Path = DEVDATA) -> tuple[str, str]:
    """The development VAPID pair (private, public) kept in ``devdata``, made
    once, so the bell's "notify me on this device" works under ``make run``
    and a browser's subscription survives restarts."""
    import json

    path = devdata / VAPID_FILE
    try:
        keys = json.loads(path.read_text())
        return keys["private"], keys["public"]
    except (FileNotFoundError, ValueError, KeyError):
        pass
    from delivery.providers.webpush import vapid_keys_generate

    private, public = vapid_keys_generate()
    devdata.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"private": private, "public": public}, handle)
    return private, public
