"""Validate JSON against the schemas of OpenAI's own OpenAPI document.

The document is the repository's own copy, ``tests/openai/openapi.json`` (with its MIT
licence beside it), so that a clone tests itself with nothing from outside it.

It says OpenAPI 3.1, whose schemas are JSON Schema 2020-12, but still marks some schemas
with the 3.0-style ``nullable: true``, which 2020-12 ignores; those are rewritten to also
accept ``null`` so that e.g. ``"logprobs": null`` validates as it does against OpenAI.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import orjson
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

OPENAPI_PATH = Path(__file__).resolve().parent / "openai" / "openapi.json"
# The URI the document is registered under; "$ref"s inside it are relative to it.
DOCUMENT_URI = "urn:openai:openapi"

__all__ = ["OPENAPI_PATH", "ValidationError", "errors", "schema", "validate"]


def _allow_null(node: Any) -> Any:
    """Rewrite every ``nullable: true`` schema to ``anyOf: [<schema>, {type: null}]``."""
    if isinstance(node, list):
        return [_allow_null(item) for item in node]
    if not isinstance(node, dict):
        return node
    rewritten = {key: _allow_null(value) for key, value in node.items()}
    if rewritten.get("nullable") is True:
        del rewritten["nullable"]
        # anyOf (not "type": [..., "null"]) also covers enums, $refs and allOf/oneOf.
        return {"anyOf": [rewritten, {"type": "null"}]}
    return rewritten


@cache
def _document() -> dict[str, Any]:
    if not OPENAPI_PATH.is_file():
        raise FileNotFoundError(
            f"OpenAI's OpenAPI document is not at {OPENAPI_PATH}")
    return _allow_null(orjson.loads(OPENAPI_PATH.read_bytes()))


@cache
def _registry() -> Registry:
    resource = Resource.from_contents(_document(), default_specification=DRAFT202012)
    return Registry().with_resource(DOCUMENT_URI, resource)


@cache
def _validator(schema_name: str) -> Draft202012Validator:
    if schema_name not in _document()["components"]["schemas"]:
        raise KeyError(f"no schema {schema_name!r} in {OPENAPI_PATH}")
    reference = {"$ref": f"{DOCUMENT_URI}#/components/schemas/{schema_name}"}
    return Draft202012Validator(reference, registry=_registry())


def schema(schema_name: str) -> dict[str, Any]:
    """``components/schemas/<schema_name>`` as validated (``nullable`` rewritten)."""
    return _document()["components"]["schemas"][schema_name]


def errors(instance: Any, schema_name: str) -> list[str]:
    """Every violation of ``components/schemas/<schema_name>``, as readable lines."""
    return [f"{'/'.join(map(str, error.absolute_path)) or '<root>'}: {error.message}"
            for error in _validator(schema_name).iter_errors(instance)]


def validate(instance: Any, schema_name: str) -> None:
    """Raise ``ValidationError`` unless ``instance`` matches the named schema.

    ``schema_name`` is a key of ``components/schemas``, e.g. ``CreateChatCompletionResponse``,
    ``CreateChatCompletionStreamResponse`` or ``ErrorResponse``.
    """
    error = best_match(_validator(schema_name).iter_errors(instance))
    if error is not None:
        raise error
