"""`make run`: the whole system on this machine, with demo data.

Starts (or reuses) the private PostgreSQL and Redis when DATABASE_URL /
REDIS_URL are not set, migrates, loads demo data, then runs the web server,
the Celery workers and Beat under honcho (Procfile). Ctrl-C stops them all.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def say(message: str) -> None:
    print(f"clarion: {message}", file=sys.stderr, flush=True)


def service_env() -> dict[str, str]:
    env = dict(os.environ)
    if not (env.get("DATABASE_URL") and env.get("REDIS_URL")):
        from clarion_dev import services

        env.update(services.ensure_services())
    return env


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
    env.setdefault("DEBUG", "true")
    env.setdefault("CLARION_DEMO", "true")
    # Every external channel "sends" by writing the rendered message to the
    # worker's log, so the whole path is visible without any account.
    env.setdefault("CLARION_PROVIDERS", ",".join(
        f"{channel}=delivery.console.ConsoleProvider" for channel in ("email", "sms", "push", "web_push", "webhook")
    ))
    # The Procfile's commands (uvicorn, celery) live beside this interpreter.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    port = env.setdefault("PORT", "8000")
    host = env.setdefault("HOST", "127.0.0.1")
    say("applying migrations")
    manage(env, "migrate", "--no-input", "-v", "0")
    say("loading demo data")
    key = manage(env, "seed_demo", "--key-file", str(ROOT / ".devdata" / "demo-api-key"), capture=True).strip()
    manage(env, "collectstatic", "--no-input", "-v", "0")
    base = f"http://{host}:{port}"
    print(
        f"""
  Clarion is starting (Ctrl-C stops everything).

  Bell demo      {base}/demo/   (pick a recipient, send a test event)
  API            {base}/api/v1/
  API docs       {base}/api/docs/
  Admin          {base}/admin/   (python manage.py createsuperuser)
  Metrics        {base}/metrics
  Readiness      {base}/readyz

  Demo API key   {key}

  Try it:
    curl -s -X POST {base}/api/v1/events -H 'Authorization: Bearer {key}' \\
      -H 'Content-Type: application/json' \\
      -d '{{"type": "comment.created", "recipients": [{{"topic": "post:1:followers"}}],
           "actor": "dana", "data": {{"post_title": "Hello", "comment": "Nice!", "post_id": 1}}}}'

  In another shell:  . .venv/bin/activate && python manage.py shell
""",
        flush=True,
    )
    honcho = Path(sys.executable).parent / "honcho"
    try:
        return subprocess.call([str(honcho), "-f", str(_supervised_procfile()), "start"], env=env, cwd=ROOT)
    except KeyboardInterrupt:
        return 0


def _supervised_procfile() -> Path:
    """The Procfile with the workers and Beat under clarion_dev.respawn: honcho
    stops everything when one process exits; these come back instead."""
    lines = []
    for line in (ROOT / "Procfile").read_text().splitlines():
        name, sep, command = line.partition(":")
        if sep and name.strip() != "web" and command.strip():
            line = f"{name}: python -m clarion_dev.respawn {command.strip()}"
        lines.append(line)
    path = ROOT / ".devdata" / "Procfile.run"
    path.parent.mkdir(exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


if __name__ == "__main__":
    sys.exit(main())
