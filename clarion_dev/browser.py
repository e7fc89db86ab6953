"""The headless Chromium the browser tests drive (Debian's `chromium` package).

Playwright's own browser download is not used: it fetches a build from a CDN,
which fresh machines may not reach; the distribution's package works anywhere
apt does. `make test` calls ensure_chromium() before pytest.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

DEFAULT_PATHS = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")


def chromium_path() -> str | None:
    configured = os.environ.get("CLARION_CHROMIUM")
    if configured:
        return configured if os.path.exists(configured) else None
    for path in DEFAULT_PATHS:
        if os.path.exists(path):
            return path
    return shutil.which("chromium")


def ensure_chromium() -> str | None:
    """The Chromium executable, installing Debian's package when we can (root + apt)."""
    path = chromium_path()
    if path:
        return path
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print(
            "clarion: installing Chromium for the browser tests (apt-get install chromium) …",
            file=sys.stderr,
            flush=True,
        )
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=False)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "chromium"],
            env=env,
            check=False,
            stdout=subprocess.DEVNULL,
        )
        return chromium_path()
    print(
        "clarion: no Chromium found for the browser tests; install it"
        " (Debian/Ubuntu: apt-get install chromium) or set CLARION_CHROMIUM to its path",
        file=sys.stderr,
    )
    return None
