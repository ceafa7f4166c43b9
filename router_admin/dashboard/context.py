"""The dashboard's template context: every panel's figures, formatted for display.

Money goes through billing.money.format_usd; an upstream cost that is not known is said
("unknown (N requests)"), never shown as 0."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.http import HttpRequest
from django.utils import timezone

from billing.db_planning import without_jit
from billing.money import format_usd
from router_admin.dashboard.charts import bars_svg, columns_svg
from router_admin.dashboard.fleet import Totals, fleet_read, percentile_range
from router_admin.dashboard.money import SOURCES, money_in, spenders
from router_admin.dashboard.ops import deliveries_failing, holds_pending, workers_in_trouble
from router_admin.dashboard.periods import PERIODS, Window, window_for


def upstream_text(totals: Totals) -> str:
    if totals.unknown_cost_requests == 0:
        return format_usd(totals.upstream_cost_micros)
    unknown = f"unknown ({totals.unknown_cost_requests:,} requests)"
    if totals.unknown_cost_requests == totals.requests:
        return unknown
    return f"{format_usd(totals.upstream_cost_micros)} + {unknown}"


def margin_text(totals: Totals) -> str:
    if totals.unknown_cost_requests == 0:
        return format_usd(totals.margin_micros)
    unknown = f"unknown ({totals.unknown_cost_requests:,} requests)"
    if totals.unknown_cost_requests == totals.requests:
        return unknown
    return f"{format_usd(totals.margin_micros)} on known cost; {unknown}"


def percentile_text(hist: list[int], fraction: float) -> str:
    found = percentile_range(hist, fraction)
    if found is None:
        return "-"
    low, high = found
    return f"≥ {low:,} ms" if high is None else f"< {high:,} ms"


def _label(bucket: datetime, unit: str) -> str:
    return f"{bucket:%H:00}" if unit == "hour" else f"{bucket:%d %b}"


def _breakdown(name: str, totals: Totals) -> dict[str, Any]:
    return {
        "name": name or "(no worker)", "requests": f"{totals.requests:,}",
        "error_rate": f"{totals.error_rate:.1%}", "failed": f"{totals.failed:,}",
        "prompt_tokens": f"{totals.prompt_tokens:,}",
        "completion_tokens": f"{totals.completion_tokens:,}",
        "charged": format_usd(totals.cost_micros), "upstream": upstream_text(totals),
        "margin": margin_text(totals),
        "latency_p50": percentile_text(totals.latency, 0.5),
        "latency_p95": percentile_text(totals.latency, 0.95),
        "ttft_p50": percentile_text(totals.ttft, 0.5),
        "ttft_p95": percentile_text(totals.ttft, 0.95),
    }


def _charts(window: Window, fleet: Any, money: Any) -> dict[str, Any]:
    labels = [_label(b, window.unit) for b in window.buckets]
    empty = Totals()
    per_bucket = [fleet.by_bucket.get(b, empty) for b in window.buckets]
    zero = dict.fromkeys(money.by_source, 0)
    money_series = [(name, f"dash-src-{key}", [money.by_bucket.get(b, zero)[key]
                                           for b in window.buckets])
                    for key, name in SOURCES]
    tokens = sorted(fleet.by_model.items(),
                    key=lambda item: -(item[1].prompt_tokens + item[1].completion_tokens))
    return {
        "money_in": columns_svg(labels=labels, series=money_series, title="Money in",
                                format_value=format_usd),
        "charged": columns_svg(labels=labels, title="Money charged", format_value=format_usd,
                               series=[("Charged", "dash-charged",
                                        [t.cost_micros for t in per_bucket])]),
        "requests": columns_svg(labels=labels, title="Requests", format_value="{:,}".format,
                                series=[("Completed", "dash-ok",
                                         [t.requests - t.failed for t in per_bucket]),
                                        ("Failed", "dash-failed",
                                         [t.failed for t in per_bucket])]),
        "tokens": bars_svg(title="Tokens by model", css="dash-tokens", rows=[
            (model or "(none)", t.prompt_tokens + t.completion_tokens,
             f"{t.prompt_tokens + t.completion_tokens:,}") for model, t in tokens[:12]]),
    }


def dashboard_context(request: HttpRequest, *, now: datetime | None = None) -> dict[str, Any]:
    window = window_for(request.GET.get("period"), now or timezone.now())
    with without_jit():  # sums over the window's roll-ups: JIT compiled longer than they ran
        fleet = fleet_read(window)
        money = money_in(window)
        users = spenders(window)
        holds = holds_pending()
    return {
        "dash_window": window,
        "dash_periods": [{"key": key, "label": label, "active": key == window.key}
                         for key, (label, _, _) in PERIODS.items()],
        "dash_money": {
            "in": [(name, format_usd(money.by_source[key])) for key, name in SOURCES],
            "in_total": format_usd(money.total),
            "charged": format_usd(fleet.total.cost_micros),
            "upstream": upstream_text(fleet.total),
            "margin": margin_text(fleet.total),
            "requests": f"{fleet.total.requests:,}",
            "error_rate": f"{fleet.total.error_rate:.1%}",
        },
        "dash_charts": _charts(window, fleet, money),
        "dash_models": [_breakdown(name, t) for name, t in
                        sorted(fleet.by_model.items(), key=lambda i: -i[1].requests)],
        "dash_workers": [_breakdown(name, t) for name, t in
                         sorted(fleet.by_worker.items(), key=lambda i: -i[1].requests)],
        "dash_top_users": [_spender(s) for s in users.top],
        "dash_running_out": [_spender(s) for s in users.running_out],
        "dash_holds": {"count": f"{holds.count:,}", "total": format_usd(holds.total_micros),
                       "oldest": holds.oldest},
        "dash_trouble": workers_in_trouble(),
        "dash_deliveries": deliveries_failing(),
    }


def _spender(spender: Any) -> dict[str, Any]:
    return {
        "user_id": spender.user_id, "email": spender.email,
        "organization_id": spender.organization_id,
        "spend": format_usd(spender.spend_micros),
        "available": "no wallet" if spender.available_micros is None
        else format_usd(spender.available_micros),
        "days_left": "-" if spender.days_left is None else f"{spender.days_left:.1f}",
    }
