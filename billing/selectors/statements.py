"""Monthly statements of a wallet (a person's or an organization's), read straight from the
ledger. Callers say which wallet; who may read it is theirs to check
(``billing.selectors.receipts.wallet_of_viewer`` for the portal and the API, staff in the
admin). ``user=`` stands for that user's own wallet.

A month is [first day 00:00, next month's first day 00:00) in the site's time zone, by the
entries' ``created_at``. The opening and closing balances are the ledger's own
``balance_after_micros`` (of the wallet's last entry before each bound, or 0), not sums
computed here, so that ``opening + the month's entries == closing`` is a check of the
ledger, not an identity.

On PostgreSQL a statement is read from the ledger days (``billing.services.ledger_days``:
the month's sums per day, kind and model, and the last entry of each day) plus the entries
written since their mark: a month of a busy wallet is some hundreds of rows, not its
hundreds of thousands of entries. Until the days are first summed, and on SQLite, it is
read from the ledger; both give the same statement (tests compare them).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime

from django.db import connection, transaction
from django.db.models import Count, QuerySet, Sum
from django.utils import timezone

from accounts.models import User
from billing.db_planning import without_jit
from billing.models import LedgerEntry, Wallet
from billing.services.ledger_day_statements import MONTH_SQL

_MONTH = re.compile(r"^(\d{4})-(\d{2})$")

# Where each kind goes on a statement, in the order the sections are shown.
SECTIONS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("topups", "Top-ups", (LedgerEntry.Kind.TOPUP, LedgerEntry.Kind.VOUCHER)),
    ("adjustments", "Adjustments", (LedgerEntry.Kind.ADJUSTMENT,)),
    ("charges", "Charges by model", (LedgerEntry.Kind.CHARGE,)),
    ("refunds", "Refunds", (LedgerEntry.Kind.REFUND, LedgerEntry.Kind.CARD_REFUND)),
)
# Lines of these kinds are split by the model of the request (the entry's hold).
_BY_MODEL = {LedgerEntry.Kind.CHARGE, LedgerEntry.Kind.REFUND}


class BadMonth(ValueError):
    pass


def month_parse(value: str) -> date:
    """``2026-03`` -> 2026-03-01; BadMonth for anything else."""
    match = _MONTH.match(value or "")
    if not match or not 1 <= int(match[2]) <= 12 or int(match[1]) < 2000:
        raise BadMonth(f"{value!r} is not a month (YYYY-MM).")
    return date(int(match[1]), int(match[2]), 1)


def month_bounds(month: date) -> tuple[datetime, datetime]:
    tz = timezone.get_default_timezone()
    start = datetime(month.year, month.month, 1, tzinfo=tz)
    following = (date(month.year + 1, 1, 1) if month.month == 12
                 else date(month.year, month.month + 1, 1))
    return start, datetime(following.year, following.month, 1, tzinfo=tz)


@dataclass(frozen=True)
class StatementLine:
    kind: str
    label: str
    model: str  # the request's model for charges and request refunds, else ""
    entries: int
    amount_micros: int


@dataclass(frozen=True)
class StatementSection:
    key: str
    title: str
    lines: list[StatementLine]

    @property
    def total_micros(self) -> int:
        return sum(line.amount_micros for line in self.lines)


@dataclass(frozen=True)
class Statement:
    holder: str  # whose statement it is: the person's email or the organization's name
    holder_ref: str  # ``user12`` or ``org3``: names the CSV file
    month: date
    start: datetime
    end: datetime
    opening_micros: int
    closing_micros: int
    sections: list[StatementSection] = field(default_factory=list)
    user: User | None = None  # a person's own statement (None: an organization's)

    @property
    def movement_micros(self) -> int:
        return sum(section.total_micros for section in self.sections)

    @property
    def reconciles(self) -> bool:
        return self.opening_micros + self.movement_micros == self.closing_micros

    def section(self, key: str) -> StatementSection:
        return next(section for section in self.sections if section.key == key)


def _balance_before(entries: QuerySet[LedgerEntry], moment: datetime) -> int:
    # The last entry by id: ids follow the wallet's row lock, under which every entry of a
    # wallet is written, so the highest id holds the latest balance.
    last = entries.filter(created_at__lt=moment).order_by("-id").values_list(
        "balance_after_micros", flat=True).first()
    return last or 0


def _ledger_of(*, wallet: Wallet | None, user: User | None) -> QuerySet[LedgerEntry]:
    if wallet is not None:
        return LedgerEntry.objects.filter(wallet=wallet)
    if user is None:
        raise ValueError("A statement is of a wallet, or of a user's own wallet.")
    return LedgerEntry.objects.filter(wallet__user=user)


def _holder(*, wallet: Wallet | None, user: User | None) -> tuple[str, str, User | None]:
    if wallet is not None and wallet.organization_id is not None:
        return wallet.organization.name, f"org{wallet.organization_id}", None
    person = user if wallet is None else wallet.user
    assert person is not None  # a wallet has a user or an organization (its CHECK)
    return person.email, f"user{person.pk}", person


# A month's lines as read: (kind, model) -> (entries, amount), and the opening and closing
# balances.
_Read = tuple[dict[tuple[str, str], tuple[int, int]], int, int]


def statement(*, month: date, wallet: Wallet | None = None,
              user: User | None = None) -> Statement:
    """The statement of ``wallet`` (or ``user``'s own) for ``month`` (any date in it)."""
    month = month.replace(day=1)
    start, end = month_bounds(month)
    read = _read_from_days(wallet=wallet, user=user, month=month, start=start, end=end)
    if read is None:
        read = _read_from_ledger(wallet=wallet, user=user, month=month, start=start, end=end)
    totals, opening, closing = read
    by_kind: dict[str, list[StatementLine]] = {}
    for (kind, model), (count, amount) in totals.items():
        by_kind.setdefault(kind, []).append(StatementLine(
            kind=kind, label=LedgerEntry.Kind(kind).label, model=model, entries=count,
            amount_micros=amount))
    sections = [
        StatementSection(key=key, title=title, lines=sorted(
            (line for kind in kinds for line in by_kind.get(kind, [])),
            key=lambda line: (kinds.index(line.kind), line.model)))
        for key, title, kinds in SECTIONS
    ]
    holder, holder_ref, person = _holder(wallet=wallet, user=user)
    return Statement(holder=holder, holder_ref=holder_ref, user=person, month=month,
                     start=start, end=end, opening_micros=opening, closing_micros=closing,
                     sections=sections)


def _read_from_ledger(*, wallet: Wallet | None, user: User | None, month: date,
                      start: datetime, end: datetime) -> _Read:
    """The month summed from its entries: the reference, and what SQLite reads. Its three
    queries read one snapshot, so an entry committed meanwhile is in all or none."""
    with _one_snapshot():
        rows = (statement_entries(wallet=wallet, user=user, month=month).order_by()
                .values("kind", "hold__model")
                .annotate(n=Count("id"), total=Sum("amount_micros")))
        totals: dict[tuple[str, str], tuple[int, int]] = {}
        for row in rows:
            kind = row["kind"]
            key = (kind, (row["hold__model"] or "") if kind in _BY_MODEL else "")
            count, amount = totals.get(key, (0, 0))
            totals[key] = (count + row["n"], amount + row["total"])
        entries = _ledger_of(wallet=wallet, user=user)
        return totals, _balance_before(entries, start), _balance_before(entries, end)


@contextmanager
def _one_snapshot() -> Iterator[None]:
    """A transaction whose queries all read one snapshot (PostgreSQL's REPEATABLE READ);
    inside a caller's transaction, that one as it is. SQLite's transactions already are."""
    if connection.in_atomic_block or connection.vendor != "postgresql":
        with transaction.atomic():
            yield
        return
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        yield


def _read_from_days(*, wallet: Wallet | None, user: User | None, month: date,
                    start: datetime, end: datetime) -> _Read | None:
    """The month from the ledger days and the entries since their mark, in one statement;
    None when the days are not there (SQLite, or before their first run)."""
    if connection.vendor != "postgresql":
        return None
    wallet_id = wallet.pk if wallet is not None else (
        Wallet.objects.filter(user=user).values_list("id", flat=True).first())
    if wallet_id is None:
        return None
    # The planner's estimate of the tail (no statistics on a CTE) passes JIT's cost
    # threshold: compiling took 0.9 s of a 1 s read (EXPLAIN ANALYZE at 10M records).
    with without_jit(), connection.cursor() as cursor:
        cursor.execute(MONTH_SQL, {"wallet": wallet_id, "first_day": month,
                                   "end_day": end.date(), "start": start, "end": end})
        rows = cursor.fetchall()
    if not rows:
        return None
    totals = {(kind, model): (int(count), int(amount))
              for what, kind, model, count, amount in rows if what == "line"}
    last_ids = {kind: last_id for what, kind, _, _, last_id in rows if what == "last_id"}
    balances = dict(LedgerEntry.objects.filter(
        id__in=[i for i in last_ids.values() if i is not None]).values_list(
        "id", "balance_after_micros"))
    return (totals, balances.get(last_ids["opening"], 0),
            balances.get(last_ids["closing"], 0))


def statement_entries(*, month: date, wallet: Wallet | None = None,
                      user: User | None = None) -> QuerySet[LedgerEntry]:
    """The ledger entries of ``wallet`` (or ``user``'s own) in the month, oldest first (the
    statement's CSV)."""
    start, end = month_bounds(month.replace(day=1))
    return (_ledger_of(wallet=wallet, user=user).filter(created_at__gte=start,
                                                        created_at__lt=end)
            .select_related("hold").order_by("id"))


def ledger_month(*, month: date) -> QuerySet[LedgerEntry]:
    """Every wallet's entries of the month, for accounting; oldest first."""
    start, end = month_bounds(month.replace(day=1))
    return (LedgerEntry.objects.filter(created_at__gte=start, created_at__lt=end)
            .select_related("wallet__user", "wallet__organization", "hold", "created_by")
            .order_by("id"))


def statement_months(*, wallet: Wallet | None = None,
                     user: User | None = None) -> Iterator[date]:
    """The months the ledger of ``wallet`` (or ``user``'s own) has entries in, newest first
    (for a month picker)."""
    tz = timezone.get_default_timezone()
    first = _ledger_of(wallet=wallet, user=user).order_by("id").values_list(
        "created_at", flat=True).first()
    if first is None:
        return
    first_month = timezone.localtime(first, tz).date().replace(day=1)
    month = timezone.localtime(timezone.now(), tz).date().replace(day=1)
    while month >= first_month:
        yield month
        month = date(month.year - 1, 12, 1) if month.month == 1 else date(
            month.year, month.month - 1, 1)
