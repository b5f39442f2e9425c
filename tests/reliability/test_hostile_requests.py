"""Hostile requests over real HTTP: each is refused with a 4xx naming the field, and the server's log
holds none of their values and no traceback, only one line per refused request."""

from __future__ import annotations

import json
import time

import pytest

from serving.settings import MAX_BODY_BYTES

pytestmark = pytest.mark.slow

EMAILS = [f"hostile.{n}@example.com" for n in range(12)]
PHONES = ["+44 7700 900123", "+1 (555) 010-0199", "+33 6 12 34 56 78"]
PHONE_NUMBER = 447700900789
"""Sent as a JSON number: the wrong type for a customer id."""
HUGE = json.dumps({"customer_ids": ["C1"] * (MAX_BODY_BYTES // 5) + [EMAILS[11]]}).encode()
"""Past the limit however it is sent (httpx writes ``json=`` without spaces)."""
JSON = {"content-type": "application/json"}
HOSTILE_VALUES = [*EMAILS, *PHONES, str(PHONE_NUMBER)]


def _chunks(body: bytes, size: int = 16 * 1024):
    """A generator body: httpx sends it chunked, without Content-Length."""
    for start in range(0, len(body), size):
        yield body[start : start + size]


REQUESTS = [
    # (case, path, httpx.post keyword arguments, status, the field the answer must name)
    ("email id", "/predict", {"json": {"customer_ids": [EMAILS[0]]}}, 400, "customer_ids"),
    ("phone id", "/predict", {"json": {"customer_ids": [PHONES[0]]}}, 400, "customer_ids"),
    ("email among ids", "/predict", {"json": {"customer_ids": ["C1", EMAILS[1]]}}, 400, "customer_ids"),
    ("ids as a string", "/predict", {"json": {"customer_ids": EMAILS[2]}}, 400, "customer_ids"),
    ("id as a number", "/predict", {"json": {"customer_ids": [PHONE_NUMBER]}}, 400, "customer_ids"),
    ("ids as an object", "/predict", {"json": {"customer_ids": {EMAILS[3]: 1}}}, 400, "customer_ids"),
    ("unknown field only", "/predict", {"json": {"emails": [EMAILS[4]]}}, 400, "customer_ids"),
    ("task endpoint", "/churn", {"json": {"customer_ids": [PHONES[1]]}}, 400, "customer_ids"),
    ("form encoded", "/predict", {"data": {"customer_ids": EMAILS[5]}}, 400, "customer_ids"),
    (
        "malformed json",
        "/predict",
        {"content": f'{{"customer_ids": ["{EMAILS[6]}"'.encode(), "headers": JSON},
        400,
        "body",
    ),
    ("huge body", "/predict", {"content": HUGE, "headers": JSON}, 413, "body"),
    ("huge chunked body", "/predict", {"content": _chunks(HUGE), "headers": JSON}, 413, "body"),
    (
        "event email id",
        "/events",
        {"json": {"customer_id": EMAILS[7], "event_type": "session_start"}},
        400,
        "customer_id",
    ),
    (
        "event phone id",
        "/events",
        {"json": {"customer_id": PHONES[2], "event_type": "search"}},
        400,
        "customer_id",
    ),
    (
        "event id as list",
        "/events",
        {"json": {"customer_id": [EMAILS[8]], "event_type": "search"}},
        400,
        "customer_id",
    ),
    (
        "event id as number",
        "/events",
        {"json": {"customer_id": PHONE_NUMBER, "event_type": "search"}},
        400,
        "customer_id",
    ),
    ("event type", "/events", {"json": {"customer_id": "C1", "event_type": EMAILS[9]}}, 400, "event_type"),
    (
        "event score",
        "/events",
        {"json": {"customer_id": "C1", "event_type": "survey_answered", "kind": "nps", "score": EMAILS[10]}},
        400,
        "score",
    ),
    (
        "event score as boolean",
        "/events",
        {"json": {"customer_id": "C1", "event_type": "survey_answered", "kind": "nps", "score": True}},
        400,
        "score",
    ),
    (
        "event timestamp",
        "/events",
        {"json": {"customer_id": "C1", "event_type": "search", "timestamp": PHONES[1]}},
        400,
        "timestamp",
    ),
    (
        "event unknown field",
        "/events",
        {"json": {"customer": EMAILS[0], "event_type": "search"}},
        400,
        "customer_id",
    ),
    (
        "event huge body",
        "/events",
        {"json": {"customer_id": "C1", "event_type": "search", "note": "x" * MAX_BODY_BYTES}},
        413,
        "body",
    ),
]


def _named_fields(answer) -> set[str]:
    """The fields an error answer names: the gateway's ``field``, or BentoML's ``detail[].loc``
    (an empty location is the body itself: JSON that does not parse)."""
    body = answer.json()
    if "field" in body:
        return {body["field"]}
    return {str(error["loc"][0]) if error["loc"] else "body" for error in body["detail"]}


def _log_after(server, offset: int, refused: int, timeout_s: float = 20.0) -> str:
    """The log written since ``offset``, once it holds a line per refused request (workers write it
    through BentoML's arbiter, a little after the answers)."""
    deadline = time.monotonic() + timeout_s
    while True:
        text = server.log.read_bytes()[offset:].decode("utf-8", "replace")
        if text.count("request refused:") >= refused or time.monotonic() > deadline:
            return text
        time.sleep(0.25)


def test_hostile_requests_are_refused_naming_the_field_and_leave_no_value_in_the_log(hostile_api):
    # given a running server and the size of its log so far
    assert len(REQUESTS) >= 20 and len(HUGE) > MAX_BODY_BYTES
    offset = hostile_api.log.stat().st_size
    # when the hostile requests are sent
    answers = {}
    with hostile_api.client() as client:
        for case, path, request, _, _ in REQUESTS:
            answers[case] = client.post(path, **request)
    # then each is a 4xx naming the field, with none of the values it carried
    for case, _, _, status, field in REQUESTS:
        answer = answers[case]
        assert answer.status_code == status, (case, answer.text[:300])
        assert field in _named_fields(answer), (case, answer.text[:300])
        assert not [value for value in HOSTILE_VALUES if value in answer.text], case
    # and the log has one line per refused request, with its route and fields, and nothing else of it
    refused = sum(1 for *_, status, _ in REQUESTS if status == 400)
    written = _log_after(hostile_api, offset, refused)
    assert written.count("request refused:") == refused, written[-3000:]
    assert (
        "request refused: POST /events: ValidationError, 1 error: customer_id (string_pattern_mismatch)"
        in written
    )
    assert "Traceback" not in written and "input_value=" not in written, written[-3000:]
    whole = hostile_api.log.read_text(errors="replace")
    assert [value for value in HOSTILE_VALUES if value in whole] == []


def test_a_body_at_the_limit_passes_the_gateway(hostile_api):
    # given a body just under the limit (padding in a field the schema ignores)
    body = json.dumps({"customer_ids": ["NEVER-SEEN-9"], "padding": ""})
    padded = json.dumps({"customer_ids": ["NEVER-SEEN-9"], "padding": "x" * (MAX_BODY_BYTES - len(body))})
    assert len(padded) == MAX_BODY_BYTES
    with hostile_api.client() as client:
        declared = client.post("/predict", content=padded, headers=JSON)
        chunked = client.post("/predict", content=_chunks(padded.encode()), headers=JSON)
    # then both reach the service and are answered
    assert declared.status_code == 200, declared.text[:300]
    assert chunked.status_code == 200, chunked.text[:300]
    assert chunked.json()["predictions"][0]["cold_start"] is True
