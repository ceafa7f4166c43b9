"""What the benches that compare two builds of the router share (``ab_routers.py``,
``instructions.py``): the options naming the other build and the services, and one bench
database and Redis seeded in the production configuration for both."""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from harness import (
    ANTHROPIC_MODEL,
    ANTHROPIC_UPSTREAM_MODEL,
    ROUTER_MODEL,
    UPSTREAM_MODEL,
    flush_redis_db,
    free_port,
    manage,
    prepare_database,
    router_env,
    seed,
    seed_anthropic,
    start_service,
    stop_service,
    upstream_argv,
    wait_ready,
)
from load import Target, make_messages_target, make_responses_target, make_target
from proxy_bench import PRODUCTION

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/binom_bench"
THIS_BUILD = Path(__file__).resolve().parent.parent


def add_build_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--baseline", type=Path, required=True,
                        help="a checkout of the build to compare against (a git worktree)")
    parser.add_argument("--redis-url", default=PRODUCTION["redis_url"])
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL)


# The APIs a load may speak (--api): the router's target, and the call the router makes of
# the upstream for it (Responses reach an OpenAI-compatible worker as chat completions,
# Messages an anthropic worker as they are).
APIS = ("chat", "responses", "messages")


def add_api_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--api", choices=APIS, default="chat",
                        help="the API the load speaks: chat completions (the default), "
                             "Responses, or Anthropic's Messages (to an anthropic worker)")


def router_target(api: str, name: str, port: int, keys: list[str]) -> Target:
    url = f"http://127.0.0.1:{port}/v1"
    if api == "responses":
        return make_responses_target(name, f"{url}/responses", ROUTER_MODEL, keys)
    if api == "messages":
        return make_messages_target(name, f"{url}/messages", ANTHROPIC_MODEL, keys)
    return make_target(name, f"{url}/chat/completions", ROUTER_MODEL, keys)


def direct_target(api: str, upstream_port: int) -> Target:
    url = f"http://127.0.0.1:{upstream_port}/v1"
    if api == "messages":
        return make_messages_target("direct", f"{url}/messages", ANTHROPIC_UPSTREAM_MODEL, [])
    return make_target("direct", f"{url}/chat/completions", UPSTREAM_MODEL, [])


@dataclass(frozen=True)
class Builds:
    trees: dict[str, Path]  # "baseline" and "this build": the checkouts the routers run from
    env: dict[str, str]  # the routers' environment
    upstream_port: int
    keys: list[str]  # API keys with the production limits, on one wallet
    # Per build, where they differ (``--baseline-migration``: the baseline's own database).
    databases: dict[str, str]
    envs: dict[str, dict[str, str]]
    keys_of: dict[str, list[str]]

    def by_database(self) -> dict[str, list[str]]:
        """Each database and the builds that bill in it."""
        found: dict[str, list[str]] = {}
        for name, url in self.databases.items():
            found.setdefault(url, []).append(name)
        return found


def prepare_builds(parser: argparse.ArgumentParser, options: argparse.Namespace, *,
                   wallets: int = 1) -> Builds:
    """Both checkouts, and the bench database recreated and seeded (Redis flushed): both
    builds must share the schema this checkout migrates to. ``wallets``: users, each with
    its wallet and one key (the load goes round them)."""
    if not (options.baseline / "manage.py").exists():
        parser.error(f"{options.baseline} is not a checkout of the router")
    upstream_port = free_port()
    flush_redis_db(options.redis_url)
    migration = getattr(options, "baseline_migration", None)
    databases = {"this build": options.database_url,
                 "baseline": (_sibling(options.database_url, "_baseline") if migration
                              else options.database_url)}
    seeded: dict[str, tuple[dict[str, str], list[str]]] = {}  # by database
    for name, url in databases.items():
        if url not in seeded:
            env = router_env(url, [], redis_url=options.redis_url)
            prepare_database(url)
            keys = seed(env, upstream_port, wallets, key_rpm=PRODUCTION["key_rpm"],
                        key_tpm=PRODUCTION["key_tpm"])
            if getattr(options, "api", "chat") == "messages":
                seed_anthropic(env, upstream_port)
            if name == "baseline":
                # Seeded at this checkout's schema, then taken back: only the schema differs.
                manage(env, "migrate", *migration.split(":", 1), "--no-input")
            seeded[url] = (env, keys)
    envs = {name: seeded[url][0] for name, url in databases.items()}
    keys_of = {name: seeded[url][1] for name, url in databases.items()}
    this = "this build"
    return Builds({"baseline": options.baseline.resolve(), this: THIS_BUILD}, envs[this],
                  upstream_port, keys_of[this], databases, envs, keys_of)


def _sibling(url: str, suffix: str) -> str:
    """The URL of the database named as ``url``'s with ``suffix`` added (same server)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=parts.path + suffix))


@contextmanager
def upstream_running(builds: Builds) -> Iterator[None]:
    """The upstream on CPU 1, this process (the load generator) beside it, both routers
    to be pinned to CPU 0; stopped at the end."""
    os.sched_setaffinity(0, {1})
    upstream = start_service("upstream", upstream_argv(builds.upstream_port), builds.env,
                             cpu=1)
    try:
        wait_ready(upstream, f"http://127.0.0.1:{builds.upstream_port}/v1/models", {})
        yield
    finally:
        stop_service(upstream)
