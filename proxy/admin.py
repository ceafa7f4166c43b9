"""Staff views of upstream workers. The upstream key is write-only: typed in, stored
encrypted, never shown back (not even encrypted). Every save clears this process's lookup
caches, so the router uses the change at once here and within the lookup TTL elsewhere."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from django.contrib import admin, messages
from django.db import transaction
from django.db.models import QuerySet
from django.forms import BaseFormSet, ModelForm
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.timesince import timesince

from audit.actors import Actor
from audit.admin_base import AuditedAdmin
from audit.snapshots import Snapshot
from billing.models import BAD_USAGE_REASONS, UsageRecord
from billing.selectors import WorkerUsageFlags, usage_flags_by_worker
from proxy.forms import WorkerAdminForm, WorkerModelInlineForm, WorkerModelInlineFormSet
from proxy.models import Worker, WorkerModel
from proxy.services import (
    WorkerError,
    worker_audit_snapshot,
    worker_set_draining,
    worker_set_enabled,
    workers_changed,
    workers_probe_all,
)
from proxy.stats import RECENT_WINDOW, WorkerStats, workers_recent_stats
from proxy.upstream.breaker import breaker_states_now

_WINDOW = f"{int(RECENT_WINDOW.total_seconds() // 60)} min"
# The badges' colours and the flags table's indent live in this stylesheet, not in style
# attributes: the site's Content-Security-Policy allows no inline style.
ADMIN_CSS = "router_admin/admin.css"


def _badges(*labels: str) -> str:
    return format_html_join(
        " ", '<span class="router-badge {}">{}</span>',
        ((label.replace(" ", "-"), label) for label in labels))


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'s' if count != 1 else ''}"


# Flagged usage records: the list counts the last day, the change page the day and the week.
FLAGS_LIST_WINDOW = timedelta(hours=24)
FLAGS_WINDOWS = (("24 h", FLAGS_LIST_WINDOW), ("7 days", timedelta(days=7)))


def _flagged_usage_url(worker: str, since: datetime) -> str:
    """The usage admin's list of the records counted in ``worker``'s flags from ``since``."""
    query = {"worker": worker, "flagged": "any", "created_at__gte": since.isoformat()}
    return f"{reverse('admin:billing_usagerecord_changelist')}?{urlencode(query)}"


def _reason_label(reason: str) -> str:
    return UsageRecord.EstimateReason(reason).label


class WorkerModelInline(admin.TabularInline):
    model = WorkerModel
    form = WorkerModelInlineForm
    formset = WorkerModelInlineFormSet
    fields = ("model", "upstream_model")
    extra = 1
    verbose_name = "served model"
    verbose_name_plural = "served models"


@admin.register(Worker)
class WorkerAdmin(AuditedAdmin):
    audit_name = "worker"
    form = WorkerAdminForm
    inlines = (WorkerModelInline,)
    # What fits 1280 px: the fleet's state and traffic. The probe's error is on hover; the
    # endpoint, key, headers, cap field, weight and slots are on the worker's page.
    list_display = ("name", "kind_short", "health", "circuit", "last_probe", "recent_requests",
                    "recent_error_rate", "recent_p50", "recent_flags", "priority",
                    "served_models")
    list_filter = ("kind", "enabled", "healthy", "draining")
    search_fields = ("name", "models__model")
    ordering = ("-priority", "name")
    actions = ("enable_workers", "disable_workers", "drain_workers", "undrain_workers",
               "probe_workers")
    readonly_fields = ("healthy", "last_probe_at", "last_probe_latency_ms", "last_probe_error",
                       "flags_by_reason")

    class Media:
        css = {"all": (ADMIN_CSS,)}

    fieldsets = (
        (None, {"fields": ("name", "kind", "base_url", "cap_field", "api_key",
                           "clear_api_key", "enabled")}),
        ("Upstream requests", {"fields": ("auth_header", "extra_headers",
                                          "clear_extra_headers", "api_version",
                                          "native_dialects")}),
        ("Routing", {"fields": ("priority", "weight", "max_concurrency", "draining")}),
        ("Timeouts (seconds)", {"fields": ("connect_timeout_s", "first_byte_timeout_s",
                                           "total_timeout_s"), "classes": ("collapse",)}),
        ("Health (written by the periodic probe)", {"fields": (
            "healthy", "last_probe_at", "last_probe_latency_ms", "last_probe_error")}),
        ("Flagged usage (a misbehaving upstream)", {
            "fields": ("flags_by_reason",),
            "description": "Requests whose output the router cut at the request's cap, whose "
                           "charge was capped at the hold, or whose usage the router did not "
                           "believe and counted itself. One request can carry several flags.",
        }),
    )

    def get_fieldsets(self, request: HttpRequest, obj: Worker | None = None) -> Any:
        if obj is not None:
            return self.fieldsets
        # Adding: there is no stored key or header to remove, nothing has been probed or
        # served.
        clears = ("clear_api_key", "clear_extra_headers")
        return tuple(
            (name, {**options, "fields": tuple(f for f in options["fields"] if f not in clears)})
            for name, options in self.fieldsets[:-2])

    def get_queryset(self, request: HttpRequest) -> QuerySet[Worker]:
        return super().get_queryset(request).prefetch_related("models")

    def audit_snapshot(self, obj: Worker) -> Snapshot:
        return worker_audit_snapshot(obj)

    def changelist_view(self, request: HttpRequest,
                        extra_context: dict[str, Any] | None = None) -> HttpResponse:
        response = super().changelist_view(request, extra_context)
        cl = response.context_data.get("cl") if isinstance(response, TemplateResponse) else None
        if cl is not None:
            # One read of the usage records (and one of the flagged ones) for the whole page,
            # not one per row: the rows are loaded here, carry their stats, and the template
            # renders these same objects (the page's queryset keeps its results).
            page = list(cl.result_list)
            names = [worker.name for worker in page]
            stats = workers_recent_stats(names=names)
            flags_since = timezone.now() - FLAGS_LIST_WINDOW
            flags = usage_flags_by_worker(since=flags_since, workers=names)
            circuits = breaker_states_now([worker.pk for worker in page])
            for worker in page:
                worker.recent_stats = stats.get(worker.name, WorkerStats())
                worker.flags = flags.get(worker.name, WorkerUsageFlags())
                worker.flags_since = flags_since
                worker.circuit = circuits.get(worker.pk, "closed")
        return response

    @admin.display(description="Health")
    def health(self, obj: Worker) -> str:
        labels = ["healthy" if obj.healthy else "unhealthy"]  # the probe's (circuit: beside)
        if obj.draining:
            labels.append("draining")
        if not obj.enabled:
            labels.append("disabled")
        if obj.last_probe_error:
            # The probe's last error on hover: the column stays narrow.
            return format_html('<span title="{}">{}</span>', obj.last_probe_error,
                               _badges(*labels))
        return _badges(*labels)

    @admin.display(description="Kind", ordering="kind")
    def kind_short(self, obj: Worker) -> str:
        return obj.kind  # "openai", not "OpenAI-compatible": the list's width is scarce

    @admin.display(description="Circuit")
    def circuit(self, obj: Worker) -> str:
        # The breaker's state (read for the page in changelist_view), beside the probe's.
        state = getattr(obj, "circuit", "closed")
        return format_html('<span class="router-badge circuit-{}" title="circuit {}">{}</span>',
                           state.replace(" ", "-"), state, state)

    @admin.display(description="Last probe", ordering="last_probe_at")
    def last_probe(self, obj: Worker) -> str:
        if obj.last_probe_at is None:
            return "never"
        seconds = max(0, int((timezone.now() - obj.last_probe_at).total_seconds()))
        ago = (f"{seconds} s ago" if seconds < 120
               else f"{timesince(obj.last_probe_at, depth=1)} ago")
        if obj.last_probe_latency_ms is None:
            return ago
        return f"{ago}, {obj.last_probe_latency_ms} ms"

    @staticmethod
    def _stats(obj: Worker) -> WorkerStats:
        return getattr(obj, "recent_stats", None) or WorkerStats()

    @admin.display(description=f"Req./{_WINDOW}")
    def recent_requests(self, obj: Worker) -> int:
        return self._stats(obj).requests

    @admin.display(description=f"Errors/{_WINDOW}")
    def recent_error_rate(self, obj: Worker) -> str:
        rate = self._stats(obj).error_rate
        return "-" if rate is None else f"{rate:.1%}"

    @admin.display(description=f"p50/{_WINDOW}")
    def recent_p50(self, obj: Worker) -> str:
        p50 = self._stats(obj).p50_latency_ms
        return "-" if p50 is None else f"{p50} ms"

    @admin.display(description="Flags/24 h")
    def recent_flags(self, obj: Worker) -> str:
        flags: WorkerUsageFlags = getattr(obj, "flags", None) or WorkerUsageFlags()
        counts = ((flags.over_cap, "over cap"), (flags.over_hold, "over hold"),
                  (flags.bad_usage, "bad usage"))
        text = " · ".join(f"{count} {label}" for count, label in counts if count)
        if not text:
            return "—"
        reasons = "; ".join(f"{_reason_label(reason)}: {count}"
                            for reason, count in flags.bad_usage_by_reason.items())
        return format_html('<a href="{}" title="{}">{}</a>',
                           _flagged_usage_url(obj.name, obj.flags_since), reasons, text)

    @admin.display(description="Flagged requests")
    def flags_by_reason(self, obj: Worker) -> str:
        now = timezone.now()
        windows = [(label, now - span) for label, span in FLAGS_WINDOWS]
        # One query per window; each reads only this worker's flagged records.
        counts = [usage_flags_by_worker(since=since, workers=[obj.name]).get(
            obj.name, WorkerUsageFlags()) for _, since in windows]
        rows = [
            ("Over cap: output cut at the request's cap", "",
             [flags.over_cap for flags in counts]),
            ("Over hold: charged the hold, not the usage", "",
             [flags.over_hold for flags in counts]),
            ("Bad usage: the upstream's count not believed", "",
             [flags.bad_usage for flags in counts]),
            *((_reason_label(reason), "router-subrow",
               [flags.bad_usage_by_reason.get(reason, 0) for flags in counts])
              for reason in BAD_USAGE_REASONS),
        ]
        return format_html(
            "<table><thead><tr><th></th>{}</tr></thead><tbody>{}</tbody></table><p>{}</p>",
            format_html_join("", "<th>Last {}</th>", ((label,) for label, _ in windows)),
            format_html_join("", '<tr><td class="{}">{}</td>{}</tr>', (
                (css, label, format_html_join("", "<td>{}</td>", ((n,) for n in numbers)))
                for label, css, numbers in rows)),
            format_html_join(" · ", '<a href="{}">List the flagged requests of the last {}</a>',
                             ((_flagged_usage_url(obj.name, since), label)
                              for label, since in windows)),
        )

    @admin.display(description="Models")
    def served_models(self, obj: Worker) -> str:
        return ", ".join(sorted(
            row.model if not row.upstream_model else f"{row.model} → {row.upstream_model}"
            for row in obj.models.all()
        )) or "-"

    # The inlines are saved after the worker, all in the admin's transaction; the caches are
    # cleared again when it commits (see workers_changed).
    def save_related(self, request: HttpRequest, form: ModelForm,
                     formsets: list[BaseFormSet], change: bool) -> None:
        super().save_related(request, form, formsets, change)
        workers_changed()

    def delete_model(self, request: HttpRequest, obj: Worker) -> None:
        super().delete_model(request, obj)
        workers_changed()

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Worker]) -> None:
        super().delete_queryset(request, queryset)
        workers_changed()

    @admin.action(description="Enable the selected workers", permissions=["change"])
    def enable_workers(self, request: HttpRequest, queryset: QuerySet[Worker]) -> None:
        self._set_enabled(request, queryset, enabled=True)

    @admin.action(description="Disable the selected workers", permissions=["change"])
    def disable_workers(self, request: HttpRequest, queryset: QuerySet[Worker]) -> None:
        self._set_enabled(request, queryset, enabled=False)

    def _set_enabled(self, request: HttpRequest, queryset: QuerySet[Worker], *,
                     enabled: bool) -> None:
        self._set_each(request, queryset, verb="Enabled" if enabled else "Disabled",
                       change=lambda name, actor: worker_set_enabled(name=name, enabled=enabled,
                                                                     actor=actor))

    @admin.action(description="Drain the selected workers (no new requests)",
                  permissions=["change"])
    def drain_workers(self, request: HttpRequest, queryset: QuerySet[Worker]) -> None:
        self._set_each(request, queryset, verb="Draining",
                       change=lambda name, actor: worker_set_draining(name=name, draining=True,
                                                                      actor=actor))

    @admin.action(description="Undrain the selected workers", permissions=["change"])
    def undrain_workers(self, request: HttpRequest, queryset: QuerySet[Worker]) -> None:
        self._set_each(request, queryset, verb="Undrained",
                       change=lambda name, actor: worker_set_draining(name=name, draining=False,
                                                                      actor=actor))

    def _set_each(self, request: HttpRequest, queryset: QuerySet[Worker], *, verb: str,
                  change: Callable[[str, Actor], Worker]) -> None:
        names = list(queryset.order_by("name").values_list("name", flat=True))
        actor = Actor.of_request(request)
        try:
            with transaction.atomic():
                for name in names:
                    change(name, actor)
        except WorkerError as exc:  # e.g. deleted meanwhile by someone else
            self.message_user(request, str(exc), messages.ERROR)
            return
        self.message_user(request, f"{verb} {_plural(len(names), 'worker')}.",
                          messages.SUCCESS)

    @admin.action(description="Probe the selected workers now", permissions=["change"])
    def probe_workers(self, request: HttpRequest, queryset: QuerySet[Worker]) -> None:
        # No transaction here: the probes wait on the network (up to their timeout) first.
        names = list(queryset.values_list("name", flat=True))
        outcomes = workers_probe_all(names=names)
        failed = [f"{worker.name}: {result.error}" for worker, result in outcomes
                  if not result.ok]
        text = (f"Probed {_plural(len(outcomes), 'worker')}: "
                f"{len(outcomes) - len(failed)} healthy, {len(failed)} unhealthy.")
        skipped = len(names) - len(outcomes)
        if skipped:
            text += f" Skipped {_plural(skipped, 'disabled worker')}."
        if failed:
            text += " " + "; ".join(failed)
        self.message_user(request, text, messages.WARNING if failed else messages.SUCCESS)

from proxy import admin_costs  # noqa: E402,F401 - the upstream cost prices' admin, beside the workers'
