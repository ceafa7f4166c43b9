"""What ``scale_bench.py`` times: pages through Django's test client, and the jobs by their
public names. A name the code no longer has is reported as n/a (``None``), never a crash,
so that the same script measures the code before and after a change."""

from __future__ import annotations

import html
import importlib
import os
import re
import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urljoin, urlsplit

from scale_seed import Cast, Log

DEEP_PAGES = 1000  # "page 1000", or as deep by following the pages' own next links
INCREMENTAL_RECORDS = 10_000
SWEPT_HOLDS = 10_000


@dataclass
class Figure:
    """One measured operation: p50/p95 of timed runs (ms), or one value of a job."""

    name: str
    group: str  # portal, api, organization, admin, job
    unit: str  # ms, s, rows/s, MB
    value: float | None  # the figure compared with the target (p50 for pages)
    p95: float | None = None
    runs: int = 0
    note: str = ""
    # A page's database work: the buffers (8 kB pages, from cache or disk) its SELECTs read,
    # from EXPLAIN (ANALYZE, BUFFERS) of each. Unlike its time, the same on a busy machine.
    buffers: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def lookup(path: str) -> Callable[..., Any] | None:
    """``module.attribute`` if the code has it, else None (reported n/a)."""
    module, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name, None)
    except ImportError:
        return None


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, round(fraction * len(ordered)) - 1)]


# --------------------------------------------------------------------------- pages


def time_get(client: Any, name: str, group: str, url: str | None, runs: int,
             warm: int = 2) -> Figure:
    if url is None:
        return Figure(name, group, "ms", None, note="no such page (n/a)")
    try:
        return _time_get(client, name, group, url, runs, warm)
    except Exception as error:  # noqa: BLE001 (a page that crashes is a finding, reported)
        return Figure(name, group, "ms", None,
                      note=f"{url}: {type(error).__name__}: {str(error)[:120]}")


def _time_get(client: Any, name: str, group: str, url: str, runs: int, warm: int) -> Figure:
    for _ in range(warm):
        response = client.get(url)
        if response.status_code != 200:
            return Figure(name, group, "ms", None, note=f"{url}: status {response.status_code}")
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        response = client.get(url)
        if response.streaming:
            b"".join(response.streaming_content)
        times.append((time.perf_counter() - started) * 1000)
    return Figure(name, group, "ms", round(statistics.median(times), 1),
                  round(percentile(times, 0.95), 1), runs, note=url,
                  buffers=page_buffers(client, url))


def page_buffers(client: Any, url: str) -> int:
    """The buffers every SELECT of one more GET of ``url`` reads, by EXPLAIN (ANALYZE,
    BUFFERS) of each right after it ran (its plan node totals include its children's)."""
    from django.db import connection, transaction

    statements: list[tuple[str, Any]] = []

    def keep(execute: Callable[..., Any], sql: str, params: Any, many: bool,
             context: Any) -> Any:
        result = execute(sql, params, many, context)
        if not many and sql.lstrip().upper().startswith(("SELECT", "WITH")):
            statements.append((sql, params))
        return result

    with connection.execute_wrapper(keep):
        response = client.get(url)
        if response.streaming:
            b"".join(response.streaming_content)
    total = 0
    # Rolled back: a WITH could write (none of a GET's should).
    with transaction.atomic(), connection.cursor() as cursor:
        for sql, params in statements:
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql, params)
            plan = cursor.fetchone()[0]
            plan = plan[0]["Plan"] if isinstance(plan, list) else plan
            total += plan.get("Shared Hit Blocks", 0) + plan.get("Shared Read Blocks", 0)
        transaction.set_rollback(True)
    return total


NEXT_LINK = re.compile(r'<a\b[^>]*?href="([^"]*)"[^>]*>\s*(?:Older|Next|More)\b'
                       r'|<a\b[^>]*?rel="next"[^>]*?href="([^"]*)"'
                       r'|<a\b[^>]*?href="([^"]*)"[^>]*?rel="next"', re.IGNORECASE)


def _html_next(url: str, body: str) -> str | None:
    match = NEXT_LINK.search(body)
    if match is None:
        return None
    href = html.unescape(next(g for g in match.groups() if g is not None))
    return urljoin(url, href)


def _api_next(url: str, body: Any) -> str | None:
    link = body.get("next") if isinstance(body, dict) else None
    if not link:
        return None
    parts = urlsplit(link)
    return f"{parts.path}?{parts.query}" if parts.query else parts.path


def deep_url(client: Any, url: str, *, api: bool, pages: int = DEEP_PAGES,
             log: Log = print) -> tuple[str | None, str]:
    """The URL of page ``pages`` of a list, found from its own "next" links: numbered pages
    are jumped to; cursors are followed (once, untimed). Returns (url, how)."""
    first: dict[str, Any] = {}

    def next_of(current: str) -> str | None:
        response = client.get(current)
        if response.status_code != 200:
            return None
        if api:
            first.setdefault("body", response.json())
            return _api_next(current, response.json())
        return _html_next(current, response.content.decode())

    link = next_of(url)
    if link is None:
        return None, "no next link on the first page"
    if re.search(r"[?&]page=\d+(&|$)", link):
        body = first.get("body") or {}
        if isinstance(body.get("count"), int) and body.get("results"):
            # DRF answers 404 past the last page (Django's paginator shows the last one).
            pages = min(pages, -(-body["count"] // len(body["results"])))
        return re.sub(r"([?&]page=)\d+", rf"\g<1>{pages}", link), f"page={pages} (numbered)"
    started = time.perf_counter()
    depth = 2
    while depth < pages:
        following = next_of(link)
        if following is None:
            break
        link, depth = following, depth + 1
    log(f"  followed {depth - 1} cursor links of {url} in {time.perf_counter() - started:.1f} s")
    return link, f"cursor, {depth} pages deep (followed)"


def portal_figures(client: Any, cast: Cast, runs: int, *, log: Log) -> list[Figure]:
    """Every portal page and /api call of the heavy user, signed in."""
    from django.utils import timezone

    week = timezone.now().date() - timedelta(days=30)
    key = cast.heavy_key_ids[1]
    org = cast.heavy_organization_id
    pages: list[tuple[str, str, str | None]] = [
        ("portal", "overview /", "/"),
        ("portal", "usage", "/usage/"),
        ("portal", "usage ?model=", "/usage/?model=gpt-large"),
        ("portal", "usage ?key=", f"/usage/?key={key}"),
        ("portal", "usage ?status=cancelled", "/usage/?status=cancelled"),
        ("portal", "usage ?since&until (a week)",
         f"/usage/?since={week}&until={week + timedelta(days=6)}"),
        ("portal", "usage ?status=refused", "/usage/?status=refused"),
        ("portal", "statement", "/statement/"),
        ("portal", "keys", "/keys/"),
        ("portal", "billing (top-ups)", "/topups/"),
        ("portal", "billing details", "/settings/billing/"),
        ("portal", "models", "/models/"),
        ("api", "api usage", "/api/usage"),
        ("api", "api usage ?model=", "/api/usage?model=gpt-large"),
        ("api", "api usage/daily", "/api/usage/daily"),
        ("api", "api usage/models", "/api/usage/models"),
        ("api", "api balance", "/api/balance"),
        ("api", "api keys", "/api/keys"),
        ("api", "api receipts", "/api/receipts"),
        ("organization", "org overview", f"/orgs/{org}/"),
        ("organization", "org usage", f"/orgs/{org}/usage/"),
        ("organization", "org members", f"/orgs/{org}/members/"),
        ("organization", "org budgets", f"/orgs/{org}/budgets/"),
        ("organization", "org keys", f"/orgs/{org}/keys/"),
        ("organization", "org billing", f"/orgs/{org}/billing/"),
        ("organization", "org statement", f"/orgs/{org}/billing/statement/"),
        ("organization", "api org usage", f"/api/orgs/{org}/usage"),
        ("organization", "api org ledger", f"/api/orgs/{org}/ledger"),
    ]
    figures = [time_get(client, name, group, url, runs) for group, name, url in pages]
    for group, name, url, api in (
            ("portal", "usage deep page", "/usage/", False),
            ("api", "api usage deep page", "/api/usage", True),
            ("organization", "org usage deep page", f"/orgs/{org}/usage/", False)):
        # SCALE_BENCH_DEEP_PAGES: fewer pages deep, for a quicker run (links are followed
        # one by one, each a whole page).
        deep, how = deep_url(client, url, api=api, log=log,
                             pages=int(os.environ.get("SCALE_BENCH_DEEP_PAGES", DEEP_PAGES)))
        figure = time_get(client, name, group, deep, runs)
        figure.note = f"{how}: {figure.note}"
        figures.append(figure)
    return figures


def admin_figures(client: Any, cast: Cast, runs: int) -> list[Figure]:
    """Every admin list that grows with the traffic, the heavy wallet's and user's pages,
    the admin index (the dashboard)."""
    pages = [
        ("admin index (dashboard)", "/admin/"),
        ("admin usage records", "/admin/billing/usagerecord/"),
        ("admin ledger entries", "/admin/billing/ledgerentry/"),
        ("admin holds", "/admin/billing/hold/"),
        ("admin holds: the expired", "/admin/billing/hold/?status__exact=expired"),
        ("admin wallets", "/admin/billing/wallet/"),
        ("admin users", "/admin/accounts/user/"),
        ("admin API keys", "/admin/accounts/apikey/"),
        ("admin refused requests", "/admin/billing/refusedrequests/"),
        ("admin usage roll-ups", "/admin/billing/usagerollup/"),
        ("admin wallet page (heavy)", f"/admin/billing/wallet/{cast.heavy_wallet_id}/change/"),
        ("admin user page (heavy)", f"/admin/accounts/user/{cast.heavy_user_id}/change/"),
        *admin_searches(cast),
    ]
    return [time_get(client, name, "admin", url, runs) for name, url in pages]


def admin_searches(cast: Cast) -> list[tuple[str, str]]:
    """The big lists' search box, with what staff paste into it: the oldest request's id
    (a search that walks the list newest first reads the whole table to find it), a key,
    the heavy user's address and a light user's, the organization's name, a model."""
    from urllib.parse import urlencode

    from accounts.models import ApiKey, User
    from billing.models import Hold, ModelPrice, UsageRecord
    from organizations.models import Organization

    oldest = (UsageRecord.objects.filter(user_id=cast.heavy_user_id).order_by("created_at")
              .values_list("request_id", flat=True).first())
    hold = Hold.objects.order_by("created_at").values_list("id", flat=True).first()
    key = ApiKey.objects.get(pk=cast.heavy_key_ids[0]).prefix
    heavy = User.objects.get(pk=cast.heavy_user_id).email
    light = (User.objects.exclude(pk=cast.heavy_user_id).filter(is_staff=False)
             .order_by("-pk").values_list("email", flat=True).first())
    organization = Organization.objects.get(pk=cast.heavy_organization_id).name
    model = ModelPrice.objects.order_by("model").values_list("model", flat=True).first()
    searches = [
        ("usagerecord", "a request id", oldest), ("usagerecord", "a key", key),
        ("usagerecord", "the heavy user's address", heavy),
        ("usagerecord", "a light user's address", light),
        ("usagerecord", "an organization's name", organization),
        ("usagerecord", "a model", model),
        ("hold", "a request id", hold), ("hold", "the heavy user's address", heavy),
        ("ledgerentry", "a request id", oldest),
        ("ledgerentry", "the heavy user's address", heavy),
        ("refusedrequests", "a key", key),
        ("usagerollup", "a key", key), ("usagerollup", "a light user's address", light),
        ("usagerollup", "an organization's name", organization),
        ("usagerollup", "a model", model),
    ]
    return [(f"admin {table} search: {what}",
             f"/admin/billing/{table}/?{urlencode({'q': term or ''})}")
            for table, what, term in searches]


# --------------------------------------------------------------------------- jobs


def reconcile_figure(runs: int) -> Figure:
    reconcile = lookup("billing.services.sweeper.wallets_reconcile")
    if reconcile is None:
        return Figure("router reconcile", "job", "s", None, note="wallets_reconcile: n/a")
    times, mismatches = [], 0
    for _ in range(runs):
        started = time.perf_counter()
        mismatches = len(reconcile())
        times.append(time.perf_counter() - started)
    return Figure("router reconcile", "job", "s", round(statistics.median(times), 3),
                  round(max(times), 3), runs, note=f"{mismatches} mismatched wallets")


def _append_recent() -> None:
    """INCREMENTAL_RECORDS new settled requests over the last ten minutes."""
    from django.utils import timezone
    from scale_seed import claim_request_numbers, usage_append

    lo = claim_request_numbers(INCREMENTAL_RECORDS)
    now = timezone.now()
    span = timedelta(minutes=10)
    usage_append(lo, lo + INCREMENTAL_RECORDS - 1, start=now - span,
                 step=(span - timedelta(seconds=1)) / INCREMENTAL_RECORDS)


def rollup_catch_up(*, log: Log) -> None:
    """``usage_rollup_recent`` once, untimed: the seed sums its roll-ups itself, and beat's
    run also moves the mark the pages read the roll-ups up to."""
    recent = lookup("billing.services.rollups.usage_rollup_recent")
    if recent is not None:
        started = time.perf_counter()
        recent()
        log(f"  catch-up run of usage_rollup_recent: {time.perf_counter() - started:.1f} s")


def incremental_rollup_figure(*, log: Log) -> Figure:
    """``usage_rollup_recent`` (the beat job) after INCREMENTAL_RECORDS new requests in the
    last ten minutes; a first run catches up whatever came before, untimed."""
    recent = lookup("billing.services.rollups.usage_rollup_recent")
    if recent is None:
        return Figure("incremental roll-up (10,000 new)", "job", "s", None,
                      note="usage_rollup_recent: n/a")
    rollup_catch_up(log=log)
    _append_recent()
    started = time.perf_counter()
    rows = recent()
    seconds = time.perf_counter() - started
    return Figure("incremental roll-up (10,000 new)", "job", "s", round(seconds, 3),
                  note=f"usage_rollup_recent: {rows} rows written")


def ledger_days_build_figure(*, log: Log) -> Figure | None:
    """The ledger days' first build (every day of history, a statement per day), what a
    deployment's first beat run does; None when the days are built already (a reused seed
    measured before) or the code has none."""
    refresh = lookup("billing.services.ledger_days.ledger_days_refresh")
    mark = lookup("billing.models.LedgerDayMark")
    if refresh is None or mark is None or mark.objects.exists():
        return None
    started = time.perf_counter()
    refreshed = refresh()
    seconds = time.perf_counter() - started
    log(f"  ledger days built: {refreshed.days} days, {refreshed.rows:,} rows, {seconds:.1f} s")
    return Figure("ledger days, first build (all history)", "job", "s", round(seconds, 2),
                  note=f"{refreshed.days} days, {refreshed.rows:,} rows")


def incremental_ledger_days_figure(*, log: Log) -> Figure:
    """``ledger_days_refresh`` (the beat job, every minute) after INCREMENTAL_RECORDS new
    charged requests in the last ten minutes; a first run catches up, untimed."""
    name = "incremental ledger days (10,000 new)"
    refresh = lookup("billing.services.ledger_days.ledger_days_refresh")
    if refresh is None:
        return Figure(name, "job", "s", None, note="ledger_days_refresh: n/a")
    refresh()
    _append_recent()
    started = time.perf_counter()
    refreshed = refresh()
    seconds = time.perf_counter() - started
    log(f"  ledger days refreshed: {refreshed.days} days, {refreshed.rows} rows")
    return Figure(name, "job", "s", round(seconds, 3),
                  note=f"{refreshed.days} day(s), {refreshed.rows} rows written")


SWEEP_HOLDS = """
INSERT INTO billing_hold (id, wallet_id, api_key_id, price_id, model, amount_micros,
                          charged_micros, status, created_at, expires_at)
SELECT %(tag)s || i, su.wallet_id, su.key_ids[1], %(price)s, 'gpt-small', 1000, 0, 'pending',
       now() - interval '20 minutes', now() - interval '5 minutes'
  FROM generate_series(1, %(count)s) AS i JOIN bench_scale_user AS su ON su.u = i %% 1000
"""


def sweeper_figure(*, log: Log) -> Figure:
    """SWEPT_HOLDS pending holds past their expiry (what crashed processes leave), their
    wallets' and key budgets' pending raised with them, then ``holds_sweep`` timed."""
    from django.db import connection, transaction

    from billing.models import ModelPrice

    sweep = lookup("billing.services.sweeper.holds_sweep")
    if sweep is None:
        return Figure("sweeper (10,000 expired holds)", "job", "s", None,
                      note="holds_sweep: n/a")
    tag = f"req_sweep_{uuid.uuid4().hex[:8]}_"
    price = ModelPrice.objects.filter(model="gpt-small").values_list("pk", flat=True).first()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(SWEEP_HOLDS, {"tag": tag, "price": price, "count": SWEPT_HOLDS})
        cursor.execute("""
            UPDATE billing_wallet AS w SET pending_micros = w.pending_micros + h.s
              FROM (SELECT wallet_id, sum(amount_micros) AS s FROM billing_hold
                     WHERE id LIKE %(like)s GROUP BY wallet_id) AS h
             WHERE w.id = h.wallet_id""", {"like": f"{tag}%"})
        cursor.execute("""
            UPDATE billing_keybudget AS b SET pending_micros = b.pending_micros + h.s
              FROM (SELECT api_key_id, sum(amount_micros) AS s FROM billing_hold
                     WHERE id LIKE %(like)s GROUP BY api_key_id) AS h
             WHERE b.api_key_id = h.api_key_id""", {"like": f"{tag}%"})
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE billing_hold")
    started = time.perf_counter()
    result = sweep()
    seconds = time.perf_counter() - started
    expired = len(getattr(result, "expired", ()) or ())
    log(f"  holds_sweep: {expired} expired in {seconds:.1f} s")
    return Figure("sweeper (10,000 expired holds)", "job", "s", round(seconds, 3),
                  note=f"{expired} expired")
