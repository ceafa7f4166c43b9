"""``router price set``."""

from __future__ import annotations

from audit.actors import Actor
from billing.models import ModelKind
from billing.services import price_set
from router_admin.cli.base import Options, Subparsers, group, subcommand


def add_parsers(subparsers: Subparsers) -> None:
    price = group(subparsers, "price", help="Manage model prices (USD per 1M tokens).")
    set_ = subcommand(price, "set", handler=price_set_command,
                      help="Add a new price version for a model, in force from now on.")
    set_.add_argument("model")
    # Kept as text: the service parses them as exact Decimals and says what is wrong.
    set_.add_argument("--input", required=True, metavar="USD",
                      help="USD per 1M prompt tokens.")
    set_.add_argument("--output", required=True, metavar="USD",
                      help="USD per 1M completion tokens.")
    set_.add_argument("--cached-input", metavar="USD",
                      help="USD per 1M cached prompt tokens; default: the input price.")
    set_.add_argument("--cache-write", metavar="USD",
                      help="USD per 1M prompt tokens written to the upstream's cache "
                      "(Anthropic); default: 1.25x the input price.")
    set_.add_argument("--kind", choices=ModelKind.values,
                      help="chat (chat, responses, messages, completions), embedding, or "
                      "both; default: the current version's, or chat.")
    set_.add_argument("--context-length", type=int, metavar="N",
                      help="The model's context window in tokens (shown in /v1/models); "
                      "default: the current version's.")
    set_.add_argument("--max-output-tokens", type=int, metavar="N",
                      help="Largest completion the model may produce; default: the current "
                      "version's, or 4096.")


def price_set_command(options: Options) -> list[str]:
    price = price_set(
        model=options["model"], input_usd_per_mtok=options["input"],
        output_usd_per_mtok=options["output"],
        cached_input_usd_per_mtok=options["cached_input"],
        cache_write_usd_per_mtok=options["cache_write"], kind=options["kind"],
        context_length=options["context_length"],
        max_output_tokens=options["max_output_tokens"], actor=Actor.cli(),
    )
    return [f"Set price {price.pk}: {price} (cached input ${price.cached_price}, cache write "
            f"${price.cache_write_price}, max {price.max_output_tokens} output tokens, "
            f"{price.kind})."]
