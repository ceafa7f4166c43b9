"""The dashboard's windows: whole roll-up buckets ending with the current one, so every
figure is a sum of buckets and equals the same sum over the records since ``start``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from proxy.rollup_service import bucket_floor

# key: (label, bucket unit, number of buckets)
PERIODS: dict[str, tuple[str, str, int]] = {
    "24h": ("Last 24 hours", "hour", 24),
    "7d": ("Last 7 days", "day", 7),
    "30d": ("Last 30 days", "day", 30),
}
DEFAULT = "24h"


@dataclass(frozen=True)
class Window:
    key: str
    label: str
    unit: str  # "hour" or "day": the roll-up period read
    start: datetime
    buckets: tuple[datetime, ...]

    @property
    def days(self) -> float:
        """The window's length in days, for rates: the current bucket counts whole."""
        step = timedelta(hours=1) if self.unit == "hour" else timedelta(days=1)
        return len(self.buckets) * step / timedelta(days=1)


def window_for(key: str | None, now: datetime) -> Window:
    key = key if key in PERIODS else DEFAULT
    label, unit, count = PERIODS[key]
    step = timedelta(hours=1) if unit == "hour" else timedelta(days=1)
    last = bucket_floor(now, unit)
    buckets = tuple(last - step * (count - 1 - i) for i in range(count))
    return Window(key=key, label=label, unit=unit, start=buckets[0], buckets=buckets)
