"""``router cost set`` and ``router cost list``: what the upstreams charge us."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.core.management.base import CommandError

from audit.actors import Actor
from proxy.costs import CostError, cost_set, costs_current
from proxy.models import UpstreamCost
from router_admin.cli.base import Options, Subparsers, group, subcommand


def add_parsers(subparsers: Subparsers) -> None:
    cost = group(subparsers, "cost",
                 help="Manage what each worker's upstream charges (USD per 1M tokens).")
    set_ = subcommand(cost, "set", handler=cost_set_command,
                      help="Add a new cost version for a model on a worker, from now on.")
    set_.add_argument("worker")
    set_.add_argument("model", help="The model's name as clients send it.")
    # Kept as text: the service parses them as exact Decimals and says what is wrong.
    set_.add_argument("--input", required=True, metavar="USD",
                      help="USD per 1M prompt tokens.")
    set_.add_argument("--output", required=True, metavar="USD",
                      help="USD per 1M completion tokens.")
    set_.add_argument("--cached-input", metavar="USD",
                      help="USD per 1M cached prompt tokens; default: the input price.")
    set_.add_argument("--cache-write", metavar="USD",
                      help="USD per 1M prompt tokens written to the upstream's cache; "
                      "default: 1.25x the input price.")
    subcommand(cost, "list", handler=cost_list_command,
               help="List the cost in force for each worker's model that has one.")


@contextmanager
def _refusals() -> Iterator[None]:
    try:
        yield
    except CostError as exc:
        raise CommandError(" ".join(str(exc).split())) from exc


def _describe(cost: UpstreamCost) -> str:
    optional = [f"cached input ${cost.cached_input_usd_per_mtok}"
                if cost.cached_input_usd_per_mtok is not None else "cached input = input",
                f"cache write ${cost.cache_write_usd_per_mtok}"
                if cost.cache_write_usd_per_mtok is not None else "cache write = 1.25x input"]
    return (f"{cost.worker_model.worker.name} {cost.worker_model.model}: "
            f"${cost.input_usd_per_mtok} in / ${cost.output_usd_per_mtok} out per 1M tokens, "
            f"{', '.join(optional)}, from {cost.effective_from:%Y-%m-%d %H:%M:%S %Z}")


def cost_set_command(options: Options) -> list[str]:
    with _refusals():
        cost = cost_set(worker=options["worker"], model=options["model"],
                        input=options["input"], output=options["output"],
                        cached_input=options["cached_input"],
                        cache_write=options["cache_write"], actor=Actor.cli())
    return [f"Set cost {cost.pk}: {_describe(cost)}."]


def cost_list_command(options: Options) -> list[str]:
    return [_describe(cost) for cost in costs_current()] or ["No upstream costs."]
