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

from harness import (
    ANTHROPIC_MODEL,
    ANTHROPIC_UPSTREAM_MODEL,
    ROUTER_MODEL,
    UPSTREAM_MODEL,
    flush_redis_db,
    free_port,
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


def prepare_builds(parser: argparse.ArgumentParser, options: argparse.Namespace, *,
                   wallets: int = 1) -> Builds:
    """Both checkouts, and the bench database recreated and seeded (Redis flushed): both
    builds must share the schema this checkout migrates to. ``wallets``: users, each with
    its wallet and one key (the load goes round them)."""
    if not (options.baseline / "manage.py").exists():
        parser.error(f"{options.baseline} is not a checkout of the router")
    env = router_env(options.database_url, [], redis_url=options.redis_url)
    upstream_port = free_port()
    prepare_database(options.database_url)
    flush_redis_db(options.redis_url)
    keys = seed(env, upstream_port, wallets, key_rpm=PRODUCTION["key_rpm"],
                key_tpm=PRODUCTION["key_tpm"])
    if getattr(options, "api", "chat") == "messages":
        seed_anthropic(env, upstream_port)
    return Builds({"baseline": options.baseline.resolve(), "this build": THIS_BUILD}, env,
                  upstream_port, keys)


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
