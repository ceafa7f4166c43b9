"""`make run`: the embedded default's processes, side by side (`make serve`'s are in serve.py).

Seeds the demo (``router demo``: a new demo key, the one before revoked), then starts the web
server and a Celery worker with beat, and prints the demo's key and curl line once both are
up, so that they are the last thing on screen. Ctrl-C (or SIGTERM) stops both and exits 0;
if either stops on its own, the other is stopped too and the exit status is the failed one's.

The two servers run in a session of their own, so a Ctrl-C reaches only this process, which
stops each of them once: signalled by the terminal too, Celery would start a second,
"cold", shutdown. (`trap 'kill 0' EXIT` in the Makefile used to do this, and killed make
with them: "Terminated".)
"""

from __future__ import annotations

import argparse
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import FrameType

from serve import HTTP_PROTOCOL

ROOT = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
POLL_SECONDS = 0.1
# A server stopping for good drains its requests; past this it is killed.
STOP_SECONDS = 20
# uvicorn writes "Uvicorn running on ..." a moment after its port opens.
SETTLE_SECONDS = 0.3


def demo_argv(base_url: str) -> list[str]:
    return [sys.executable, str(ROOT / "manage.py"), "router", "demo", "--base-url", base_url]


def processes(host: str, port: int, var: Path) -> dict[str, list[str]]:
    """The command lines of the web server and of the Celery worker with beat (its files in
    ``var``)."""
    return {
        "web": [str(BIN / "uvicorn"), "router_admin.asgi:application", "--host", host,
                "--port", str(port), "--http", HTTP_PROTOCOL],
        # Quiet: no banner, so what is printed once everything is up stays the last thing
        # on screen; the pidfile says when the worker has started.
        "worker": [str(BIN / "celery"), "-A", "router_admin", "--quiet", "worker", "-B",
                   "--pool", "solo", "--loglevel", "warning",
                   "--schedule", str(var / "celerybeat-schedule"),
                   "--pidfile", str(var / "celery-worker.pid")],
    }


def url_host(host: str) -> str:
    """Where to reach a server listening on ``host``."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)  # noqa: S104
    return f"[{host}]" if ":" in host else host


def port_open(host: str, port: int) -> bool:
    try:
        socket.create_connection((host.strip("[]"), port), timeout=1).close()
    except OSError:
        return False
    return True


def worker_started(worker: subprocess.Popen[bytes], pidfile: Path) -> bool:
    try:
        return pidfile.read_text().strip() == str(worker.pid)
    except OSError:
        return False


Children = Mapping[str, subprocess.Popen[bytes]]


def side_by_side(commands: Mapping[str, list[str]], *, ready: Callable[[Children], bool],
                 on_ready: Callable[[], None]) -> int:
    """Run ``commands`` until a signal or until one of them stops; ``on_ready`` once
    ``ready(children)``. Returns 0 after a signal, else the status of the process that
    stopped."""
    signals: list[int] = []

    def record(signum: int, frame: FrameType | None) -> None:
        signals.append(signum)

    previous = {sig: signal.signal(sig, record) for sig in (signal.SIGINT, signal.SIGTERM)}
    children: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name, argv in commands.items():
            children[name] = subprocess.Popen(argv, cwd=ROOT,  # noqa: S603 (our own argv)
                                              start_new_session=True)
        return _watch(children, signals, ready=ready, on_ready=on_ready)
    finally:
        _stop(children, signals)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _watch(children: Children, signals: list[int], *, ready: Callable[[Children], bool],
           on_ready: Callable[[], None]) -> int:
    announced = False
    while not signals:
        for name, child in children.items():
            status = child.poll()
            if status is not None:
                print(f"run.py: the {name} process stopped (exit status {status}); stopping "
                      "the rest", file=sys.stderr, flush=True)
                # A negative status is a signal's: the shell's 128 + its number.
                return status if status > 0 else 128 - status if status < 0 else 1
        if not announced and ready(children):
            time.sleep(SETTLE_SECONDS)
            on_ready()
            announced = True
        time.sleep(POLL_SECONDS)
    return 0


def _stop(children: Children, signals: list[int]) -> None:
    """SIGTERM to each, then wait; a second Ctrl-C, or STOP_SECONDS, kills what is left."""
    for child in children.values():
        if child.poll() is None:
            child.terminate()
    asked = len(signals)
    deadline = time.monotonic() + STOP_SECONDS
    while any(child.poll() is None for child in children.values()):
        if len(signals) > asked or time.monotonic() > deadline:
            for child in children.values():
                if child.poll() is None:
                    child.kill()
        time.sleep(POLL_SECONDS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python run.py",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--var", type=Path, default=ROOT / "var",
                        help="the folder of the worker's pidfile and beat's schedule")
    args = parser.parse_args(argv)
    base_url = f"http://{url_host(args.host)}:{args.port}"
    if port_open(url_host(args.host), args.port):
        # Checked first: the web server would find out only after loading the application,
        # and by then the port's answers would pass for its own.
        print(f"run.py: something already listens on {base_url}; stop it, or choose another "
              "port (make run PORT=8001)", file=sys.stderr)
        return 1
    demo = subprocess.run(demo_argv(base_url), cwd=ROOT,  # noqa: S603 (our own argv)
                          capture_output=True, text=True, check=False)
    if demo.returncode != 0:
        sys.stderr.write(demo.stdout + demo.stderr)
        return demo.returncode
    args.var.mkdir(parents=True, exist_ok=True)

    def ready(children: Children) -> bool:
        return (port_open(url_host(args.host), args.port)
                and worker_started(children["worker"], args.var / "celery-worker.pid"))

    def announce() -> None:
        print(f"\n{demo.stdout.rstrip()}\n\nCtrl-C stops the router.", flush=True)

    return side_by_side(processes(args.host, args.port, args.var), ready=ready,
                        on_ready=announce)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # during the demo's seeding, before the servers start
        sys.exit(130)
