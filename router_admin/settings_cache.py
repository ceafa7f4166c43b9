"""Settings read on every request, kept once read.

``settings.NAME`` goes through ``LazyObject.__getattribute__``, a Python-level call, on
every read; a billed request read sixteen (``bench/calls.py``). ``setting("NAME")`` reads
Django's value the first time and keeps it; a change made the way tests make them
(``override_settings``, pytest-django's ``settings``), which sends ``setting_changed``,
forgets it. Settings come from the environment at start-up and do not change otherwise.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

_values: dict[str, Any] = {}


def setting(name: str) -> Any:
    try:
        return _values[name]
    except KeyError:
        value = _values[name] = getattr(settings, name)
        return value


@receiver(setting_changed)
def _forget(*, setting: str, **kwargs: Any) -> None:
    _values.pop(setting, None)


def forget_all() -> None:
    """For tests that change settings behind Django's back."""
    _values.clear()
