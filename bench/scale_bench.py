"""Every page, export and job of issue 20 at 1M and 10M usage records (issue 20's targets).

    python bench/scale_bench.py [--records 1000000] [--reuse] [--runs 10]
    python bench/scale_bench.py --scales 1000000,10000000 --reuse   # both, and the ratio

Per scale, a dedicated PostgreSQL database (``scale_bench_1m``, ``scale_bench_10m``: the
name must contain "bench"; ``--reuse`` keeps one already seeded at that scale) seeded by
``scale_seed.py`` with set-based SQL (every invariant checked after seeding), then:

- every portal page and /api call of the heaviest user (the usage page with each filter
  and a deep page found from the page's own "next" links, numbered or cursor), the
  organization's pages, through Django's test client signed in: p50 and p95 of warm runs;
- every admin list that grows, the heavy wallet's and user's admin pages, the admin index;
- ``wallets_reconcile`` (``router reconcile``); ``usage_rollup_recent`` after 10,000 new
  records; a full 90-day ``usage_rollup`` in a child process (time, peak RSS);
  ``holds_sweep`` over 10,000 expired holds; the heavy user's usage CSV in a child process
  (rows/s, RSS growth);
- every invariant again at the end (nothing pending after the sweep).

Jobs are called by their public names; a name the code no longer has is reported n/a. The
table compares each figure with its target (and with ``--scales``, the ratio of the last
scale to the first); the JSON goes to ``--out``.
"""
# Running this script again as a child (sys.executable, fixed arguments) is its job.
# ruff: noqa: S603

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))  # scale_seed, scale_probes, measure, harness by plain name

TMP = Path(tempfile.gettempdir())
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/scale_bench_{label}"
ROLLUP_MEMORY_LIMIT_MB = 4000  # the full roll-up child is killed past this (the machine's)
CHILD_TIMEOUT_S = 1200

# (operation or group, kind, threshold, ratio limit): kind "max" or "min".
PAGE_TARGET = ("p50 <= 100 ms, <= 1.5x", "max", 100.0, 1.5)
TARGETS: dict[str, tuple[str, str, float, float | None]] = {
    "router reconcile": ("<= 5 s", "max", 5.0, None),
    "incremental roll-up (10,000 new)": ("<= 1 s", "max", 1.0, None),
    "full roll-up (90 days)": ("<= 60 s", "max", 60.0, None),
    "full roll-up peak RSS": ("<= 500 MB", "max", 500.0, None),
    # The statements' ledger days are a roll-up of the ledger: held to the roll-ups' targets.
    "incremental ledger days (10,000 new)": ("<= 1 s", "max", 1.0, None),
    "ledger days, first build (all history)": ("<= 60 s", "max", 60.0, None),
    "sweeper (10,000 expired holds)": ("<= 2 s", "max", 2.0, None),
    "CSV export (heavy user)": (">= 100,000 rows/s", "min", 100_000.0, None),
    "CSV export RSS growth": ("<= 64 MB (flat)", "max", 64.0, None),
}


def label_of(records: int) -> str:
    for unit, suffix in ((1_000_000, "m"), (1_000, "k")):
        if records >= unit and records % unit == 0:
            return f"{records // unit}{suffix}"
    return str(records)


def url_for(template: str, records: int) -> str:
    url = template.replace("{label}", label_of(records))
    if "bench" not in urlsplit(url).path:
        raise SystemExit(f"refusing {url}: the database name must contain 'bench'")
    return url


def use_code(code: str) -> None:
    """Import the project from ``code`` (a checkout or ``git archive`` of another commit)
    instead of this one: the same benchmark then measures the code before and after."""
    import harness  # noqa: F401 (puts this checkout on sys.path first: the code goes before)

    if code:
        root = Path(code).resolve()
        if not (root / "router_admin" / "settings.py").is_file():
            raise SystemExit(f"--code {code}: no router_admin/settings.py there")
        sys.path.insert(0, str(root))
        os.chdir(root)  # Celery's Django fix-up puts the working directory first on sys.path


def setup_django(database_url: str) -> None:
    from harness import FERNET_KEY

    os.environ["DATABASE_URL"] = database_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "router_admin.settings")
    os.environ["DEBUG"] = "0"  # as deployed: no query log, cached templates
    os.environ.setdefault("SECRET_KEY", "scale-bench")
    os.environ.setdefault("ROUTER_ENCRYPTION_KEYS", FERNET_KEY)
    os.environ["ALLOWED_HOSTS"] = "testserver"  # the test client's host
    os.environ["ROUTER_API_RATE_PER_MINUTE"] = str(10**9)  # /api's per-user limit: not here
    os.environ.pop("REDIS_URL", None)  # local-memory cache: no shared Redis db to flush
    import django

    django.setup()


def plain_static() -> Any:
    """No collectstatic here: plain static names, as the tests use (tests/conftest.py)."""
    from django.conf import settings
    from django.test import override_settings

    plain = {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}
    return override_settings(STORAGES={**settings.STORAGES, "staticfiles": plain})


# --------------------------------------------------------------------------- children


def child_main(options: argparse.Namespace) -> None:
    """A job measured in a process of its own: its peak RSS is its own (VmHWM)."""
    from measure import peak_rss_bytes

    setup_django(options.database_url)
    baseline = _vm("VmRSS")
    if options.child == "rollup":
        from datetime import timedelta

        from django.utils import timezone
        from scale_probes import lookup

        rollup = lookup("billing.services.rollups.usage_rollup")
        started = time.perf_counter()
        rows = rollup(since=timezone.now() - timedelta(days=91), until=timezone.now())
        result = {"seconds": time.perf_counter() - started, "rows": rows}
    else:
        with plain_static():
            result = asyncio.run(_csv_export(options.user_id))
    result |= {"baseline_rss": baseline, "peak_rss": peak_rss_bytes(os.getpid())}
    print("RESULT " + json.dumps(result), flush=True)


def _vm(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    return 0


async def _csv_export(user_id: int) -> dict[str, Any]:
    from asgiref.sync import sync_to_async
    from django.test import AsyncClient

    from accounts.models import User

    client = AsyncClient()
    await client.aforce_login(await sync_to_async(User.objects.get)(pk=user_id))
    baseline = _vm("VmRSS")
    started = time.perf_counter()
    response = await client.get("/usage.csv")
    first = None
    lines = size = 0
    content = response.streaming_content if response.streaming else [response.content]
    if hasattr(content, "__aiter__"):
        async for chunk in content:
            first = first or time.perf_counter()
            lines += chunk.count(b"\n")
            size += len(chunk)
    else:
        for chunk in content:
            first = first or time.perf_counter()
            lines += chunk.count(b"\n")
            size += len(chunk)
    seconds = time.perf_counter() - started
    return {"status": response.status_code, "rows": max(lines - 1, 0), "bytes": size,
            "seconds": seconds, "first_byte_s": (first or started) - started,
            "request_baseline_rss": baseline}


def run_child(kind: str, database_url: str, *, code: str, user_id: int = 0,
              memory_limit_mb: int = ROLLUP_MEMORY_LIMIT_MB) -> dict[str, Any]:
    """Run ``kind`` in a child, watching its memory: past ``memory_limit_mb`` or
    CHILD_TIMEOUT_S it is killed and the result says so (so an unbounded job cannot take
    the shared machine down)."""
    from measure import peak_rss_bytes

    argv = [sys.executable, str(Path(__file__)), "--child", kind, "--database-url",
            database_url, "--user-id", str(user_id), "--code", code]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    started, peak, killed = time.monotonic(), 0, ""
    while proc.poll() is None:
        peak = max(peak, peak_rss_bytes(proc.pid))
        elapsed = time.monotonic() - started
        if peak > memory_limit_mb * 2**20 or elapsed > CHILD_TIMEOUT_S:
            killed = (f"killed at {peak / 2**20:.0f} MB after {elapsed:.0f} s "
                      f"(limits {memory_limit_mb} MB, {CHILD_TIMEOUT_S} s)")
            proc.kill()
            break
        time.sleep(0.1)
    output, _ = proc.communicate()
    for line in output.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line.removeprefix("RESULT "))
    return {"error": killed or f"exit {proc.returncode}: {output[-500:]}",
            "seconds": time.monotonic() - started, "peak_rss": peak}


# --------------------------------------------------------------------------- one scale


def run_scale(options: argparse.Namespace) -> dict[str, Any]:
    from harness import git_state, prepare_database

    url = url_for(options.database_url, options.records)
    log = _log
    report: dict[str, Any] = {"records": options.records, "database": urlsplit(url).path[1:],
                              "git": {} if options.code else git_state(),
                              "code": options.code or str(BENCH.parent),
                              "seed_seconds": {}}
    reused = options.reuse and _seeded(url) == options.records
    if not reused:
        prepare_database(url)
    setup_django(url)
    import scale_seed
    from django.core.management import call_command

    started = time.perf_counter()
    call_command("migrate", verbosity=0)
    report["migrate_seconds"] = round(time.perf_counter() - started, 1)
    log(f"migrate: {report['migrate_seconds']} s")
    if reused:
        log(f"reusing {report['database']}: already seeded with {options.records:,} records")
        cast = scale_seed.cast_of()
        report["reused"] = True
    else:
        log(f"seeding {report['database']} with {options.records:,} usage records")
        started = time.perf_counter()
        cast, report["seed_seconds"] = scale_seed.seed(
            options.records, log=log, drop_indexes=not options.keep_indexes)
        _worker_rollups(log, report["seed_seconds"])
        report["seed_total_seconds"] = round(time.perf_counter() - started, 1)
        log(f"seed total: {report['seed_total_seconds']} s")
        log("invariants after seeding:")
        report["invariants_after_seed"] = scale_seed.invariants(log=log)
    report["sizes"] = _sizes()
    if options.seed_only:
        report["figures"] = []
        return report
    if options.admin_only:
        with plain_static():
            report["figures"] = [figure.as_dict() for figure in _admin_pages(cast, options.runs)]
        return report
    from scale_probes import ledger_days_build_figure, rollup_catch_up

    # Statements read the ledger days, usage figures the roll-ups up to their mark: both
    # brought up to date first, as beat keeps a deployment's.
    build = ledger_days_build_figure(log=log)
    figures = [] if build is None else [build]
    rollup_catch_up(log=log)
    with plain_static():
        figures += _pages(cast, options.runs)
    figures += _jobs(url, cast, options)
    log("invariants at the end:")
    report["invariants_at_end"] = scale_seed.invariants(nothing_pending=True, log=log)
    report["figures"] = [figure.as_dict() for figure in figures]
    return report


def _log(message: str) -> None:
    print(message, flush=True)


def _seeded(url: str) -> int | None:
    import psycopg

    parts = urlsplit(url)
    admin = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                        [parts.path[1:]]).fetchone() is None:
            return None
    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
        if conn.execute("SELECT to_regclass('bench_scale_seed')").fetchone()[0] is None:
            return None
        row = conn.execute("SELECT records FROM bench_scale_seed").fetchone()
        return None if row is None else int(row[0])


def _worker_rollups(log: Any, seconds: dict[str, float]) -> None:
    """The fleet roll-ups the admin index reads, by the real job (SQL on PostgreSQL)."""
    from datetime import timedelta

    from django.utils import timezone
    from scale_probes import lookup
    from scale_seed import DAYS, timed

    worker_rollup = lookup("proxy.rollup_service.worker_rollup")
    if worker_rollup is None:
        log("worker roll-ups: n/a (proxy.rollup_service.worker_rollup)")
        return
    with timed("worker roll-ups (proxy.rollup_service, 91 days)", log, seconds):
        worker_rollup(since=timezone.now() - timedelta(days=DAYS + 1), until=timezone.now())


def _sizes() -> dict[str, Any]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("""
            SELECT relname, pg_total_relation_size(oid), reltuples::bigint FROM pg_class
             WHERE relname = ANY(%s) ORDER BY relname""",
                       [["billing_usagerecord", "billing_hold", "billing_ledgerentry",
                         "billing_usagerollup", "billing_refusedrequests"]])
        return {name: {"bytes": size, "rows_estimate": rows}
                for name, size, rows in cursor.fetchall()}


def _pages(cast: Any, runs: int) -> list[Any]:
    from django.test import Client
    from scale_probes import portal_figures

    from accounts.models import User

    # A page that crashes is reported in its row; its traceback would drown the output.
    logging.getLogger("django.request").setLevel(logging.CRITICAL)
    figures = []
    client = Client()
    client.force_login(User.objects.get(pk=cast.heavy_user_id))
    _log(f"portal, api and organization pages of the heavy user ({runs} timed runs each)")
    for figure in portal_figures(client, cast, runs, log=_log):
        _log(f"  {_describe(figure)}")
        figures.append(figure)
    return figures + _admin_pages(cast, runs)


def _admin_pages(cast: Any, runs: int) -> list[Any]:
    from django.test import Client
    from scale_probes import admin_figures

    from accounts.models import User
    from accounts.services import user_create
    from tests.staff import staff_sign_in

    staff = (User.objects.filter(email="scale-staff@example.com").first()
             or user_create(email="scale-staff@example.com", is_staff=True, is_superuser=True))
    client = staff_sign_in(Client(), staff)
    _log(f"admin pages ({runs} timed runs each)")
    figures = []
    for figure in admin_figures(client, cast, runs):
        _log(f"  {_describe(figure)}")
        figures.append(figure)
    return figures


def _jobs(url: str, cast: Any, options: argparse.Namespace) -> list[Any]:
    from scale_probes import (
        Figure,
        incremental_ledger_days_figure,
        incremental_rollup_figure,
        reconcile_figure,
        sweeper_figure,
    )

    figures = []

    def add(figure: Figure) -> None:
        _log(f"  {_describe(figure)}")
        figures.append(figure)

    _log("jobs")
    add(reconcile_figure(options.job_runs))
    add(incremental_rollup_figure(log=_log))
    add(incremental_ledger_days_figure(log=_log))
    _log("  full roll-up in a child process...")
    rollup = run_child("rollup", url, code=options.code,
                       memory_limit_mb=options.rollup_memory_limit_mb)
    note = rollup.get("error") or f"{rollup.get('rows')} rows"
    done = "error" not in rollup
    add(Figure("full roll-up (90 days)", "job", "s",
               round(rollup["seconds"], 2) if done else None, note=note))
    add(Figure("full roll-up peak RSS", "job", "MB", round(rollup["peak_rss"] / 2**20, 1)
               if done else None, note=note))
    add(sweeper_figure(log=_log))
    _log("  usage CSV export of the heavy user in a child process...")
    csv = run_child("csv", url, code=options.code, user_id=cast.heavy_user_id,
                    memory_limit_mb=options.rollup_memory_limit_mb)
    if "error" in csv or csv.get("status") != 200:
        note = csv.get("error") or f"status {csv.get('status')}"
        add(Figure("CSV export (heavy user)", "job", "rows/s", None, note=note))
        add(Figure("CSV export RSS growth", "job", "MB", None, note=note))
    else:
        note = (f"{csv['rows']:,} rows, {csv['bytes'] / 2**20:.0f} MB in {csv['seconds']:.1f} s,"
                f" first byte {csv['first_byte_s'] * 1000:.0f} ms")
        add(Figure("CSV export (heavy user)", "job", "rows/s",
                   round(csv["rows"] / csv["seconds"]), note=note))
        add(Figure("CSV export RSS growth", "job", "MB",
                   round((csv["peak_rss"] - csv["request_baseline_rss"]) / 2**20, 1),
                   note=f"peak {csv['peak_rss'] / 2**20:.0f} MB"))
    return figures


def _describe(figure: Any) -> str:
    value = "n/a" if figure.value is None else f"{figure.value:,} {figure.unit}"
    p95 = f" (p95 {figure.p95:,})" if figure.p95 is not None and figure.unit == "ms" else ""
    return f"{figure.name}: {value}{p95}  [{figure.note}]"


# --------------------------------------------------------------------------- report


def best_of(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One scale's report from several rounds: each figure's best (the least time, the most
    rows per second; noise on a shared machine only ever adds time), and every invariant
    check that failed in any round."""
    best: dict[str, dict[str, Any]] = {}
    for report in rounds:
        for figure in report["figures"]:
            kept = best.get(figure["name"])
            higher = figure["unit"] == "rows/s"
            if kept is None or kept["value"] is None or (
                    figure["value"] is not None
                    and (figure["value"] > kept["value"] if higher
                         else figure["value"] < kept["value"])):
                best[figure["name"]] = figure
    merged = dict(rounds[-1])
    merged["figures"] = list(best.values())
    merged["rounds"] = len(rounds)
    checks = [r.get("invariants_at_end", {}) for r in rounds]
    merged["invariants_at_end"] = {
        name: next((c[name] for c in checks if c.get(name)), checks[-1].get(name))
        for c in checks for name in c}
    return merged


def target_of(row: dict[str, Any]) -> tuple[str, str, float, float | None]:
    if row["group"] != "job":
        return PAGE_TARGET
    return TARGETS.get(row["operation"], ("", "max", float("inf"), None))


def compare(reports: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per operation: its figure at each scale, the ratio last/first, the target
    and whether the last scale meets it."""
    rows: dict[str, dict[str, Any]] = {}
    for report in reports:
        for figure in report["figures"]:
            row = rows.setdefault(figure["name"], {"operation": figure["name"],
                                                   "group": figure["group"],
                                                   "unit": figure["unit"], "values": {},
                                                   "p95": {}, "buffers": {}})
            row["values"][report["records"]] = figure["value"]
            row["p95"][report["records"]] = figure["p95"]
            row["buffers"][report["records"]] = figure.get("buffers")
    for row in rows.values():
        target, kind, threshold, ratio_limit = target_of(row)
        values = [row["values"].get(r["records"]) for r in reports]
        first, last = values[0], values[-1]
        ratio = (last / first if len(values) > 1 and first and last is not None else None)
        met = None
        if last is not None:
            met = last <= threshold if kind == "max" else last >= threshold
            if ratio_limit is not None and ratio is not None:
                met = met and ratio <= ratio_limit
        work = [row["buffers"].get(r["records"]) for r in reports]
        work_ratio = (work[-1] / work[0] if len(work) > 1 and work[0] and work[-1] is not None
                      else None)
        row |= {"ratio": None if ratio is None else round(ratio, 2), "target": target,
                "met": met,
                "work_ratio": None if work_ratio is None else round(work_ratio, 2)}
    return list(rows.values())


def print_table(reports: list[dict[str, Any]], rows: list[dict[str, Any]]) -> None:
    scales = [r["records"] for r in reports]
    heads = [label_of(s) for s in scales]
    print(f"\n{'operation':<36}" + "".join(f"{h:>18}" for h in heads)
          + f"{'ratio':>7}  {'target':<24}met?  work")
    for row in rows:
        cells = []
        for scale in scales:
            value, p95 = row["values"].get(scale), row["p95"].get(scale)
            if value is None:
                cells.append("n/a")
            elif row["unit"] == "ms":
                cells.append(f"{value:.0f} / {p95:.0f} ms")
            elif row["unit"] == "rows/s":
                cells.append(f"{value:,.0f} rows/s")
            else:
                cells.append(f"{value:,} {row['unit']}")
        ratio = "" if row["ratio"] is None else f"{row['ratio']:.2f}x"
        met = {True: "yes", False: "NO", None: "n/a"}[row["met"]]
        work = "" if row.get("work_ratio") is None else f"{row['work_ratio']:.2f}x"
        print(f"{row['operation'][:35]:<36}" + "".join(f"{c:>18}" for c in cells)
              + f"{ratio:>7}  {row['target']:<24}{met:<6}{work}")
    print("(pages: p50 / p95 of warm runs; the page target is checked at the last scale, "
          "its ratio only with two scales; work: the ratio of the buffers the page's "
          "SELECTs read, by EXPLAIN (ANALYZE, BUFFERS): its database work, which noise on "
          "the machine does not change)")
    for report in reports:
        seed = report.get("seed_total_seconds")
        bad = {k: v for k, v in report.get("invariants_at_end", {}).items() if v}
        print(f"{label_of(report['records'])}: seed "
              f"{'reused' if seed is None else f'{seed:.0f} s'}; invariants at the end: "
              f"{'all hold' if not bad else f'BROKEN {bad}'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--scales", default="",
                        help="comma-separated record counts, e.g. 1000000,10000000: each in "
                             "its own database, then the ratio of the last to the first")
    parser.add_argument("--database-url", default=DEFAULT_URL,
                        help="{label} becomes 1m, 10m, 100k... (default: %(default)s)")
    parser.add_argument("--reuse", action="store_true",
                        help="keep a database already seeded at that scale")
    parser.add_argument("--keep-indexes", action="store_true",
                        help="seed with every index in place (slower)")
    parser.add_argument("--seed-only", action="store_true",
                        help="seed (or check a reused seed) and stop: measure later with "
                             "--reuse, e.g. once the code to measure is in place")
    parser.add_argument("--admin-only", action="store_true",
                        help="only the admin pages and searches (e.g. on a --reuse'd seed)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="with --scales: measure the scales in turn this many times "
                             "(1m, 10m, 1m, 10m...) and keep each figure's best round, so "
                             "that a noisy minute on the shared machine does not land on "
                             "one scale only")
    parser.add_argument("--runs", type=int, default=10, help="timed runs per page")
    parser.add_argument("--job-runs", type=int, default=3, help="timed runs of reconcile")
    parser.add_argument("--rollup-memory-limit-mb", type=int, default=ROLLUP_MEMORY_LIMIT_MB)
    parser.add_argument("--code", default="",
                        help="import the project from this directory (e.g. a `git archive` "
                             "of the commit to measure); default: this checkout")
    parser.add_argument("--out", default=str(TMP / "scale_bench.json"))
    parser.add_argument("--child", choices=["rollup", "csv"], help=argparse.SUPPRESS)
    parser.add_argument("--user-id", type=int, default=0, help=argparse.SUPPRESS)
    options = parser.parse_args()
    options.out = str(Path(options.out).resolve())
    use_code(options.code)
    if options.child:
        return child_main(options)
    if options.scales:
        scales = [int(s) for s in options.scales.split(",") if s.strip()]
        if "{label}" not in options.database_url and len(scales) > 1:
            raise SystemExit("--scales needs {label} in --database-url (one database each)")
        rounds: dict[int, list[dict[str, Any]]] = {records: [] for records in scales}
        for round_number, records in itertools.product(range(options.rounds), scales):
            out = (f"{Path(options.out).with_suffix('')}-{label_of(records)}"
                   f"-{round_number + 1}.json")
            argv = [sys.executable, str(Path(__file__)), "--records", str(records),
                    "--database-url", options.database_url, "--runs", str(options.runs),
                    "--job-runs", str(options.job_runs), "--out", out,
                    "--rollup-memory-limit-mb", str(options.rollup_memory_limit_mb),
                    "--code", options.code,
                    *(["--reuse"] if options.reuse else []),
                    *(["--seed-only"] if options.seed_only else []),
                    *(["--admin-only"] if options.admin_only else []),
                    *(["--keep-indexes"] if options.keep_indexes else [])]
            print(f"=== {records:,} records, round {round_number + 1} of {options.rounds}",
                  flush=True)
            subprocess.run(argv, check=True)
            rounds[records].append(json.loads(Path(out).read_text())["scales"][0])
        reports = [best_of(rounds[records]) for records in scales]
    else:
        reports = [run_scale(options)]
    rows = compare(reports)
    print_table(reports, rows)
    Path(options.out).write_text(json.dumps({"scales": reports, "comparison": rows},
                                            indent=1, default=str))
    print(f"results: {options.out}")
    bad = any(v for r in reports for v in r.get("invariants_at_end", {}).values())
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
