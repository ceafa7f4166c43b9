"""What the two stores (Redis, this process's memory) take and give back."""

from __future__ import annotations

from dataclasses import dataclass

# The dimensions a request is limited in, as the stores report a refusal.
REQUESTS = 1
TOKENS = 2
CONCURRENCY = 3
DIMENSION_NAMES = {REQUESTS: "requests per minute (RPM)", TOKENS: "tokens per minute (TPM)",
                   CONCURRENCY: "concurrent requests"}

# A store's retry for a request that can never be admitted (over the limit on its own).
NEVER = -1


@dataclass(frozen=True)
class Limits:
    """A scope's limits; None is unlimited."""

    rpm: int | None = None
    tpm: int | None = None
    concurrency: int | None = None

    def __post_init__(self) -> None:
        for value in (self.rpm, self.tpm, self.concurrency):
            if value is not None and value < 0:
                raise ValueError(f"A limit cannot be negative: {self}")

    @property
    def unlimited(self) -> bool:
        # Tested on every request: three comparisons, not a new Limits() and its __eq__.
        return self.rpm is None and self.tpm is None and self.concurrency is None

    @property
    def counts_window(self) -> bool:
        """Does this scope keep a window of recent requests (for RPM or TPM)?"""
        return self.rpm is not None or self.tpm is not None


@dataclass(frozen=True)
class Scope:
    """Who a limit applies to (``key:123``, ``user:45``) and its limits; ``label`` names it
    for the client (its ids stay inside the router)."""

    name: str
    limits: Limits
    label: str = "this API key"


@dataclass(frozen=True)
class ScopeCount:
    """A scope's window as the admission found it, before counting the request itself."""

    requests: int
    tokens: int
    reset_ms: int  # until every request now in the window has left it


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    refused_scope: int  # index into the scopes; -1 when allowed
    dimension: int  # REQUESTS, TOKENS or CONCURRENCY; 0 when allowed
    retry_ms: int  # until the refused limit has room; NEVER when it never will
    used: int  # what the refused limit had counted
    counts: tuple[ScopeCount, ...]
