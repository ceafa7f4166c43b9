"""Production processes: ``python serve.py check|release|web|worker|beat``.

``make serve`` and the Procfile run these. ``check`` refuses, naming every problem at once,
an environment that is not a production one; ``release`` migrates and collects static
files (once per deploy: several instances may run it together, a PostgreSQL advisory lock
makes them take turns); ``web`` starts the ASGI server with one worker process per core;
``worker`` a Celery worker; ``beat`` Celery beat, of which a deployment runs exactly one.
``--dry-run`` prints the command line instead of running it.

It sits beside manage.py, outside the router_admin package (whose import loads Django's
settings, which raise at the first missing variable): the checks name every problem at
once, and the command lines need no settings.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
APP = "router_admin.asgi:application"
# Chosen by bench/server_choice.py; the README says why.
SERVER = "uvicorn"
REQUIRED = ("DATABASE_URL", "REDIS_URL", "SECRET_KEY", "ROUTER_ENCRYPTION_KEYS",
            "ALLOWED_HOSTS")
# Any constant: the key of the advisory lock under which one `release` at a time migrates.
RELEASE_LOCK = 0x62726F7574657201


def problems(environ: Mapping[str, str]) -> list[str]:
    """Why this environment cannot run production, one line per problem; empty if it can."""
    found = [f"{name} is required" for name in REQUIRED if not environ.get(name, "").strip()]
    database = environ.get("DATABASE_URL", "").strip()
    if database and not database.startswith(("postgres://", "postgresql://", "pgsql://")):
        found.append("DATABASE_URL must name PostgreSQL (postgres://...): the embedded SQLite "
                     "default is for `make run`")
    if environ.get("DEBUG", "").strip().lower() in ("1", "true", "yes", "on"):
        found.append("DEBUG must be off")
    workers = environ.get("WEB_CONCURRENCY", "").strip()
    if workers and not (workers.isdigit() and int(workers) >= 1):
        found.append(f"WEB_CONCURRENCY={workers!r} is not a number of processes (1 or more)")
    return found


def web_concurrency(environ: Mapping[str, str]) -> int:
    """Worker processes of the web server: WEB_CONCURRENCY, or one per core available."""
    workers = environ.get("WEB_CONCURRENCY", "").strip()
    return int(workers) if workers else len(os.sched_getaffinity(0))


def server_argv(server: str, *, host: str, port: int, workers: int,
                log_level: str = "warning") -> list[str]:
    """The ASGI server's command line (bench/ measures the router under exactly this)."""
    if server == "uvicorn":
        # X-Forwarded-For/-Proto are believed from the addresses in FORWARDED_ALLOW_IPS
        # (uvicorn reads it; default 127.0.0.1): set it to the load balancer's.
        return [str(BIN / "uvicorn"), APP, "--host", host, "--port", str(port),
                "--workers", str(workers), "--lifespan", "on", "--no-access-log",
                "--log-level", log_level]
    if server == "granian":
        return [str(BIN / "granian"), "--interface", "asgi", "--host", host,
                "--port", str(port), "--workers", str(workers), "--loop", "uvloop",
                "--respawn-failed-workers", "--no-access-log", "--log-level", log_level, APP]
    raise ValueError(f"unknown ASGI server {server!r}")


def metrics_dir(environ: Mapping[str, str]) -> Path:
    return Path(environ.get("PROMETHEUS_MULTIPROC_DIR") or ROOT / "var" / "prometheus")


def web(environ: Mapping[str, str]) -> tuple[list[str], dict[str, str]]:
    """The web server's command line and its environment."""
    env = {**environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir(environ))}
    argv = server_argv(SERVER, host=environ.get("HOST", "0.0.0.0"),  # noqa: S104 (a server)
                       port=int(environ.get("PORT", "8000")),
                       workers=web_concurrency(environ),
                       log_level=environ.get("LOG_LEVEL", "info").lower())
    return argv, env


def worker(environ: Mapping[str, str]) -> list[str]:
    # Without --concurrency Celery starts one process per core.
    return [str(BIN / "celery"), "-A", "router_admin", "worker",
            "--loglevel", environ.get("LOG_LEVEL", "info").lower()]


def beat(environ: Mapping[str, str]) -> list[str]:
    schedule = environ.get("CELERY_BEAT_SCHEDULE_FILE") or str(ROOT / "var" / "celerybeat-schedule")
    return [str(BIN / "celery"), "-A", "router_admin", "beat",
            "--loglevel", environ.get("LOG_LEVEL", "info").lower(), "--schedule", schedule]


def clean_metrics_dir(directory: Path) -> None:
    """Start with no counts: files left by the processes of an earlier run would be added in
    (prometheus_client's multiprocess mode adds up every file in the folder)."""
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)


def release() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "router_admin.settings")
    import django
    from django.core.management import call_command
    from django.db import connection

    django.setup()
    with connection.cursor() as cursor:
        # Held by this session until it ends: instances deploying together migrate in turn
        # (the next one then finds nothing left to do).
        cursor.execute("SELECT pg_advisory_lock(%s)", [RELEASE_LOCK])
        try:
            call_command("migrate", interactive=False)
            call_command("collectstatic", interactive=False, verbosity=1)
        finally:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [RELEASE_LOCK])


def _exec(argv: list[str], env: Mapping[str, str], dry_run: bool) -> None:
    if dry_run:
        print(shlex.join(argv))
        return
    sys.stdout.flush()
    os.execve(argv[0], argv, dict(env))  # noqa: S606 (a fixed command line, no shell)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python serve.py",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("process", choices=("check", "release", "web", "worker", "beat"))
    parser.add_argument("--dry-run", action="store_true",
                        help="print the command line instead of running it")
    args = parser.parse_args(argv)
    environ = dict(os.environ)
    found = problems(environ)
    if found:
        print("make serve (serve.py) is production and needs:\n"
              + "\n".join(f"  - {line}" for line in found)
              + "\n(for the embedded default, with nothing to set up, use `make run`)",
              file=sys.stderr)
        return 2
    if args.process == "check":
        return 0
    if args.process == "release":
        if args.dry_run:
            print("migrate, then collectstatic, under a PostgreSQL advisory lock")
        else:
            release()
        return 0
    if args.process == "web":
        command, env = web(environ)
        if not args.dry_run:
            clean_metrics_dir(Path(env["PROMETHEUS_MULTIPROC_DIR"]))
        _exec(command, env, args.dry_run)
    elif args.process == "worker":
        _exec(worker(environ), environ, args.dry_run)
    else:
        _exec(beat(environ), environ, args.dry_run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
