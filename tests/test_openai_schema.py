"""The helper that validates against OpenAI's OpenAPI document."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import openai_schema
from tests.openai_schema import ValidationError, errors, validate

COMPLETION = {
    "id": "chatcmpl-1", "object": "chat.completion", "created": 1700000000, "model": "m",
    "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                 "message": {"role": "assistant", "content": "hi", "refusal": None}}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}
CHUNK = {
    "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1700000000, "model": "m",
    "choices": [{"index": 0, "delta": {"content": "hi"}, "logprobs": None,
                 "finish_reason": None}],
    "usage": None,
}


def test_the_document_is_the_repositorys_own_copy() -> None:
    expected = Path(__file__).resolve().parent / "openai" / "openapi.json"
    assert expected == openai_schema.OPENAPI_PATH
    assert openai_schema.OPENAPI_PATH.is_file()


def test_valid_objects_pass() -> None:
    validate(COMPLETION, "CreateChatCompletionResponse")
    validate(CHUNK, "CreateChatCompletionStreamResponse")
    validate({**CHUNK, "choices": [], "usage": COMPLETION["usage"]},
             "CreateChatCompletionStreamResponse")
    validate({"error": {"message": "m", "type": "t", "param": None, "code": None}},
             "ErrorResponse")


def test_nullable_is_honoured() -> None:
    # ``usage`` of a chunk is ``nullable: true`` in the document, not a 2020-12 type list.
    assert openai_schema.schema("CreateChatCompletionStreamResponse")["properties"]["usage"][
        "anyOf"][1] == {"type": "null"}
    validate(CHUNK, "CreateChatCompletionStreamResponse")
    with pytest.raises(ValidationError):
        validate({**CHUNK, "usage": "none"}, "CreateChatCompletionStreamResponse")


def test_refs_are_resolved_and_errors_reported() -> None:
    # finish_reason lives behind $refs; a wrong value there must be caught.
    broken = {**COMPLETION, "choices": [{**COMPLETION["choices"][0], "finish_reason": "done"}]}
    with pytest.raises(ValidationError, match="'done' is not one of"):
        validate(broken, "CreateChatCompletionResponse")
    assert any("finish_reason" in line for line in errors(broken, "CreateChatCompletionResponse"))
    assert errors({"error": {"message": "m"}}, "ErrorResponse") == [
        "error: 'type' is a required property", "error: 'param' is a required property",
        "error: 'code' is a required property"]
    with pytest.raises(ValidationError):
        validate({**CHUNK, "object": "chat.completion"}, "CreateChatCompletionStreamResponse")


def test_unknown_schema_name() -> None:
    with pytest.raises(KeyError, match="NoSuchSchema"):
        validate({}, "NoSuchSchema")
