"""What every OpenAI-shaped dialect checks first: a JSON object, naming a model."""

from __future__ import annotations

import re
from typing import Any

import orjson

from proxy.ground.errors import bad_request

# C0 and C1 control characters: never part of a model's name, and PostgreSQL refuses NUL.
CONTROL_CHARACTERS = re.compile("[\x00-\x1f\x7f-\x9f]")


def json_body(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise bad_request("We could not parse the JSON body of your request. The OpenAI API "
                          "expects a JSON payload.") from None
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.")
    return body


def model_name(body: dict[str, Any]) -> str:
    model = body.get("model")
    if model is None:
        raise bad_request("Missing required parameter: 'model'.", param="model",
                          code="missing_required_parameter")
    if not isinstance(model, str) or not model.strip():
        raise bad_request("Invalid type for 'model': expected a non-empty string.",
                          param="model", code="invalid_type")
    if CONTROL_CHARACTERS.search(model):
        raise bad_request("Invalid 'model': a model name has no control characters.",
                          param="model", code="invalid_value")
    return model
