"""Form posts, pages and records the worker-admin tests build."""

from __future__ import annotations

import itertools
from datetime import timedelta

from django.urls import reverse
from django.utils import timezone

from accounts.models import User
from billing.models import ModelPrice, UsageRecord
from proxy.ground.cache import TTLCache
from proxy.models import Worker

SECRET = "sk-upstream-ADMIN-PLAINTEXT-9876543210"
NEW_SECRET = "sk-upstream-REPLACED-PLAINTEXT-55555"

_request_ids = itertools.count(1)
# A lookup cache like the router's own: saving or draining a worker must empty it.
probe_cache: TTLCache[str, str] = TTLCache(ttl=lambda: 3600)


def form_data(*, models: list[tuple[str, str]] = (("gpt-x", ""),), worker: Worker | None = None,
              **fields: str) -> dict[str, str]:
    """What the add or change form posts: the worker's fields and the models inline."""
    data = {
        "name": "new", "kind": "openai", "base_url": "https://api.example.com/v1",
        "cap_field": "max_tokens", "api_key": "", "enabled": "on", "priority": "0", "weight": "1",
        "max_concurrency": "64", "connect_timeout_s": "5", "first_byte_timeout_s": "60",
        "total_timeout_s": "600",
    }
    rows = list(worker.models.order_by("pk")) if worker else []
    data.update({
        "models-TOTAL_FORMS": str(max(len(models), len(rows))),
        "models-INITIAL_FORMS": str(len(rows)),
        "models-MIN_NUM_FORMS": "0",
        "models-MAX_NUM_FORMS": "1000",
    })
    for i in range(max(len(models), len(rows))):
        if i < len(rows):
            data[f"models-{i}-id"] = str(rows[i].pk)
            data[f"models-{i}-worker"] = str(worker.pk)
        if i < len(models):
            data[f"models-{i}-model"], data[f"models-{i}-upstream_model"] = models[i]
        else:
            data[f"models-{i}-model"] = rows[i].model
            data[f"models-{i}-DELETE"] = "on"
    data.update(fields)
    return {key: value for key, value in data.items() if value is not None}


def change_data(worker: Worker, **fields: str) -> dict[str, str]:
    current = [(row.model, row.upstream_model) for row in worker.models.order_by("pk")]
    return form_data(
        worker=worker, models=fields.pop("models", current),
        **{"name": worker.name, "kind": worker.kind, "base_url": worker.base_url,
           "cap_field": worker.cap_field, "priority": str(worker.priority),
           "weight": str(worker.weight), "max_concurrency": str(worker.max_concurrency),
           **fields},
    )


def add_url() -> str:
    return reverse("admin:proxy_worker_add")


def change_url(worker: Worker) -> str:
    return reverse("admin:proxy_worker_change", args=[worker.pk])


def assert_no_secret(response, *secrets: str) -> None:
    text = response.content.decode()
    for secret in secrets:
        assert secret not in text
    for stored in Worker.objects.values_list("api_key_encrypted", flat=True):
        if stored:
            assert stored not in text


def form_errors(response) -> list[str]:
    errors = [str(e) for e in response.context["adminform"].form.errors.values()]
    errors += [str(e) for formset in response.context["inline_admin_formsets"]
               for e in (*formset.formset.errors, formset.formset.non_form_errors())]
    return errors


def changelist(client, **query: str):
    response = client.get(reverse("admin:proxy_worker_changelist"), query)
    assert response.status_code == 200
    return response


def row_of(response, name: str) -> str:
    """The changelist's table row for the worker ``name``."""
    text = response.content.decode()
    start = text.index(f">{name}</a>")
    return text[text.rindex("<tr", 0, start):text.index("</tr>", start)]


def usage(user: User, price: ModelPrice, worker: str, *, status: str = "ok",
          latency_ms: int | None = 100, age: timedelta | None = None) -> UsageRecord:
    record = UsageRecord.objects.create(
        request_id=f"req-{next(_request_ids)}", user=user, model=price.model, worker=worker,
        price=price, status=status, latency_ms=latency_ms)
    if age is not None:
        UsageRecord.objects.filter(pk=record.pk).update(created_at=timezone.now() - age)
    return record

