"""A production-shaped history, seeded with set-based SQL: what ``scale_bench.py`` and
``dashboard_bench.py`` measure against.

1,000 users (the first, the "heavy" one, makes 20 % of the requests), 10 organizations of
5 members each (the heavy user owns the first; a quarter of every member's requests go
through their organization key and wallet), 6 workers (one without a cost price), 5
models, 90 days, 2 % upstream errors (voided holds, nothing charged, as the request path
leaves them), 1 % cancelled streams (charged, estimated). For every usage record there is
what a settle writes (``billing.services.hot_path.statements.RESOLVE_SQL``): a resolved
hold with the request id, and for a charged one a ``charge`` ledger entry keyed
``charge:<id>``, memo ``<model> request <id>``, pointing at the hold, with the wallet's
running balance after it. Each wallet is topped up before the charges of every chunk, so no
balance is ever negative; wallets, key budgets and member budgets move with their entries.
The roll-ups are built by the job's own GROUP BY (``billing.services.rollups``), in SQL.

Everything goes through the migrated schema (constraints, triggers and unique indexes
stay); only plain secondary indexes of the three big tables are dropped during the bulk
load and rebuilt after it (``--keep-indexes``-style callers can say no). Nothing here
decides what the benchmarks measure; ``invariants`` checks the result.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

WORKERS = ["w-openai-1", "w-openai-2", "w-vllm-1", "w-vllm-2", "w-anthropic", "w-slow"]
MODELS = ["gpt-small", "gpt-large", "claude", "llama-70b", "embed"]
DAYS = 90
USERS = 1000
ORGANIZATIONS = 10
MEMBERS = 5  # per organization, the owner included
CHUNK = 1_000_000
MAX_OUTPUT = 4000  # every price's; a hold reserves the prompt plus this much output
BIG_TABLES = ("billing_usagerecord", "billing_hold", "billing_ledgerentry")

Log = Callable[[str], None]


@contextmanager
def timed(label: str, log: Log, into: dict[str, float] | None = None) -> Iterator[None]:
    started = time.perf_counter()
    yield
    seconds = time.perf_counter() - started
    if into is not None:
        into[label] = round(seconds, 2)
    log(f"{label}: {seconds:.1f} s")


@dataclass(frozen=True)
class Cast:
    """Who the seed made: the heavy user and what of theirs the benchmarks open."""

    heavy_user_id: int
    heavy_wallet_id: int
    heavy_key_ids: list[int]
    heavy_organization_id: int


# --------------------------------------------------------------------------- the cast


def seed_cast(now: datetime) -> Cast:
    """Users, wallets, keys, key budgets, prices, organizations with members and their
    budgets: a few thousand rows, through the ORM and the services."""
    from django.db import connection

    from accounts.keys import key_generate
    from accounts.models import ApiKey, User
    from billing.models import Wallet
    from billing.services import price_set
    from billing.services.budgets import key_budget_set, member_budget_open
    from organizations.models import Membership, Role
    from organizations.services import organization_create

    joined = now - timedelta(days=DAYS + 10)
    users = User.objects.bulk_create(
        User(email=f"scale{i}@example.com", password="!", date_joined=joined)
        for i in range(USERS))
    Wallet.objects.bulk_create(Wallet(user=user) for user in users)

    def key(user: User, name: str, organization_id: int | None = None) -> ApiKey:
        generated = key_generate()
        return ApiKey(user=user, name=name, prefix=generated.prefix, digest=generated.digest,
                      created_at=joined, organization_id=organization_id)

    # The heavy user has 5 keys, everyone else 2.
    personal = ApiKey.objects.bulk_create(
        key(user, f"key {k}") for i, user in enumerate(users) for k in range(5 if i == 0 else 2))
    keys_of: dict[int, list[int]] = {}
    for api_key in personal:
        keys_of.setdefault(api_key.user_id, []).append(api_key.pk)
    # Key budgets: the heavy user's first key and every tenth user's; caps far above use.
    for i, user in enumerate(users):
        if i % 10 == 0:
            key_budget_set(api_key=ApiKey(pk=keys_of[user.pk][0]),
                           lifetime_limit_micros=10**15, monthly_limit_micros=10**14)
    for i, model in enumerate(MODELS):
        price_set(model=model, input_usd_per_mtok="1", output_usd_per_mtok="2",
                  max_output_tokens=MAX_OUTPUT, effective_from=joined,
                  kind="embedding" if model == "embed" else None, context_length=128_000 + i)
    org_rows = []
    for o in range(ORGANIZATIONS):
        owner = users[o * MEMBERS]
        organization = organization_create(name=f"Scale org {o}", owner=owner)
        members = users[o * MEMBERS:(o + 1) * MEMBERS]
        for member in members[1:]:
            Membership.objects.create(organization=organization, user=member, role=Role.MEMBER)
            member_budget_open(organization_id=organization.pk, user_id=member.pk)
        org_keys = ApiKey.objects.bulk_create(key(m, f"org {o} key", organization.pk)
                                              for m in members)
        wallet_id = Wallet.objects.get(organization=organization).pk
        org_rows += [(m.pk, organization.pk, wallet_id, k.pk) for m, k in zip(members, org_keys,
                                                                              strict=True)]
    wallets = dict(Wallet.objects.filter(user__in=users).values_list("user_id", "pk"))
    orgs = {row[0]: row[1:] for row in org_rows}
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE IF NOT EXISTS bench_scale_user (u int PRIMARY KEY, "
                       "user_id bigint, wallet_id bigint, key_ids bigint[], org_id bigint, "
                       "org_wallet_id bigint, org_key_id bigint)")
        cursor.executemany("INSERT INTO bench_scale_user VALUES (%s, %s, %s, %s, %s, %s, %s)", [
            (i, user.pk, wallets[user.pk], keys_of[user.pk], *orgs.get(user.pk, (None,) * 3))
            for i, user in enumerate(users)])
    heavy = users[0]
    return Cast(heavy_user_id=heavy.pk, heavy_wallet_id=wallets[heavy.pk],
                heavy_key_ids=keys_of[heavy.pk], heavy_organization_id=orgs[heavy.pk][0])


def cast_of() -> Cast:
    """The cast of a database seeded earlier (``--reuse``)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT user_id, wallet_id, key_ids, org_id FROM bench_scale_user "
                       "WHERE u = 0")
        user_id, wallet_id, key_ids, org_id = cursor.fetchone()
    return Cast(heavy_user_id=user_id, heavy_wallet_id=wallet_id, heavy_key_ids=list(key_ids),
                heavy_organization_id=org_id)


# --------------------------------------------------------------------------- usage


# One row per request g, in [lo, hi], at start + (g - lo) * step: who, through which key
# and wallet, what it used and cost. Deterministic in g, so a chunk is the same every time.
STAGE = """
INSERT INTO bench_scale_rows
SELECT g, 'req_' || lpad(to_hex(g), 32, '0'), su.user_id,
       CASE WHEN s.via_org THEN su.org_wallet_id ELSE su.wallet_id END,
       CASE WHEN s.via_org THEN su.org_id END,
       CASE WHEN s.via_org THEN su.org_key_id
            ELSE su.key_ids[1 + (g / 20) %% cardinality(su.key_ids)] END,
       (%(models)s::text[])[s.m], (%(prices)s::bigint[])[s.m],
       (%(workers)s::text[])[s.w],
       s.p, s.c, s.p + 2 * s.c,
       CASE WHEN s.status = 'upstream_error' OR s.w = 6 THEN NULL
            ELSE (s.p + 2 * s.c) * 7 / 10 END,
       s.status, s.endpoint, s.latency,
       %(start)s + (g - %(lo)s) * %(step)s
FROM (SELECT g, u, m, w, status,
             -- An upstream that failed before any output: nothing used, nothing charged.
             CASE WHEN status = 'upstream_error' THEN 0 ELSE (100 + (g * 37) %% 3000) END AS p,
             CASE WHEN status = 'upstream_error' OR m = 5 THEN 0
                  ELSE (10 + (g * 101) %% 800) END AS c,
             CASE WHEN m = 5 THEN 'embeddings' WHEN h %% 10 = 1 THEN 'responses'
                  WHEN h %% 10 = 2 THEN 'messages' ELSE 'chat' END AS endpoint,
             (200 + (g * 2654435761) %% 4000)::int AS latency,
             u < %(org_members)s AND (g / 5) %% 4 = 0 AS via_org
      FROM (SELECT g, h, CASE WHEN g %% 5 = 0 THEN 0 ELSE 1 + (g * 7919) %% 999 END AS u,
                   1 + (g + g / 5) %% 5 AS m, 1 + (g / 7) %% 6 AS w,
                   CASE WHEN h %% 50 = 3 THEN 'upstream_error' WHEN h %% 97 = 5 THEN 'cancelled'
                        ELSE 'ok' END AS status
            FROM (SELECT g, (g * 2654435761) %% 10007 AS h
                  FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) AS g) AS a) AS b
     ) AS s
JOIN bench_scale_user AS su USING (u)
"""

STAGE_TABLE = """
CREATE TEMP TABLE IF NOT EXISTS bench_scale_rows (
    g bigint, request_id text, user_id bigint, wallet_id bigint, organization_id bigint,
    api_key_id bigint, model text, price_id bigint, worker text, p int, c int, cost bigint,
    upstream_cost bigint, status text, endpoint text, latency int, created_at timestamptz)
"""

# What each wallet is charged in the chunk, and the top-up it gets first: the charges and
# a little more, in whole dollars.
SUMS = """
CREATE TEMP TABLE bench_scale_sums AS
SELECT wallet_id, sum(cost) AS charged,
       ((sum(cost) + 200000 + 999999) / 1000000) * 1000000 AS topup
  FROM bench_scale_rows GROUP BY wallet_id HAVING sum(cost) > 0
"""

TOPUPS = """
INSERT INTO billing_ledgerentry (wallet_id, kind, amount_micros, balance_after_micros,
                                 idempotency_key, memo, created_at)
SELECT w.id, (ARRAY['topup', 'voucher', 'adjustment'])[1 + w.id %% 3], s.topup,
       w.posted_micros + s.topup, 'bench-seed:' || w.id || ':' || %(lo)s, 'bench seed',
       %(start)s - interval '1 second'
  FROM bench_scale_sums AS s JOIN billing_wallet AS w ON w.id = s.wallet_id
 ORDER BY w.id
"""

HOLDS = """
INSERT INTO billing_hold (id, wallet_id, api_key_id, price_id, model, amount_micros,
                          charged_micros, status, created_at, expires_at, resolved_at)
SELECT request_id, wallet_id, api_key_id, price_id, model, p + 2 * %(max_output)s, cost,
       CASE WHEN status = 'upstream_error' THEN 'voided' ELSE 'posted' END,
       created_at - latency * interval '1 millisecond',
       created_at - latency * interval '1 millisecond' + %(ttl)s * interval '1 second',
       created_at
  FROM bench_scale_rows ORDER BY g
"""

USAGE = """
INSERT INTO billing_usagerecord (request_id, user_id, organization_id, api_key_id, model,
    worker, prompt_tokens, completion_tokens, cached_tokens, cache_write_tokens, endpoint,
    cost_micros, upstream_cost_micros, price_id, source, estimate_reason, over_cap,
    over_hold, status, latency_ms, ttft_ms, created_at)
SELECT request_id, user_id, organization_id, api_key_id, model,
       worker, p, c, 0, 0, endpoint, cost, upstream_cost, price_id,
       CASE WHEN status = 'cancelled' THEN 'estimated' ELSE 'provider' END,
       CASE WHEN status = 'cancelled' THEN 'incomplete' ELSE '' END, false, false,
       status, latency, CASE WHEN status = 'upstream_error' THEN NULL
                             ELSE 50 + (g * 40503) %% 900 END, created_at
  FROM bench_scale_rows ORDER BY g
"""

CHARGES = """
INSERT INTO billing_ledgerentry (wallet_id, kind, amount_micros, balance_after_micros,
                                 idempotency_key, memo, hold_id, created_at)
SELECT r.wallet_id, 'charge', -r.cost,
       w.posted_micros + s.topup - sum(r.cost) OVER (PARTITION BY r.wallet_id ORDER BY r.g),
       'charge:' || r.request_id, r.model || ' request ' || r.request_id, r.request_id,
       r.created_at
  FROM bench_scale_rows AS r JOIN bench_scale_sums AS s USING (wallet_id)
  JOIN billing_wallet AS w ON w.id = r.wallet_id
 WHERE r.cost > 0 ORDER BY r.g
"""

WALLETS = """
UPDATE billing_wallet AS w
   SET posted_micros = w.posted_micros + s.topup - s.charged, updated_at = now()
  FROM bench_scale_sums AS s WHERE w.id = s.wallet_id
"""

KEY_BUDGETS = """
UPDATE billing_keybudget AS b
   SET spent_micros = b.spent_micros + k.charged,
       month_spent_micros = CASE WHEN b.month = %(month)s THEN b.month_spent_micros ELSE 0 END
                            + k.this_month,
       month = %(month)s
  FROM (SELECT api_key_id, sum(cost) AS charged,
               coalesce(sum(cost) FILTER (WHERE created_at >= %(month)s), 0) AS this_month
          FROM bench_scale_rows GROUP BY api_key_id) AS k
 WHERE b.api_key_id = k.api_key_id
"""

MEMBER_BUDGETS = """
UPDATE billing_memberbudget AS m
   SET spent_micros = m.spent_micros + t.charged,
       month_spent_micros = CASE WHEN m.month = %(month)s THEN m.month_spent_micros ELSE 0 END
                            + t.this_month,
       month = %(month)s
  FROM (SELECT organization_id, user_id, sum(cost) AS charged,
               coalesce(sum(cost) FILTER (WHERE created_at >= %(month)s), 0) AS this_month
          FROM bench_scale_rows WHERE organization_id IS NOT NULL
         GROUP BY organization_id, user_id) AS t
 WHERE m.organization_id = t.organization_id AND m.user_id = t.user_id
"""


def usage_append(lo: int, hi: int, *, start: datetime, step: timedelta) -> None:
    """Requests ``lo``..``hi`` (at ``start`` + (g - lo) * ``step``), as settled requests
    leave them, in one transaction: top-ups first, then holds, usage records and charges
    with their running balances, then the wallets and budgets."""
    from django.conf import settings
    from django.db import connection, transaction

    from billing.models import ModelPrice
    from billing.services.budgets import current_month

    prices = dict(ModelPrice.objects.filter(model__in=MODELS).order_by(
        "model", "effective_from").values_list("model", "pk"))
    params: dict[str, Any] = {
        "lo": lo, "hi": hi, "start": start, "step": step, "models": MODELS,
        "prices": [prices[m] for m in MODELS], "workers": WORKERS,
        "org_members": ORGANIZATIONS * MEMBERS, "max_output": MAX_OUTPUT,
        "ttl": settings.ROUTER_HOLD_TTL_SECONDS, "month": current_month()}
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL synchronous_commit = off")
        cursor.execute("SET LOCAL work_mem = '256MB'")
        cursor.execute(STAGE_TABLE)
        cursor.execute("TRUNCATE bench_scale_rows")
        cursor.execute(STAGE, params)
        cursor.execute("DROP TABLE IF EXISTS bench_scale_sums")
        cursor.execute(SUMS)
        for statement in (TOPUPS, HOLDS, USAGE, CHARGES, WALLETS, KEY_BUDGETS, MEMBER_BUDGETS):
            cursor.execute(statement, params)


def refusals_append(count: int, *, start: datetime, span: timedelta) -> None:
    """``count`` groups of refused requests (402 and 429) over ``span`` from ``start``."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("""
            INSERT INTO billing_refusedrequests (user_id, api_key_id, minute, status, reason,
                model, endpoint, count, message, last_request_id)
            SELECT su.user_id, su.key_ids[1],
                   date_trunc('minute', %(start)s + i * %(step)s),
                   CASE WHEN i %% 3 = 0 THEN 429 ELSE 402 END,
                   CASE WHEN i %% 3 = 0 THEN 'rate_limit' ELSE 'balance' END,
                   (%(models)s::text[])[1 + i %% 5], 'chat', 1 + i %% 7,
                   'refused (bench seed)', 'req_refused_' || i
              FROM generate_series(1, %(count)s) AS i
              JOIN bench_scale_user AS su
                ON su.u = CASE WHEN i %% 5 = 0 THEN 0 ELSE 1 + (i * 7919) %% 999 END
            ON CONFLICT DO NOTHING
        """, {"start": start, "step": span / max(count, 1), "count": count, "models": MODELS})


# --------------------------------------------------------------------------- roll-ups


# What billing.services.rollups.usage_rollup writes, as one statement per period, in time
# order: the job writes a day at a time, so a day's rows sit together in the table, and a
# rebuild that reads them back (to write only what changed) reads a few pages per day. An
# unordered insert scatters each day over the whole table and makes that read ~3x slower.
ROLLUP_USAGE = """
INSERT INTO billing_usagerollup (period, bucket_start, user_id, organization_id, api_key_id,
    model, requests, failed_requests, prompt_tokens, completion_tokens, cached_tokens,
    cost_micros, upstream_cost_micros, unknown_cost_requests, unknown_cost_charged_micros)
SELECT %(period)s, date_trunc(%(period)s, created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
       user_id, organization_id, api_key_id, model, count(*),
       count(*) FILTER (WHERE status <> 'ok'),
       sum(prompt_tokens), sum(completion_tokens), sum(cached_tokens), sum(cost_micros),
       coalesce(sum(upstream_cost_micros), 0),
       count(*) FILTER (WHERE upstream_cost_micros IS NULL),
       coalesce(sum(cost_micros) FILTER (WHERE upstream_cost_micros IS NULL), 0)
FROM billing_usagerecord WHERE created_at < %(until)s GROUP BY 2, 3, 4, 5, 6
ORDER BY 2
"""


def usage_rollups_sql(until: datetime) -> None:
    """Every hourly and daily usage bucket of the records before ``until``, by the job's own
    GROUP BY in SQL."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SET work_mem = '256MB'")
        for period in ("hour", "day"):
            cursor.execute(ROLLUP_USAGE, {"period": period, "until": until})
        cursor.execute("RESET work_mem")


# --------------------------------------------------------------------------- bulk load


def plain_indexes(tables: tuple[str, ...] = BIG_TABLES) -> list[tuple[str, str]]:
    """(name, definition) of the tables' indexes that back no constraint and are not
    unique: safe to drop during a bulk load and build again after it."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("""
            SELECT c.relname, pg_get_indexdef(i.indexrelid)
              FROM pg_index AS i JOIN pg_class AS c ON c.oid = i.indexrelid
             WHERE i.indrelid = ANY(%s::regclass[]) AND NOT i.indisunique
               AND NOT i.indisprimary
               AND NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conindid = i.indexrelid)
        """, [list(tables)])
        # A partitioned table's index reads "ON ONLY": built again it must reach every
        # partition.
        return [(name, definition.replace(" ON ONLY ", " ON ")) for name, definition
                in cursor.fetchall()]


@contextmanager
def without_plain_indexes(log: Log, tables: tuple[str, ...] = BIG_TABLES) -> Iterator[None]:
    from django.db import connection

    indexes = plain_indexes(tables)
    with connection.cursor() as cursor:
        for name, _ in indexes:
            cursor.execute(f'DROP INDEX "{name}"')
    log(f"  dropped {len(indexes)} plain indexes for the load: "
        f"{', '.join(name for name, _ in indexes)}")
    yield
    with connection.cursor() as cursor:
        cursor.execute("SET maintenance_work_mem = '512MB'")
        for _, definition in indexes:
            cursor.execute(definition)
        cursor.execute("RESET maintenance_work_mem")


# --------------------------------------------------------------------------- all of it


def seed(total: int, *, log: Log = print, drop_indexes: bool = True,
         refusals: bool = True) -> tuple[Cast, dict[str, float]]:
    """The whole history: cast, ``total`` usage records over 90 days in chunks, refusals,
    usage roll-ups, VACUUM ANALYZE. Returns the cast and the seconds of each step."""
    from django.db import connection
    from django.utils import timezone

    from billing.services.partitions import partitions_ensure

    seconds: dict[str, float] = {}
    now = timezone.now().replace(microsecond=0)
    with timed("cast (users, keys, organizations, budgets, prices)", log, seconds):
        cast = seed_cast(now)
    start = now - timedelta(days=DAYS)
    with timed("monthly partitions", log, seconds):
        # As `router partitions` keeps a deployment: each month's rows in their own
        # partition, none in DEFAULT (which would make every read of a day a read of the
        # whole history's index).
        partitions_ensure(now=start, months_ahead=DAYS // 28 + 1)
    # The last record lands a minute before now: none is in the future.
    step = (timedelta(days=DAYS) - timedelta(minutes=1)) / total
    bulk = without_plain_indexes(log) if drop_indexes else nullcontext()
    with timed(f"usage records, holds, ledger ({total:,}, chunks of {CHUNK:,})", log,
               seconds), bulk:
        for lo in range(1, total + 1, CHUNK):
            hi = min(lo + CHUNK - 1, total)
            usage_append(lo, hi, start=start + (lo - 1) * step, step=step)
            log(f"  {hi:,}")
    if refusals:
        with timed(f"refused requests ({total // 100:,} groups)", log, seconds):
            refusals_append(total // 100, start=start, span=timedelta(days=DAYS))
    bulk = (without_plain_indexes(log, ("billing_usagerollup",)) if drop_indexes
            else nullcontext())
    with timed("usage roll-ups (the job's GROUP BY, in SQL)", log, seconds), bulk:
        usage_rollups_sql(now + timedelta(hours=1))  # all of it: the job redoes the last hours
    with timed("VACUUM ANALYZE", log, seconds), connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE IF NOT EXISTS bench_scale_seed (records bigint, "
                       "next_g bigint, seeded_at timestamptz, seconds jsonb)")
        cursor.execute("INSERT INTO bench_scale_seed VALUES (%s, %s, now(), %s::jsonb)",
                       [total, total + 1, json.dumps(seconds)])
    return cast, seconds


def claim_request_numbers(count: int) -> int:
    """The first of ``count`` request numbers (g) no request has used yet, claimed."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("UPDATE bench_scale_seed SET next_g = next_g + %s RETURNING next_g - %s",
                       [count, count])
        return int(cursor.fetchone()[0])


# --------------------------------------------------------------------------- invariants


INVARIANTS: list[tuple[str, str]] = [
    ("every wallet's posted balance is its ledger's sum", """
        SELECT count(*) FROM billing_wallet AS w
          LEFT JOIN (SELECT wallet_id, sum(amount_micros) AS s FROM billing_ledgerentry
                      GROUP BY wallet_id) AS e ON e.wallet_id = w.id
         WHERE w.posted_micros <> coalesce(e.s, 0)"""),
    ("every wallet's pending balance is its pending holds' sum", """
        SELECT count(*) FROM billing_wallet AS w
          LEFT JOIN (SELECT wallet_id, sum(amount_micros) AS s FROM billing_hold
                      WHERE status = 'pending' GROUP BY wallet_id) AS h ON h.wallet_id = w.id
         WHERE w.pending_micros <> coalesce(h.s, 0)"""),
    ("every entry's balance_after is the running balance in id order, never negative", """
        SELECT count(*) FROM (
            SELECT balance_after_micros, sum(amount_micros) OVER (
                       PARTITION BY wallet_id ORDER BY id) AS running
              FROM billing_ledgerentry) AS e
         WHERE balance_after_micros <> running OR running < 0"""),
    ("every usage record has its resolved hold (same id, its charge)", """
        SELECT count(*) FROM billing_usagerecord AS u
          LEFT JOIN billing_hold AS h ON h.id = u.request_id
         WHERE h.id IS NULL OR h.status NOT IN ('posted', 'voided')
            OR h.charged_micros <> u.cost_micros"""),
    ("one charge per charged usage record, of its cost, as the settle writes it", """
        SELECT count(*) FROM billing_usagerecord AS u
          FULL JOIN (SELECT * FROM billing_ledgerentry WHERE kind = 'charge') AS e
            ON e.hold_id = u.request_id
         WHERE (u.cost_micros > 0 OR e.id IS NOT NULL)
           AND (u.id IS NULL OR e.id IS NULL OR e.amount_micros <> -u.cost_micros
                OR e.idempotency_key <> 'charge:' || u.request_id
                OR e.memo <> u.model || ' request ' || u.request_id)"""),
    ("charges add up to the usage records' costs", """
        SELECT abs((SELECT coalesce(sum(cost_micros), 0) FROM billing_usagerecord)
                   + (SELECT coalesce(sum(amount_micros), 0) FROM billing_ledgerentry
                       WHERE kind = 'charge'))"""),
    ("every key budget's spend is its key's charges", """
        SELECT count(*) FROM billing_keybudget AS b
          LEFT JOIN (SELECT api_key_id, sum(cost_micros) AS s FROM billing_usagerecord
                      GROUP BY api_key_id) AS u ON u.api_key_id = b.api_key_id
         WHERE b.spent_micros <> coalesce(u.s, 0)
            OR b.pending_micros <> (SELECT coalesce(sum(amount_micros), 0) FROM billing_hold
                                     WHERE status = 'pending' AND api_key_id = b.api_key_id)"""),
    ("every member budget's spend is the member's charges to the organization", """
        SELECT count(*) FROM billing_memberbudget AS m
          LEFT JOIN (SELECT organization_id, user_id, sum(cost_micros) AS s
                       FROM billing_usagerecord WHERE organization_id IS NOT NULL
                      GROUP BY 1, 2) AS u
            ON u.organization_id = m.organization_id AND u.user_id = m.user_id
         WHERE m.spent_micros <> coalesce(u.s, 0)"""),
    ("the roll-ups add up to the usage records (each period)", """
        SELECT count(*) FROM (SELECT period, sum(requests) AS n, sum(cost_micros) AS cost,
                                     sum(prompt_tokens) AS p
                                FROM billing_usagerollup GROUP BY period) AS r,
                             (SELECT count(*) AS n, sum(cost_micros) AS cost,
                                     sum(prompt_tokens) AS p FROM billing_usagerecord) AS u
         WHERE r.n <> u.n OR r.cost <> u.cost OR r.p <> u.p"""),
]
NOTHING_PENDING = ("no hold is pending", "SELECT count(*) FROM billing_hold "
                   "WHERE status = 'pending'")


def invariants(*, nothing_pending: bool = False, rollups: bool = True,
               log: Log = print) -> dict[str, int]:
    """Each invariant's count of violations (0: holds), logged as it goes."""
    from django.db import connection

    checks = [*INVARIANTS, *([NOTHING_PENDING] if nothing_pending else [])]
    if not rollups:
        checks = [c for c in checks if "roll-ups" not in c[0]]
    found = {}
    with connection.cursor() as cursor:
        cursor.execute("SET work_mem = '256MB'")
        for label, query in checks:
            started = time.perf_counter()
            cursor.execute(query)
            found[label] = int(cursor.fetchone()[0] or 0)
            log(f"  {'ok ' if found[label] == 0 else 'BAD'} {label}"
                f"{'' if found[label] == 0 else f': {found[label]}'}"
                f" ({time.perf_counter() - started:.1f} s)")
        cursor.execute("RESET work_mem")
    return found
