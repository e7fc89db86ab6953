"""`make run`: the whole system on this machine, with demo data.

Starts (or reuses) the private PostgreSQL and Redis when DATABASE_URL /
REDIS_URL are not set, migrates, loads demo data, then runs the web server,
the Celery workers and Beat under honcho (Procfile). Every process gets the
SECRET_KEY kept in DEVDATA/secret_key (made on the first run). Ctrl-C stops
them all within STOP_SECONDS.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from clarion_dev.devdata import DEVDATA, SECRET_KEY_FILE, secret_key_ensure, vapid_keys_ensure
from clarion_dev.environment import prepare_services
from config.env import TRUE_WORDS

ROOT = Path(__file__).resolve().parent.parent

# After Ctrl-C (or SIGTERM): honcho sends SIGTERM to every process at once and
# SIGKILL 5 s after the first one exits; whatever is still alive this long after
# the signal is killed here (see clarion_dev.proctree).
STOP_SECONDS = 8.0


def say(message: str) -> None:
    print(f"clarion: {message}", file=sys.stderr, flush=True)


def _show(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def service_env() -> dict[str, str]:
    """This environment, with the private servers for DATABASE_URL / REDIS_URL not set."""
    prepare_services()
    return dict(os.environ)


def manage(env: dict[str, str], *args: str, capture: bool = False) -> str:
    result = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args],
        env=env,
        cwd=ROOT,
        check=True,
        text=True,
        stdout=subprocess.PIPE if capture else None,
    )
    return result.stdout or ""


def main() -> int:
    env = service_env()
    # A key of this checkout's own, never one from the public source; a second
    # shell on the same servers finds it too (manage.py: clarion_dev.environment).
    key_source = (
        "from the environment" if env.get("SECRET_KEY") else _show(DEVDATA / SECRET_KEY_FILE)
    )
    env["SECRET_KEY"] = env.get("SECRET_KEY") or secret_key_ensure(DEVDATA)
    env.setdefault("DEBUG", "true")  # also what serves the bell demo at /demo/
    # Every external channel "sends" by writing the rendered message to the
    # worker's log, so the whole path is visible without any account.
    env.setdefault(
        "CLARION_PROVIDERS",
        ",".join(
            f"{channel}=console://" for channel in ("email", "sms", "push", "web_push", "webhook")
        ),
    )
    if not env.get("CLARION_VAPID_PRIVATE_KEY"):
        env["CLARION_VAPID_PRIVATE_KEY"], env["CLARION_VAPID_PUBLIC_KEY"] = vapid_keys_ensure(
            DEVDATA
        )
    # The Procfile's commands (uvicorn, celery) live beside this interpreter.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    port = env.setdefault("PORT", "8000")
    host = env.setdefault("HOST", "127.0.0.1")
    say("applying migrations")
    manage(env, "migrate", "--no-input", "-v", "0")
    say("loading demo data")
    key_file = str(DEVDATA / "demo-api-key")
    key = manage(env, "seed_demo", "--key-file", key_file, capture=True).strip()
    manage(env, "collectstatic", "--no-input", "-v", "0")
    debug = env["DEBUG"].strip().lower() in TRUE_WORDS
    print(banner(f"http://{host}:{port}", debug=debug, key=key, key_source=key_source), flush=True)
    honcho = Path(sys.executable).parent / "honcho"
    return run_until_stopped([str(honcho), "-f", str(_supervised_procfile()), "start"], env)


def places(base: str, *, debug: bool) -> list[tuple[str, str, str]]:
    """What the banner lists: (label, URL, note); every URL answers a GET (tested)."""
    found = [("Home", f"{base}/", "what is where")]
    if debug:
        found.append(
            (
                "Bell demo",
                f"{base}/demo/",
                "pick a recipient, send a test event; exists because DEBUG is on",
            )
        )
    return [
        *found,
        ("API", f"{base}/api/v1/", "index of the API: its resources and docs (JSON)"),
        ("API docs", f"{base}/api/docs/", "Swagger UI"),
        ("ReDoc", f"{base}/api/redoc/", ""),
        ("Admin", f"{base}/admin/", "python manage.py createsuperuser"),
        ("Metrics", f"{base}/metrics", ""),
        ("Health", f"{base}/healthz", ""),
        ("Readiness", f"{base}/readyz", ""),
    ]


def banner(base: str, *, debug: bool, key: str, key_source: str) -> str:
    """The text make run prints before the processes' logs start."""
    rows = "\n".join(
        f"  {label:<14} {url}" + (f"   ({note})" if note else "")
        for label, url, note in places(base, debug=debug)
    )
    if not debug:
        rows += "\n  Bell demo      (DEBUG is off: not served)"
    return f"""
  Clarion is starting (Ctrl-C stops everything).

{rows}

  Demo API key   {key}
  SECRET_KEY     {key_source}

  Try it:
    curl -s -X POST {base}/api/v1/events -H 'Authorization: Bearer {key}' \\
      -H 'Content-Type: application/json' \\
      -d '{{"type": "comment.created", "recipients": [{{"topic": "post:1:followers"}}],
           "actor": "dana", "data": {{"post_title": "Hello", "comment": "Nice!", "post_id": 1}}}}'

  Every email, SMS and push it sends appears below in a frame (the console provider);
  the periodic sweeps log only what they did (their routine lines are DEBUG).

  In another shell:  . .venv/bin/activate && python manage.py shell
"""


def run_until_stopped(command: list[str], env: dict[str, str]) -> int:
    """Run honcho until it ends or a stop signal comes; then leave nothing of it running.

    Not subprocess.call: on Ctrl-C it SIGKILLs honcho at once, before honcho has
    stopped anything, and the processes honcho was waiting for stay behind.
    """
    from clarion_dev.proctree import ProcessTree

    honcho = subprocess.Popen(command, env=env, cwd=ROOT)
    tree = ProcessTree(honcho.pid)
    stop_by: list[float] = []

    def stop(signum: int, frame: object) -> None:
        if not stop_by:
            stop_by.append(time.monotonic() + STOP_SECONDS)
        # A terminal's Ctrl-C reached honcho too; a second signal changes nothing there.
        if honcho.poll() is None:
            honcho.send_signal(signum)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    while honcho.poll() is None and not (stop_by and time.monotonic() > stop_by[0]):
        tree.remember()
        time.sleep(0.1)
    # honcho has ended (all stopped, or one process died and it stopped the
    # others) or the deadline has passed: what is left of its tree goes now.
    killed = tree.stop_by(stop_by[0] if stop_by else time.monotonic() + STOP_SECONDS)
    if killed:
        say(
            f"killed {len(killed)} process(es) still running {STOP_SECONDS:.0f} s "
            f"after the stop: {killed}"
        )
    code = honcho.wait()
    return 0 if stop_by else code


DEV_CELERY_APP = "clarion_dev.celery_app"


def dev_command(command: str) -> str:
    """A Procfile command for make run: Celery on DEV_CELERY_APP (config's app,
    with quiet periodic sweeps), under clarion_dev.respawn."""
    words = command.split()  # Procfile commands are words; ${VAR:-x} stays for honcho's shell
    for i, word in enumerate(words):
        if word in ("-A", "--app") and i + 1 < len(words) and words[i + 1] == "config":
            words[i + 1] = DEV_CELERY_APP
        elif word == "--app=config":
            words[i] = f"--app={DEV_CELERY_APP}"
    return f"python -m clarion_dev.respawn {' '.join(words)}"


def _supervised_procfile() -> Path:
    """The Procfile with the workers and Beat under clarion_dev.respawn (honcho
    stops everything when one process exits; these come back instead) and on
    the development Celery app."""
    lines = []
    for line in (ROOT / "Procfile").read_text().splitlines():
        name, sep, command = line.partition(":")
        if sep and name.strip() != "web" and command.strip():
            line = f"{name}: {dev_command(command.strip())}"
        lines.append(line)
    path = DEVDATA / "Procfile.run"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


if __name__ == "__main__":
    sys.exit(main())
