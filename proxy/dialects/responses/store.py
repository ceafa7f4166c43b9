"""Stored responses: kept for their owner only, for ``previous_response_id`` and
``GET``/``DELETE /v1/responses/{id}``, and deleted once past their retention."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

import orjson
from django.conf import settings
from django.utils import timezone

from proxy.ground.errors import ApiError
from proxy.ground.orm_thread import in_orm_thread
from proxy.models import StoredResponse

logger = logging.getLogger(__name__)

DELETE_BATCH = 1000


def retention_cutoff() -> datetime:
    """Responses created before this are expired: unseen now, deleted by the beat task."""
    return timezone.now() - timedelta(days=settings.ROUTER_RESPONSES_RETENTION_DAYS)


def not_found(response_id: str, *, param: str | None = None) -> ApiError:
    what = "Previous response" if param == "previous_response_id" else "Response"
    return ApiError(404, f"{what} with id '{response_id}' not found.", "invalid_request_error",
                    code="not_found", param=param)


def _owned(response_id: str, user_id: int) -> Any:
    # Another user's id answers exactly as an unknown one: nothing says it exists.
    return StoredResponse.objects.filter(pk=response_id, user_id=user_id,
                                         created_at__gte=retention_cutoff())


async def stored_context(*, response_id: str, user_id: int) -> list[dict[str, Any]]:
    """The chat messages a stored response's conversation holds; a 404 naming
    ``previous_response_id`` when the caller has no such response."""
    messages = await in_orm_thread(
        _owned(response_id, user_id).values_list("messages", flat=True).first)
    if messages is None:
        raise not_found(response_id, param="previous_response_id")
    return messages


async def stored_response(*, response_id: str, user_id: int) -> dict[str, Any]:
    response = await in_orm_thread(
        _owned(response_id, user_id).values_list("response", flat=True).first)
    if response is None:
        raise not_found(response_id)
    usage = response.get("usage")
    if isinstance(usage, dict) and isinstance(usage.get("cost"), str):
        # Kept as text (money is never a float), shown as the exact decimal it was.
        usage["cost"] = orjson.Fragment(usage["cost"].encode())
    return response


async def response_delete(*, response_id: str, user_id: int) -> None:
    deleted, _ = await in_orm_thread(_owned(response_id, user_id).delete)
    if not deleted:
        raise not_found(response_id)


async def response_save(*, response_id: str, user_id: int, api_key_id: int | None,
                        model: str, messages: list[dict[str, Any]],
                        response: dict[str, Any]) -> None:
    """Keep an answered response. Called after its charge is settled (or on its way), so a
    failure here costs the client only the later lookup, never the answer: it is logged."""
    try:
        stored = StoredResponse(id=response_id, user_id=user_id, api_key_id=api_key_id,
                                model=model, messages=messages, response=_storable(response))
        await in_orm_thread(lambda: stored.save(force_insert=True))
    except Exception:
        logger.exception("response %s could not be stored", response_id)


def _storable(response: dict[str, Any]) -> dict[str, Any]:
    """The response as JSON the database keeps: its cost (an exact-decimal Fragment, which
    neither the ORM nor a JSON round trip keeps exact) as its decimal text."""
    usage = response.get("usage")
    cost = usage.get("cost") if isinstance(usage, dict) else None
    stored = orjson.loads(orjson.dumps({**response, "usage": {**usage, "cost": None}}
                                       if isinstance(cost, orjson.Fragment) else response))
    if isinstance(cost, orjson.Fragment):
        stored["usage"]["cost"] = orjson.dumps(cost).decode()
    return stored


def responses_delete_expired(*, batch_size: int = DELETE_BATCH) -> int:
    """Delete every stored response past its retention, a batch at a time (short
    transactions, so a large backlog never holds locks for long); returns how many."""
    cutoff = retention_cutoff()
    total = 0
    while True:
        ids = list(StoredResponse.objects.filter(created_at__lt=cutoff)
                   .values_list("pk", flat=True)[:batch_size])
        if not ids:
            return total
        deleted, _ = StoredResponse.objects.filter(pk__in=ids).delete()
        total += deleted
