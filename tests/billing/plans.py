"""PostgreSQL's plans of the queries the code runs, for tests that check which index a
query can be read through (the test tables are tiny: sequential scans and sorts are
switched off, so the planner shows what could serve the query at ten million rows)."""

from __future__ import annotations

import json
from collections.abc import Callable

from django.db import connection
from django.test.utils import CaptureQueriesContext


def parent_indexes() -> dict[str, str]:
    """Each partition's index and the index of the partitioned table it belongs to (0021
    partitions usage records and holds by month; a plan names the partitions' indexes)."""
    with connection.cursor() as cursor:
        cursor.execute("""SELECT child.relname, parent.relname FROM pg_inherits i
                          JOIN pg_class child ON child.oid = i.inhrelid
                          JOIN pg_class parent ON parent.oid = i.inhparent
                          WHERE child.relkind = 'i'""")
        return dict(cursor.fetchall())


def index_names(plan: dict, parents: dict[str, str] | None = None) -> set[str]:
    """The indexes ``plan`` reads, by the names the models give them."""
    parents = parent_indexes() if parents is None else parents
    names = set()
    if "Index Name" in plan:
        name = plan["Index Name"]
        while name in parents:
            name = parents[name]
        names.add(name)
    for child in plan.get("Plans", []):
        names |= index_names(child, parents)
    return names


def index_conditions(plan: dict) -> list[str]:
    conditions = [plan["Index Cond"]] if "Index Cond" in plan else []
    for child in plan.get("Plans", []):
        conditions += index_conditions(child)
    return conditions


def node_types(plan: dict) -> set[str]:
    types = {plan["Node Type"]}
    for child in plan.get("Plans", []):
        types |= node_types(child)
    return types


def plan_of(run: Callable[[], object]) -> dict:
    """The plan of the last query ``run`` makes, as the code made it."""
    with CaptureQueriesContext(connection) as queries:
        run()
    return plan_of_sql(queries.captured_queries[-1]["sql"])


def plan_of_sql(sql: str, off: tuple[str, ...] = ("enable_seqscan", "enable_bitmapscan",
                                                  "enable_sort")) -> dict:
    """The plan of ``sql`` (a captured query, its parameters in it), ``off`` switched off."""
    with connection.cursor() as cursor:
        for setting in off:
            cursor.execute(f"SET LOCAL {setting} = off")
        cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}")
        (document,) = cursor.fetchone()
    return (json.loads(document) if isinstance(document, str) else document)[0]["Plan"]


def uses(plan: dict, index: str) -> None:
    assert index in index_names(plan), json.dumps(plan, indent=1)
    assert "Sort" not in node_types(plan), json.dumps(plan, indent=1)
