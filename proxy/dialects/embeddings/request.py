"""Validate an embeddings body the way OpenAI does, naming the bad ``param``, and count its
input exactly: an embedding has no output, so the input is the whole charge and the hold.

The legacy completions dialect reads its body and model name with the same helpers.
"""

from __future__ import annotations

from proxy.dialects.body import json_body, model_name
from proxy.dialects.chat.request import ChatRequest
from proxy.ground.errors import bad_request
from proxy.ground.tokens import estimate_text_tokens

# OpenAI's limits: at most 2048 inputs in one request.
MAX_INPUTS = 2048
ENCODINGS = ("float", "base64")

# One input: a text, or a text already tokenized (its token ids).
Input = str | list[int]


def is_token_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def token_ids(value: object, name: str) -> list[int] | None:
    """``value`` as a non-empty list of token ids, None if it is no list of integers at all
    (a 400 naming ``name`` if it is one, but empty or with a negative id)."""
    if not isinstance(value, list) or not value:
        return None
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return None
    if not all(v >= 0 for v in value):
        raise bad_request(f"Invalid '{name}': token ids are non-negative integers.",
                          param=name, code="invalid_value")
    return value


def split_inputs(value: object, name: str, *, allow_empty_text: bool = False
                 ) -> list[Input]:
    """The inputs of ``value`` (``input`` of embeddings, ``prompt`` of completions): a
    string, a list of strings, a list of token ids, or a list of lists of token ids."""
    if value is None:
        raise bad_request(f"Missing required parameter: '{name}'.", param=name,
                          code="missing_required_parameter")
    if isinstance(value, str):
        inputs: list[Input] = [value]
    elif not isinstance(value, list):
        raise bad_request(f"Invalid type for '{name}': expected a string, an array of strings, "
                          "an array of token ids or an array of arrays of token ids.",
                          param=name, code="invalid_type")
    elif not value:
        raise bad_request(f"Invalid '{name}': empty array. Expected an array with minimum "
                          "length 1.", param=name, code="empty_array")
    elif (ids := token_ids(value, name)) is not None:
        inputs = [ids]
    else:
        inputs = []
        for i, item in enumerate(value):
            where = f"{name}[{i}]"
            if isinstance(item, str):
                inputs.append(item)
            elif (ids := token_ids(item, where)) is not None:
                inputs.append(ids)
            else:
                raise bad_request(f"Invalid '{where}': expected a string or a non-empty array "
                                  "of token ids.", param=where, code="invalid_type")
        if len({isinstance(item, str) for item in inputs}) > 1:
            raise bad_request(f"Invalid '{name}': an array of strings and token-id arrays "
                              "mixed; use one or the other.", param=name,
                              code="invalid_value")
    if len(inputs) > MAX_INPUTS:
        raise bad_request(f"Invalid '{name}': {len(inputs)} items, more than the maximum of "
                          f"{MAX_INPUTS}.", param=name, code="array_above_max_length")
    if not allow_empty_text and any(item == "" for item in inputs):
        raise bad_request(f"Invalid '{name}': an input cannot be an empty string.",
                          param=name, code="invalid_value")
    return inputs


def input_tokens(inputs: list[Input]) -> int:
    """The tokens of ``inputs``: token ids by their number (exact for any tokenizer); a
    text by the larger of its o200k and cl100k counts. OpenAI's embedding models tokenize
    with cl100k, current chat models with o200k: the larger count is exact for whichever
    the upstream uses when it is that one, and never below the other's, so the hold it
    bounds (an embedding's hold is its input's price, nothing else) covers either."""
    return sum(estimate_text_tokens(item) if isinstance(item, str) else len(item)
               for item in inputs)


def parse_embeddings_request(raw: bytes) -> ChatRequest:
    body = json_body(raw)
    model = model_name(body)
    inputs = split_inputs(body.get("input"), "input")
    dimensions = body.get("dimensions")
    if dimensions is not None and not (is_token_id(dimensions) and dimensions >= 1):
        raise bad_request("Invalid 'dimensions': expected a positive integer.",
                          param="dimensions", code="invalid_value")
    encoding = body.get("encoding_format")
    if encoding is not None and encoding not in ENCODINGS:
        raise bad_request(f"Invalid value for 'encoding_format': {encoding!r}. Supported "
                          "values are: 'float' and 'base64'.", param="encoding_format",
                          code="invalid_value")
    if body.get("user") is not None and not isinstance(body["user"], str):
        raise bad_request("Invalid type for 'user': expected a string.", param="user",
                          code="invalid_type")
    if body.get("stream"):
        raise bad_request("Embeddings are not streamed: 'stream' is not supported.",
                          param="stream", code="invalid_value")
    # n=0: nothing is generated, so the hold is the input's price and no output is let
    # through; the exact count is both the hold's bound and the router's own count.
    return ChatRequest(body=body, model=model, messages=[], stream=False,
                       include_usage=False, max_tokens=None, n=0, native=body,
                       prompt_tokens=input_tokens(inputs))
