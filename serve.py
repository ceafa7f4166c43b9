"""Production processes: ``python serve.py check|release|web|worker|beat``.

``make serve`` and the Procfile run these. ``check`` refuses, naming every problem at once,
an environment that is not a production one; ``release`` migrates and collects static
files (once per deploy: several instances may run it together, a PostgreSQL advisory lock
makes them take turns); ``web`` starts the ASGI server with one worker process per core;
``worker`` a Celery worker; ``beat`` Celery beat, of which a deployment runs exactly one:
it runs only while it holds a lock in Redis, so `make serve` on every machine still starts
one beat, and the others stand by. ``--dry-run`` prints the command line instead of
running it.

It sits beside manage.py, outside the router_admin package (whose import loads Django's
settings, which raise at the first missing variable): the checks name every problem at
once, and the command lines need no settings.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import shlex
import shutil
import signal
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
APP = "router_admin.asgi:application"
# uvicorn's httptools protocol, writing a response's head with its body (one write per answer)
HTTP_PROTOCOL = "proxy.entry.http_protocol:HttpProtocol"
# Chosen by bench/server_choice.py; the README says why.
SERVER = "uvicorn"
STATIC_URL_PATH = "/static"  # settings.STATIC_URL
# Requests each worker process serves at once (uvicorn answers 503 past it; granian, the
# other server bench/ measures, queues past its --backpressure).
# An LLM stream lasts seconds to minutes, so thousands are in flight on an idle CPU; what
# may run is decided by the router's own limits (keys, users, worker slots), not here.
DEFAULT_MAX_IN_FLIGHT = 10_000
# Seconds a web worker told to stop (SIGTERM) lets its requests finish; then it cuts those
# still running (a long stream), charges what each delivered, and exits. Keep it a few
# seconds under the process manager's own grace (Kubernetes 30 s, `docker stop` 10 s),
# after which it kills: a killed process never charges the streams it was relaying.
DEFAULT_SHUTDOWN_GRACE_SECONDS = 25
REQUIRED = ("DATABASE_URL", "REDIS_URL", "SECRET_KEY", "ROUTER_ENCRYPTION_KEYS",
            "ALLOWED_HOSTS")
# Any constant: the key of the advisory lock under which one `release` at a time migrates.
RELEASE_LOCK = 0x62726F7574657201
# The Redis lock of the one beat (after ROUTER_REDIS_PREFIX): renewed every third of its
# life; a beat that stops releases it, one that dies lets it expire, and a standby then
# takes over.
BEAT_LOCK, BEAT_LOCK_SECONDS, STANDBY_POLL_SECONDS = "celery-beat", 60, 5
# Email backends that keep a message on the server (printed, in memory, in a file, or
# nowhere) instead of sending it. A password-reset link printed to a production log was
# used to take an account over.
NON_SENDING_EMAIL_BACKENDS = frozenset(
    f"django.core.mail.backends.{name}.EmailBackend"
    for name in ("console", "filebased", "locmem", "dummy")
) | {"router_admin.mail.UnconfiguredEmailBackend"}


def problems(environ: Mapping[str, str]) -> list[str]:
    """Why this environment cannot run production, one line per problem; empty if it can."""
    found = [f"{name} is required" for name in REQUIRED if not environ.get(name, "").strip()]
    database = environ.get("DATABASE_URL", "").strip()
    if database and not database.startswith(("postgres://", "postgresql://", "pgsql://")):
        found.append("DATABASE_URL must name PostgreSQL (postgres://...): the embedded SQLite "
                     "default is for `make run`")
    if environ.get("DEBUG", "").strip().lower() in ("1", "true", "yes", "on"):
        found.append("DEBUG must be off")
    for name in ("WEB_CONCURRENCY", "WEB_MAX_IN_FLIGHT", "WEB_SHUTDOWN_GRACE_SECONDS", "PORT"):
        value = environ.get(name, "").strip()
        if value and not (value.isdigit() and int(value) >= 1):
            found.append(f"{name}={value!r} is not a whole number of 1 or more")
    email_backend = environ.get("EMAIL_BACKEND", "").strip()
    if email_backend in NON_SENDING_EMAIL_BACKENDS:
        found.append(f"EMAIL_BACKEND={email_backend} sends no email: set EMAIL_HOST (SMTP) "
                     "or a backend that sends")
    elif not email_backend and not environ.get("EMAIL_HOST", "").strip():
        found.append("EMAIL_HOST (SMTP, with EMAIL_PORT, EMAIL_HOST_USER, EMAIL_HOST_PASSWORD, "
                     "EMAIL_USE_TLS) or EMAIL_BACKEND is required: password-reset emails must "
                     "be sent, never printed to the log")
    return found


def web_concurrency(environ: Mapping[str, str]) -> int:
    """Worker processes of the web server: WEB_CONCURRENCY, or one per core available."""
    workers = environ.get("WEB_CONCURRENCY", "").strip()
    return int(workers) if workers else len(os.sched_getaffinity(0))


def server_argv(server: str, *, host: str, port: int, workers: int,
                log_level: str = "warning", max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
                static_root: Path | None = None,
                shutdown_grace: int = DEFAULT_SHUTDOWN_GRACE_SECONDS) -> list[str]:
    """The ASGI server's command line (bench/ measures the router under exactly this)."""
    if server == "granian":
        # X-Forwarded-For/-Proto: see FORWARDED_ALLOW_IPS in router_admin/asgi.py.
        argv = [str(BIN / "granian"), "--interface", "asgi", "--host", host,
                "--port", str(port), "--workers", str(workers), "--loop", "uvloop",
                "--backlog", "4096", "--backpressure", str(max_in_flight),
                "--respawn-failed-workers", "--no-access-log", "--log-level", log_level]
        if static_root is not None:
            # granian sends the collected static files itself, from Rust: Django's ASGI
            # handler would read each file whole into memory in a thread (WhiteNoise's
            # responses are synchronous iterators). The names carry a hash of the content
            # (ManifestStaticFilesStorage), so browsers may keep them for a year.
            argv += ["--static-path-route", STATIC_URL_PATH, "--static-path-mount",
                     str(static_root), "--static-path-expires", str(365 * 24 * 3600)]
        return [*argv, APP]
    if server == "uvicorn":
        # X-Forwarded-For/-Proto: the application applies FORWARDED_ALLOW_IPS itself, as
        # under granian (router_admin/asgi.py); uvicorn's own layer did it a second time
        # on every request. No Server header: nothing to advertise, one header less to
        # check and write per response.
        # Its HTTP protocol writes each response's head with its body (one system call,
        # not two: proxy/entry/http_protocol.py).
        return [str(BIN / "uvicorn"), APP, "--host", host, "--port", str(port),
                "--workers", str(workers), "--backlog", "4096", "--http", HTTP_PROTOCOL,
                "--limit-concurrency", str(max_in_flight), "--lifespan", "on",
                "--timeout-graceful-shutdown", str(shutdown_grace),
                "--no-proxy-headers", "--no-server-header",
                "--no-access-log", "--log-level", log_level]
    raise ValueError(f"unknown ASGI server {server!r}")


def metrics_dir(environ: Mapping[str, str]) -> Path:
    return Path(environ.get("PROMETHEUS_MULTIPROC_DIR") or ROOT / "var" / "prometheus")


def web(environ: Mapping[str, str]) -> tuple[list[str], dict[str, str]]:
    """The web server's command line and its environment."""
    env = {**environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir(environ))}
    argv = server_argv(SERVER, host=environ.get("HOST", "0.0.0.0"),  # noqa: S104 (a server)
                       port=int(environ.get("PORT", "8000")),
                       workers=web_concurrency(environ),
                       log_level=environ.get("LOG_LEVEL", "info").lower(),
                       max_in_flight=int(environ.get("WEB_MAX_IN_FLIGHT")
                                         or DEFAULT_MAX_IN_FLIGHT),
                       static_root=static_root(environ),
                       shutdown_grace=int(environ.get("WEB_SHUTDOWN_GRACE_SECONDS", "").strip()
                                          or DEFAULT_SHUTDOWN_GRACE_SECONDS))
    return argv, env


def static_root(environ: Mapping[str, str]) -> Path | None:
    """Where ``release`` collected the static files (STATIC_ROOT, as in the settings), for
    granian to send; None before anything was collected there (granian refuses a missing
    folder). Under uvicorn WhiteNoise in the app answers /static/ from there."""
    root = Path(environ.get("STATIC_ROOT") or ROOT / "var" / "static")
    return root if root.is_dir() else None


def raise_open_files_limit() -> None:
    """Up to the hard limit: every stream in flight holds two sockets (client, upstream),
    and the usual soft limit of 1024 would cap a worker at about 500 streams."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def worker(environ: Mapping[str, str]) -> list[str]:
    # Without --concurrency Celery starts one process per core.
    return [str(BIN / "celery"), "-A", "router_admin", "worker",
            "--loglevel", environ.get("LOG_LEVEL", "info").lower()]


def beat(environ: Mapping[str, str]) -> list[str]:
    """The command line `serve.py beat` is equivalent to, once it holds the lock."""
    return [str(BIN / "celery"), "-A", "router_admin", "beat",
            "--loglevel", environ.get("LOG_LEVEL", "info").lower(),
            "--schedule", beat_schedule_file(environ)]


def beat_schedule_file(environ: Mapping[str, str]) -> str:
    return environ.get("CELERY_BEAT_SCHEDULE_FILE") or str(ROOT / "var" / "celerybeat-schedule")


def beat_lock_name(environ: Mapping[str, str]) -> str:
    """The beat lock's key, in the deployment's Redis namespace (as the settings derive it):
    deployments sharing one Redis each run their own beat."""
    from router_admin.env import parse_database_url, redis_prefix

    return redis_prefix(parse_database_url(environ["DATABASE_URL"]), environ=environ) + BEAT_LOCK


def run_beat(environ: Mapping[str, str]) -> None:
    """Celery beat in this process, while it holds the beat lock in Redis."""
    import redis
    from redis.exceptions import LockError, RedisError

    # SIGTERM, as a process manager stops it, ends this process through its `finally`
    # (releasing the lock at once), standing by or not; beat installs the same on start.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    name = beat_lock_name(environ)
    lock = redis.Redis.from_url(environ["REDIS_URL"]).lock(
        name, timeout=BEAT_LOCK_SECONDS, thread_local=False)
    if not lock.acquire(blocking=False):
        print(f"another beat holds {name} in Redis: standing by", file=sys.stderr, flush=True)
        while not lock.acquire(blocking=False):
            time.sleep(STANDBY_POLL_SECONDS)
    try:
        print(f"holding {name}: this is the deployment's beat", file=sys.stderr, flush=True)
        threading.Thread(target=_keep_beat_lock, args=(lock,), name="beat-lock",
                         daemon=True).start()
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "router_admin.settings")
        from router_admin.celery import app

        app.Beat(loglevel=environ.get("LOG_LEVEL", "info").upper(),
                 schedule=beat_schedule_file(environ)).run()
    finally:
        with contextlib.suppress(LockError, RedisError):  # expired, or Redis is gone
            lock.release()


def _keep_beat_lock(lock: Any) -> None:
    from redis.exceptions import LockError, RedisError

    while True:
        time.sleep(BEAT_LOCK_SECONDS / 3)
        try:
            lock.reacquire()
        except (LockError, RedisError):
            # Lost, or unreachable until it may have expired: a standby may be the beat now,
            # and two beats would send every periodic task twice.
            print(f"lost {lock.name}: stopping", file=sys.stderr, flush=True)
            os._exit(3)


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
            raise_open_files_limit()
        _exec(command, env, args.dry_run)
    elif args.process == "worker":
        _exec(worker(environ), environ, args.dry_run)
    elif args.dry_run:
        print(f"{shlex.join(beat(environ))}  # in-process, while holding "
              f"{beat_lock_name(environ)} in Redis")
    else:
        run_beat(environ)
    return 0


if __name__ == "__main__":
    sys.exit(main())
