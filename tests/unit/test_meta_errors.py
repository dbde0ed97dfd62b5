"""Meta's error read one way, whether a webhook or a Graph answer carries it."""

from __future__ import annotations

import json

import pytest

from wagate.adapters.upstream.graph import read_answer
from wagate.domain.errors import (
    INVALID_PARAMETER,
    PAIR_RATE_LIMIT,
    SOMETHING_WENT_WRONG,
    THROUGHPUT_RATE_LIMIT,
    kind_of,
)
from wagate.domain.meta_errors import MetaError, MetaErrorData, meta_error

OPTED_OUT = {
    "code": 131050,
    "title": "Unable to deliver the message",
    "message": "Unable to deliver the message",
    "error_data": {"details": "The user stopped marketing messages"},
    "href": "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/",
}
EXPECTED = MetaError(
    131050,
    "Unable to deliver the message",
    "Unable to deliver the message",
    MetaErrorData("The user stopped marketing messages"),
    OPTED_OUT["href"],  # type: ignore[arg-type]
)


def test_a_webhooks_errors_list_gives_its_first_error() -> None:
    second = {"code": 1}
    assert meta_error(json.dumps([OPTED_OUT, second])) == EXPECTED


def test_a_graph_answer_gives_the_error_under_its_envelope() -> None:
    assert meta_error(json.dumps({"error": OPTED_OUT}).encode()) == EXPECTED


def test_one_error_object_is_read_as_is() -> None:
    error = meta_error(b'{"code": 131056, "message": "(#131056) pair", "fbtrace_id": "x"}')
    assert error == MetaError(PAIR_RATE_LIMIT, message="(#131056) pair")
    assert error.details is None


@pytest.mark.parametrize(
    "body",
    [
        None,
        "",
        b"",
        b"not json",
        b"\xff",
        b"[]",
        b"{}",
        b'{"error": "x"}',
        b'[{"code": "1"}]',
        b"3",
    ],
)
def test_a_body_without_a_meta_error_gives_none(body: bytes | str | None) -> None:
    assert meta_error(body) is None


def test_a_graph_error_answer_keeps_metas_code_and_details_with_the_catalogue_title() -> None:
    body = json.dumps({"error": {**OPTED_OUT, "title": None}}).encode()
    result = read_answer(400, body)
    assert (result.error_code, result.error_title, result.error_details, result.http_status) == (
        131050,
        kind_of(131050).title,
        "The user stopped marketing messages",
        400,
    )
    bare = read_answer(400, b'{"error": {"code": 131056, "message": "(#131056) pair"}}')
    assert (bare.error_code, bare.error_details) == (PAIR_RATE_LIMIT, "(#131056) pair")


@pytest.mark.parametrize(
    ("status", "code"),
    [(429, THROUGHPUT_RATE_LIMIT), (502, SOMETHING_WENT_WRONG), (403, INVALID_PARAMETER)],
)
def test_an_answer_without_metas_envelope_still_gets_a_code(status: int, code: int) -> None:
    result = read_answer(status, b"<html>Bad gateway</html>")
    assert (result.error_code, result.http_status) == (code, status)
    assert result.error_details == f"Upstream answered HTTP {status}: b'<html>Bad gateway</html>'"


def test_a_200_without_a_message_id_is_something_went_wrong() -> None:
    result = read_answer(200, b'{"messages": []}')
    assert result.error_code == SOMETHING_WENT_WRONG
    assert not result.ok
    assert read_answer(200, b'{"messages": [{"id": "wamid.X"}]}').wamid == "wamid.X"
