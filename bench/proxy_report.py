"""proxy_bench's report: the numbers of one run summed up, compared with the targets, and
printed as a table (and written as JSON by the caller)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness import (
    WORKER_MAX_CONCURRENCY,
    BillingCheck,
)
from load import (
    Run,
    diff,
    fmt,
    pct,
    table,
    verdict,
)
from pyspy import shares

if TYPE_CHECKING:  # the runner imports this module; only the types go the other way
    from proxy_bench import Options, Results

# The targets of the hot path (DESIGN.md), compared against in the report.
TARGET_ADDED_P50_C1_MS = 2.0
TARGET_ROUTER_RPS = 1000.0
TARGET_TTFT_ADDED_P50_MS = 3.0
# What each dialect row compares: the router's request against the upstream's, the one the
# router makes for it.
DIALECT_REQUESTS = {
    "responses": ("POST /v1/chat/completions", "POST /v1/responses"),
    "messages": ("POST /v1/messages (anthropic worker)", "POST /v1/messages"),
}


def configuration(options: Options) -> dict[str, Any]:
    """What the router ran with, as far as this run is concerned: two runs compare only when
    this is the same."""
    redis = bool(options.redis_url)
    limits = (options.key_rpm, options.key_tpm, options.key_concurrency)
    return {"production": redis and None not in limits[:2],  # Redis, key RPM and TPM
            "redis": redis, "redis_url": options.redis_url or None,
            "key_rpm": options.key_rpm, "key_tpm": options.key_tpm,
            "key_concurrency": options.key_concurrency,
            "key_limits_counted_in": (("Redis" if redis else "the router process")
                                      if any(v is not None for v in limits) else None),
            "worker_max_concurrency": WORKER_MAX_CONCURRENCY,
            "server": options.server, "users": options.users}


def describe_configuration(config: dict[str, Any]) -> str:
    def number(value: int | None) -> str:
        return "none" if value is None else f"{value:,}"

    redis = (f"Redis {config['redis_url']} (limits, worker slots, circuit breakers)"
             if config["redis"]
             else "no Redis (worker slots, breakers and limits counted in the router process)")
    limits = (f"key limits RPM {number(config['key_rpm'])}, TPM {number(config['key_tpm'])}"
              + (f", in flight {number(config['key_concurrency'])}"
                 if config["key_concurrency"] is not None else "")
              if config["key_limits_counted_in"] else "no key limits")
    return (f"{'PRODUCTION' if config['production'] else 'not production'}: {redis}; "
            f"{limits}; worker max in flight {config['worker_max_concurrency']:,}; "
            f"{config['server']}, {config['users']} wallet(s)")


def configuration_problems(config: dict[str, Any], limit_probe: dict[str, Any],
                           redis: dict[str, Any] | None) -> list[str]:
    """Why the router may not have run as configured (empty: it did, as far as can be seen
    from outside): the key limits must show in its rate-limit headers, and with Redis they
    must be counted there and Redis must have answered throughout."""
    problems = []
    for kind, limit in (("requests", config["key_rpm"]), ("tokens", config["key_tpm"])):
        header = limit_probe.get(f"x-ratelimit-limit-{kind}")
        if limit is not None and header != str(limit):
            problems.append(f"x-ratelimit-limit-{kind} is {header}, not the key's {limit}")
    if redis is not None:
        if redis.get("router_log_not_answering"):
            problems.append(f"the router logged 'Redis is not answering' "
                            f"{redis['router_log_not_answering']} time(s): it counted in its "
                            "process for a while")
        if (config["key_rpm"] is not None or config["key_tpm"] is not None) \
                and not redis["key_window_requests"]:
            problems.append("no request in the keys' rate-limit windows in Redis")
    return problems



def run_summary(run: Run) -> dict[str, Any]:
    n = run.ok + sum(run.errors.values())
    return {"ok": run.ok, "errors": dict(run.errors), "wall_s": round(run.wall, 3),
            "p50_ms": pct(run.latencies, 50), "p90_ms": pct(run.latencies, 90),
            "p99_ms": pct(run.latencies, 99), "max_ms": pct(run.latencies, 100),
            "ttft_p50_ms": pct(run.ttfts, 50), "ttft_p99_ms": pct(run.ttfts, 99),
            "rps": run.ok / run.wall if run.wall else None,
            "router_cpu_pct": 100 * run.router_cpu / run.wall if run.wall else None,
            "router_cpu_us_per_request": 1e6 * run.router_cpu / n if n else None,
            "postgres_cpu_us_per_request": 1e6 * run.postgres_cpu / n if n else None,
            "machine_busy_pct": 100 * run.busy / run.ticks if run.ticks else None,
            "db_active_backends_mean": (sum(run.db_waits.values()) / run.db_samples
                                        if run.db_samples else None),
            "db_waits_pct": shares(run.db_waits, sum(run.db_waits.values()), 8)}


def dialect_summary(dialect: str, phases: dict[str, dict[str, Run]]) -> dict[str, Any]:
    """One other API at concurrency 1: its plain requests and its streams, direct and
    through the router, and what the router adds."""
    c1 = {k: run_summary(v) for k, v in phases.get("c1", {}).items()}
    st = {k: run_summary(v) for k, v in phases.get("stream", {}).items()}
    direct, router = DIALECT_REQUESTS.get(dialect, ("", ""))

    def added(runs: dict[str, Any], key: str) -> float | None:
        if "router" not in runs or "direct" not in runs:
            return None
        return diff(runs["router"][key], runs["direct"][key])

    return {"direct_request": direct, "router_request": router,
            "concurrency_1": c1 | {"added_p50_ms": added(c1, "p50_ms"),
                                   "added_p99_ms": added(c1, "p99_ms")},
            "streaming": st | {"ttft_added_p50_ms": added(st, "ttft_p50_ms"),
                               "ttft_added_p99_ms": added(st, "ttft_p99_ms"),
                               "total_added_p50_ms": added(st, "p50_ms")}}


def build_report(options: Options, results: Results, billing: BillingCheck,
                 profile: dict[str, Any] | None, environment: dict[str, Any],
                 config: dict[str, Any], redis: dict[str, Any] | None) -> dict[str, Any]:
    c1 = {k: run_summary(v) for k, v in results.c1.items()}
    cn = {k: run_summary(v) for k, v in results.cn.items()}
    st = {k: run_summary(v) for k, v in results.stream.items()}
    added_c1_p50 = diff(c1["router"]["p50_ms"], c1["direct"]["p50_ms"])
    ttft_added = diff(st["router"]["ttft_p50_ms"], st["direct"]["ttft_p50_ms"])
    router_rps, direct_rps = cn["router"]["rps"], cn["direct"]["rps"]
    expected = results.router_ok()
    return {
        "configuration": config,
        "configuration_problems": configuration_problems(config, results.limit_probe, redis),
        "limit_probe": results.limit_probe,
        "redis": redis,
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(options).items()},
        "environment": environment,
        "concurrency_1": c1 | {"added_p50_ms": added_c1_p50,
                               "added_p99_ms": diff(c1["router"]["p99_ms"],
                                                    c1["direct"]["p99_ms"])},
        f"concurrency_{options.concurrency}": cn | {
            "added_p50_ms": diff(cn["router"]["p50_ms"], cn["direct"]["p50_ms"]),
            "added_p99_ms": diff(cn["router"]["p99_ms"], cn["direct"]["p99_ms"]),
            "router_to_direct_rps": router_rps / direct_rps if router_rps and direct_rps
            else None},
        "streaming": st | {"ttft_added_p50_ms": ttft_added,
                           "ttft_added_p99_ms": diff(st["router"]["ttft_p99_ms"],
                                                     st["direct"]["ttft_p99_ms"])},
        "targets": {
            "added_p50_c1_ms": [TARGET_ADDED_P50_C1_MS,
                                verdict(added_c1_p50, TARGET_ADDED_P50_C1_MS, at_most=True)],
            "router_rps": [TARGET_ROUTER_RPS,
                           verdict(router_rps, TARGET_ROUTER_RPS, at_most=False)],
            "ttft_added_p50_ms": [TARGET_TTFT_ADDED_P50_MS,
                                  verdict(ttft_added, TARGET_TTFT_ADDED_P50_MS, at_most=True)],
        },
        "dialects": {name: dialect_summary(name, phases)
                     for name, phases in results.dialects.items()},
        "postgres_commit_probe": results.commit_probe,
        "errors": dict(results.errors()),
        "billing": vars(billing) | {"expected": expected, "ok": billing.ok(expected)},
        "profile": profile,
    }


def print_report(report: dict[str, Any], concurrency: int) -> None:
    c1, st = report["concurrency_1"], report["streaming"]
    cn = report[f"concurrency_{concurrency}"]
    targets = report["targets"]
    d, r = "direct", "router"
    rows = [
        ("c=1 latency p50", fmt(c1[d]["p50_ms"]), fmt(c1[r]["p50_ms"]),
         fmt(c1["added_p50_ms"]), f"<= {TARGET_ADDED_P50_C1_MS:g} ms  "
         f"{targets['added_p50_c1_ms'][1]}"),
        ("c=1 latency p99", fmt(c1[d]["p99_ms"]), fmt(c1[r]["p99_ms"]),
         fmt(c1["added_p99_ms"]), ""),
        (f"c={concurrency} latency p50", fmt(cn[d]["p50_ms"]), fmt(cn[r]["p50_ms"]),
         fmt(cn["added_p50_ms"]), ""),
        (f"c={concurrency} latency p99", fmt(cn[d]["p99_ms"]), fmt(cn[r]["p99_ms"]),
         fmt(cn["added_p99_ms"]), ""),
        (f"c={concurrency} requests/s", fmt(cn[d]["rps"], "", 0), fmt(cn[r]["rps"], "", 0),
         f"ratio {fmt(cn['router_to_direct_rps'], '', 3)}",
         f">= {TARGET_ROUTER_RPS:,.0f}/s  {targets['router_rps'][1]}"),
        ("stream TTFT p50", fmt(st[d]["ttft_p50_ms"]), fmt(st[r]["ttft_p50_ms"]),
         fmt(st["ttft_added_p50_ms"]), f"<= {TARGET_TTFT_ADDED_P50_MS:g} ms  "
         f"{targets['ttft_added_p50_ms'][1]}"),
        ("stream TTFT p99", fmt(st[d]["ttft_p99_ms"]), fmt(st[r]["ttft_p99_ms"]),
         fmt(st["ttft_added_p99_ms"]), ""),
        ("stream total p50", fmt(st[d]["p50_ms"]), fmt(st[r]["p50_ms"]),
         fmt(diff(st[r]["p50_ms"], st[d]["p50_ms"])), ""),
    ]
    header = ("", "direct", "router", "added", "target")
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(5)]
    print(f"\nconfiguration: {describe_configuration(report['configuration'])}")
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)))

    print("\n(direct requests/s is bounded by the load generator, which shares a CPU with the "
          "upstream: the ratio is an upper bound)")
    print("\nwhere the time goes (router process; PostgreSQL = the bench database's backends)")
    for label, runs in (("c=1", c1), (f"c={concurrency}", cn), ("stream", st)):
        router = runs[r]
        print(f"  {label:<7} router CPU {fmt(router['router_cpu_pct'], '%', 0):>5} of a core, "
              f"{fmt(router['router_cpu_us_per_request'], 'us', 0):>7}/request; PostgreSQL "
              f"{fmt(router['postgres_cpu_us_per_request'], 'us', 0):>7}/request; machine busy "
              f"{fmt(router['machine_busy_pct'], '%', 0)} (direct blocks: "
              f"{fmt(runs[d]['machine_busy_pct'], '%', 0)})")

    waits = cn[r]
    if waits["db_active_backends_mean"] is not None:
        print(f"  c={concurrency} PostgreSQL: {waits['db_active_backends_mean']:.1f} busy backends "
              f"on average, each: " + ", ".join(f"{n} {p}%" for n, p in waits["db_waits_pct"]))
    for when, probe in report["postgres_commit_probe"].items():
        print(f"  PostgreSQL one-row autocommit UPDATE at the {when}: p50 {probe['p50_ms']:.2f} "
              f"ms, p99 {probe['p99_ms']:.2f} ms -> one wallet takes at most "
              f"~{probe['one_wallet_max_rps']:,.0f} requests/s (2 wallet updates each)")

    print_dialects(report)

    errors = report["errors"]
    print(f"\nerrors: {sum(errors.values())}" + (f" {errors}" if errors else ""))
    billing = report["billing"]
    print(f"billing: {billing['usage_records']} usage records ({billing['usage_ok']} ok), "
          f"{billing['ledger_charges']} ledger charges, {billing['pending_holds']} pending "
          f"holds, {billing['charged_micros']} micro-USD charged; expected "
          f"{billing['expected']} (router 200s incl. warm-up); ledger = wallets: "
          f"{billing['ledger_matches_wallets']}  -> {'OK' if billing['ok'] else 'MISMATCH'}")
    print_limits(report)

    profile = report["profile"]
    if profile:
        print_profile(profile, concurrency)


def print_dialects(report: dict[str, Any]) -> None:
    """The other APIs, at concurrency 1 like the chat rows above, each against the upstream
    called directly as the router calls it; "chat added" repeats the chat rows' for
    comparison."""
    dialects = report.get("dialects") or {}
    if not dialects:
        return
    c1, st = report["concurrency_1"], report["streaming"]
    chat = {"added_p50_ms": c1["added_p50_ms"], "added_p99_ms": c1["added_p99_ms"],
            "ttft_added_p50_ms": st["ttft_added_p50_ms"],
            "total_added_p50_ms": diff(st["router"]["p50_ms"], st["direct"]["p50_ms"])}
    d, r = "direct", "router"
    rows = []
    for name, summary in dialects.items():
        one, stream = summary["concurrency_1"], summary["streaming"]
        if d not in one or r not in one or d not in stream or r not in stream:
            continue
        rows += [
            (f"{name} c=1 latency p50", fmt(one[d]["p50_ms"]), fmt(one[r]["p50_ms"]),
             fmt(one["added_p50_ms"]), fmt(chat["added_p50_ms"])),
            (f"{name} c=1 latency p99", fmt(one[d]["p99_ms"]), fmt(one[r]["p99_ms"]),
             fmt(one["added_p99_ms"]), fmt(chat["added_p99_ms"])),
            (f"{name} stream TTFT p50", fmt(stream[d]["ttft_p50_ms"]),
             fmt(stream[r]["ttft_p50_ms"]), fmt(stream["ttft_added_p50_ms"]),
             fmt(chat["ttft_added_p50_ms"])),
            (f"{name} stream total p50", fmt(stream[d]["p50_ms"]), fmt(stream[r]["p50_ms"]),
             fmt(stream["total_added_p50_ms"]), fmt(chat["total_added_p50_ms"])),
        ]
    print("\nother APIs at concurrency 1, through the router vs straight to the upstream as "
          "the router calls it: " + "; ".join(
              f"{name}: {summary['router_request']} vs {summary['direct_request']}"
              for name, summary in dialects.items()))
    print(table(("", "direct", "router", "added", "chat added"), rows))
    for name, summary in dialects.items():
        for label, runs in (("c=1", summary["concurrency_1"]), ("stream", summary["streaming"])):
            if r in runs:
                print(f"  {name} {label:<6} router CPU "
                      f"{fmt(runs[r]['router_cpu_us_per_request'], 'us', 0):>7}/request; "
                      f"PostgreSQL {fmt(runs[r]['postgres_cpu_us_per_request'], 'us', 0):>7}"
                      "/request")


def print_limits(report: dict[str, Any]) -> None:
    probe, redis = report["limit_probe"], report["redis"]
    headers = {k.removeprefix("x-ratelimit-"): v for k, v in probe.items() if k != "status"}
    print("limits: a router answer after the measured phases carried "
          + (", ".join(f"{k} {v}" for k, v in headers.items()) if headers
             else "no x-ratelimit-* headers (no limit checked)"))
    if redis is not None:
        print(f"Redis right after the load: the keys' windows hold "
              f"{redis['key_window_requests']:,} requests and {redis['key_window_tokens']:,} "
              f"tokens of the last minute; keys: "
              + ", ".join(f"{n} {kind}" for kind, n in redis["keys"].items())
              + f"; 'Redis is not answering' in the router log: "
              f"{redis['router_log_not_answering']}")
    problems = report["configuration_problems"]
    print("configuration in effect: " + ("yes" if not problems
                                         else "NO: " + "; ".join(problems)))


def print_profile(profile: dict[str, Any], concurrency: int) -> None:
    cpu, threads = profile["cpu"], profile["threads"]
    print(f"\npy-spy on the router under c={concurrency}, {profile['seconds_each']} s each at "
          f"{profile['rate_hz']} Hz ({profile['raw']})")
    if "error" in threads:
        print(f"  threads: py-spy failed: {threads['error']}")
    else:
        print("  busy threads: " + ", ".join(f"{n} {p}%" for n, p in threads["threads_pct"]))
    if profile.get("threads_created_per_request") is not None:
        print(f"  threads created per request (perf, over 2 s before py-spy): "
              f"{profile['threads_created_per_request']:.2f}")
    if "error" in cpu:
        print(f"  GIL: py-spy failed: {cpu['error']}")
        return
    print(f"  holding the GIL ({cpu['samples']} samples), by area: " + ", ".join(
        f"{n} {p}%" for n, p in cpu["areas_pct"][:10]))
    print("  top self frames:")
    for frame, p in cpu["top_self_pct"][:12]:
        print(f"    {p:5.1f}%  {frame}")
    print("  top inclusive frames in proxy/billing/accounts:")
    for frame, p in cpu["top_own_inclusive_pct"][:12]:
        print(f"    {p:5.1f}%  {frame}")




