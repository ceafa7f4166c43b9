"""What keeping the request path's lookups fresh costs, per key in use: one by one vs batched.

    .venv/bin/python bench/lookup_refresh.py [--keys 2000] [--seconds 20]

The router reloads every cached key that was used in the last five minutes shortly before
it expires (``proxy.ground.cache.TTLCache``), so that no request waits for the database; at
``ROUTER_LOOKUP_TTL_SECONDS`` = 5 that is every key in use, about once every 4 s. This
drops and recreates a bench database, creates ``--keys`` users with a key each, loads them
all into the cache as requests would, then lets the keeper run for ``--seconds`` twice,
alternating: with the batched reload (``reload_many``: four queries per 500 keys) and with
one load per key (what the keeper did before). It prints the CPU this process spent
(threads included) per key reloaded and as a share of a core for 1,000 keys in use.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "router_admin.settings")

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/lookup_bench"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--database-url", default=DEFAULT_URL)
    args = parser.parse_args()
    os.environ["DATABASE_URL"] = args.database_url
    os.environ.setdefault("SECRET_KEY", "bench")
    # Any valid key: nothing here is encrypted, but production settings require one.
    os.environ.setdefault("ROUTER_ENCRYPTION_KEYS",
                          "A8xkVaa1nVl7KDppCml_KeREI_n2hNgvJejhGkTXCz8=")
    os.environ["REDIS_URL"] = ""

    from harness import prepare_database
    prepare_database(args.database_url)

    import django
    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from accounts.services import api_key_create, user_create
    from proxy import selectors

    print(f"creating {args.keys} users and keys ...", flush=True)
    secrets = [api_key_create(user=user_create(email=f"lookup{i}@example.com")).secret
               for i in range(args.keys)]
    cache = selectors._callers
    reloaded = [0]  # keys loaded again, either way
    load_one, load_many = selectors._load_caller, cache.reload_many

    def counted_one(raw_key: str) -> object:
        reloaded[0] += 1
        return load_one(raw_key)

    def counted_many(raw_keys: list[str]) -> object:
        reloaded[0] += len(raw_keys)
        return load_many(raw_keys)  # type: ignore[misc]

    selectors._load_caller = counted_one  # the cached closures call it by name

    async def phase(batched: bool) -> tuple[float, int]:
        cache.clear()
        cache.reload_many = counted_many if batched else None  # type: ignore[assignment]
        for secret in secrets:
            await selectors.caller_for_key(secret)
        before, cpu = reloaded[0], time.process_time()
        await asyncio.sleep(args.seconds)
        return time.process_time() - cpu, reloaded[0] - before

    results: dict[str, list[tuple[float, int]]] = {"batched": [], "one by one": []}
    for _ in range(2):
        for name, batched in (("batched", True), ("one by one", False)):
            print(f"{name}: {args.seconds:g} s of the keeper over {args.keys} keys ...",
                  flush=True)
            results[name].append(asyncio.run(phase(batched)))
    print()
    for name, runs in results.items():
        cpu, loads = sum(c for c, _ in runs), sum(n for _, n in runs)
        seconds = len(runs) * args.seconds
        per_key = 1e6 * cpu / max(loads, 1)
        print(f"{name:>10}: {loads} keys reloaded in {seconds:g} s, {per_key:.0f} "
              f"us of CPU per key reloaded; {100 * cpu / seconds * 1000 / args.keys:.1f} % of "
              f"a core for 1,000 keys in use")


if __name__ == "__main__":
    main()
