"""The search box of the admin's big lists (usage records, holds, ledger entries, refused
requests, usage roll-ups): each kind of term is looked up through an index.

Django's admin search ORs ``UPPER(column) LIKE '%term%'`` (``= UPPER(term)`` for ``=``
fields) over every search field, which no index serves. A list is read newest first, a
page at a time (``billing.admin_keyset``), so a search walks the newest-first index until
it has a page of matches: for a request id, which matches one row, that is the whole
table, tens of millions of rows. Here a term is read as what staff paste into that box:

- a request id, or a ledger entry's idempotency key: the rows of that request, found by
  their id columns (exact, as ids are);
- an API key (``sk-br-...``: its prefix, or the whole key, of which only the prefix is
  read): that key's rows;
- an e-mail address: the rows of the user who signs in with it (in any case, as at
  sign-in), or, for part of one, of every user whose address contains it;
- part of an organization's name: that organization's rows;
- the exact name of a priced model: that model's rows (the list's Model filter).

Users and organizations are small tables and are read first; the big table is then read
through its index on the user, the key, the wallet or the organization. A list names
what it has no index for as ``None``, and its help text says what it searches.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from django.db.models import Q, QuerySet
from django.http import HttpRequest

from accounts.keys import KEY_PREFIX, key_prefix_of
from accounts.models import ApiKey, User
from accounts.selectors import users_with_email
from billing.models import ModelPrice, Wallet
from organizations.models import Organization


@dataclass(frozen=True)
class IndexedSearch:
    """Where one list finds each kind of term (a column holding that id, or None)."""

    request: Callable[[str], Q] | None = None  # the rows of one request (an exact token)
    api_key: str | None = None
    user: str | None = None
    wallet: str | None = None  # a user's and an organization's rows through their wallets
    organization: str | None = None
    model: str | None = None

    def filter(self, term: str) -> Q | None:
        """What ``term`` matches, or None when it can match nothing in this list."""
        term = term.strip()
        if not term:
            return None
        found = Q(pk__in=[])
        single = not any(char.isspace() for char in term)
        if single and self.request is not None:
            found |= self.request(term)
        if single and term.startswith(KEY_PREFIX) and self.api_key is not None:
            keys = _few(ApiKey.objects.filter(prefix=key_prefix_of(term)).values("pk"))
            found |= Q(**{f"{self.api_key}__in": keys})
        # Read only for a list that finds rows by them (no address has a space in it).
        users = (_few(_users(term)) if single and (self.user or self.wallet) else [])
        organizations = (_few(Organization.objects.filter(name__icontains=term).values("pk"))
                         if self.organization or self.wallet else [])
        if self.user is not None:
            found |= Q(**{f"{self.user}__in": users})
        if self.organization is not None:
            found |= Q(**{f"{self.organization}__in": organizations})
        if self.wallet is not None:
            wallets = _few(Wallet.objects.filter(
                Q(user__in=users) | Q(organization__in=organizations)).values("pk"))
            found |= Q(**{f"{self.wallet}__in": wallets})
        if single and self.model is not None and ModelPrice.objects.filter(model=term).exists():
            found |= Q(**{self.model: term})
        return found

    def help_text(self) -> str:
        kinds = [label for label, column in (
            ("a request id", self.request), ("an API key or its prefix", self.api_key),
            ("an e-mail address or part of one", self.user or self.wallet),
            ("part of an organization's name", self.organization or self.wallet),
            ("a priced model's exact name", self.model)) if column is not None]
        listed = kinds[0] if len(kinds) == 1 else ", ".join(kinds[:-1]) + " or " + kinds[-1]
        return f"Search by {listed}."


# Ids of users, organizations, keys and wallets read first and written into the big
# table's query, up to this many: PostgreSQL then knows a branch that matches nothing is
# empty, and plans an id's lookup through its index instead of walking the list newest first
# past the rows of a subquery it cannot see into. A term that matches more (part of a common
# domain) stays a subquery: it matches often, and the walk finds a page soon.
FEW = 1000


def _few(ids: QuerySet) -> QuerySet | list[int]:
    found = list(ids.values_list("pk", flat=True)[:FEW + 1])
    return ids if len(found) > FEW else found


def _users(term: str) -> QuerySet[User]:
    if "@" in term and not term.startswith("@"):
        return users_with_email(email=term).values("pk")  # a whole address, in any case
    return User.objects.filter(email__icontains=term).values("pk")


class IndexedSearchMixin:
    """A ModelAdmin whose search box is ``indexed_search``'s (see the module)."""

    indexed_search: IndexedSearch
    # Not empty: Django draws the search box only for a list with search fields; they are
    # not read (get_search_results below decides what a term finds).
    search_fields = ("indexed",)

    @property
    def search_help_text(self) -> str:
        return self.indexed_search.help_text()

    def get_search_results(self, request: HttpRequest, queryset: QuerySet,
                           search_term: str) -> tuple[QuerySet, bool]:
        found = self.indexed_search.filter(search_term)
        if found is None:
            return queryset, False
        return queryset.filter(found), False  # no joins to many rows: no duplicates
