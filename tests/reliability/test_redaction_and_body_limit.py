"""The log redaction filter and the gateway's body limit, without a server: BentoML's own
``log_exception`` on a real pydantic error, and ``GatewayMiddleware`` around a fake ASGI app."""

from __future__ import annotations

import asyncio
import io
import json
import logging

import pytest
from pydantic import BaseModel, Field, ValidationError, create_model

from serving.gateway import GatewayMiddleware, Readiness
from serving.logs import HANDLER_LOGGERS, SOURCE_LOGGER, RedactionFilter, install_log_redaction, scrub
from serving.settings import ServeSettings

EMAIL = "jane.doe@example.com"
KEY = "unit-test-key"
LIMIT = 2048

# ---- redaction ------------------------------------------------------------------------------------

Input = create_model(
    "Input",
    customer_id=(str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:\-]*$")),
    customer_ids=(list[str], Field(default_factory=list)),
    scores=(dict[str, float], Field(default_factory=dict)),
)


class RealtimeEvent(BaseModel):
    customer_id: int


def _validation_error(model: type[BaseModel], data: dict) -> ValidationError:
    try:
        model.model_validate(data)
    except ValidationError as failure:
        return failure
    raise AssertionError("the data was valid")


@pytest.fixture()
def log_text():
    """``log_text()`` -> what was logged by BentoML's request-error logger (and to the root logger's
    handlers) since the redaction was installed; filters are taken off again afterwards."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    source = logging.getLogger(SOURCE_LOGGER)
    root = logging.getLogger()
    state = source.disabled, source.propagate
    source.disabled, source.propagate = False, False
    source.addHandler(handler)
    root.addHandler(handler)
    install_log_redaction()
    yield stream.getvalue
    root.removeHandler(handler)
    source.removeHandler(handler)
    source.disabled, source.propagate = state
    for target in [source, handler, *(h for n in HANDLER_LOGGERS for h in logging.getLogger(n).handlers)]:
        for installed in [f for f in target.filters if isinstance(f, RedactionFilter)]:
            target.removeFilter(installed)


def _log_exception(path: str, failure: BaseException) -> None:
    """BentoML's own request-error logging, as its endpoint wrapper calls it."""
    from bentoml._internal.server.http_app import log_exception
    from starlette.requests import Request

    scope = {"type": "http", "method": "POST", "path": path, "headers": [], "query_string": b""}
    request = Request({**scope, "scheme": "http", "server": ("127.0.0.1", 3000), "root_path": ""})
    try:
        raise failure
    except type(failure):
        log_exception(request)


def test_given_the_raw_pydantic_error_then_it_quotes_the_value():
    # the reason for the filter: a ValidationError's text carries the offending value
    assert f"input_value='{EMAIL}'" in str(_validation_error(Input, {"customer_id": EMAIL}))


def test_a_refused_request_is_one_warning_line_with_route_error_and_fields(log_text):
    # given a body failing the input schema: a bad id, an email in a list, a dict keyed by an email
    failure = _validation_error(Input, {"customer_id": EMAIL, "customer_ids": [1], "scores": {EMAIL: "x"}})
    # when BentoML logs it
    _log_exception("/events", failure)
    # then the log holds one line: route, error type, locations (a dict key shown as <key>)
    lines = log_text().splitlines()
    assert lines == [
        f"WARNING {SOURCE_LOGGER} request refused: POST /events: ValidationError, 3 errors: "
        "customer_id (string_pattern_mismatch), customer_ids[0] (string_type), scores[<key>] (float_parsing)"
    ]


def test_many_errors_are_summarised_and_a_body_level_error_is_located_at_the_body(log_text):
    _log_exception(
        "/predict", _validation_error(Input, {"customer_id": "C1", "customer_ids": list(range(25))})
    )
    try:
        Input.model_validate_json(f'{{"customer_id": "{EMAIL}"')
    except ValidationError as failure:
        _log_exception("/predict", failure)
    many, malformed = log_text().splitlines()
    assert many.endswith("customer_ids[9] (string_type), and 15 more") and "25 errors" in many
    assert malformed.endswith("ValidationError, 1 error: body (json_invalid)")
    assert EMAIL not in log_text()


def test_a_bentoml_client_error_is_one_line_without_its_message(log_text):
    from bentoml.exceptions import BadInput

    _log_exception("/predict", BadInput(f"cannot read {EMAIL}"))
    assert log_text().splitlines() == [
        f"WARNING {SOURCE_LOGGER} request refused: POST /predict: BadInput (HTTP 400)"
    ]


def test_a_starlette_client_error_is_one_line(log_text):
    from starlette.exceptions import HTTPException

    _log_exception("/predict", HTTPException(400, "Missing boundary in multipart."))
    assert log_text().splitlines() == [
        f"WARNING {SOURCE_LOGGER} request refused: POST /predict: HTTPException (HTTP 400)"
    ]


def test_a_server_error_keeps_its_traceback_without_input_values(log_text):
    # given a ValidationError raised by the service's own model (a bug, not the client's fault)
    _log_exception("/events", _validation_error(RealtimeEvent, {"customer_id": EMAIL}))
    _log_exception("/events", KeyError("no such column"))
    text = log_text()
    # then it stays an ERROR with its traceback, the value cut out
    assert text.startswith(f"ERROR {SOURCE_LOGGER} Exception on /events [POST]\nTraceback")
    assert "input_value=<redacted>, input_type=str]" in text and EMAIL not in text
    assert "KeyError: 'no such column'" in text


def test_other_loggers_records_are_scrubbed_through_the_handlers(log_text):
    failure = _validation_error(RealtimeEvent, {"customer_id": EMAIL})
    logging.getLogger("tests.reliability.elsewhere").error("push failed: %s", failure)
    try:
        raise RuntimeError("wrapped") from failure
    except RuntimeError:
        logging.getLogger("tests.reliability.elsewhere").exception("push failed")
    text = log_text()
    assert EMAIL not in text and text.count("input_value=<redacted>") == 2
    assert "RuntimeError: wrapped" in text


def test_installing_twice_puts_one_filter_on_each_target(log_text):
    first, second = install_log_redaction(), install_log_redaction()
    assert first is second
    source = logging.getLogger(SOURCE_LOGGER)
    assert sum(isinstance(f, RedactionFilter) for f in source.filters) == 1


def test_scrub_cuts_to_the_last_input_type_of_the_line():
    line = "  bad [type=x, input_value='a, input_type=str] b@c.d', input_type=str]\nnext input_value=9"
    assert (
        scrub(line) == "  bad [type=x, input_value=<redacted>, input_type=str]\nnext input_value=<redacted>"
    )


# ---- body limit -------------------------------------------------------------------------------------


class FakeApp:
    """Reads the whole body, answers 200 with its length; remembers what it read."""

    def __init__(self) -> None:
        self.calls = 0
        self.messages: list[dict] = []

    async def __call__(self, scope, receive, send) -> None:
        self.calls += 1
        body, more = b"", True
        while more:
            message = await receive()
            self.messages.append(message)
            body += message.get("body", b"")
            more = message.get("more_body", False)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(len(body)).encode()})


def _call(
    messages: list[dict], headers: dict[str, str], path="/predict", method="POST", key: str | None = KEY
):
    """Run the middleware once -> (status, parsed or raw body, app, receive calls made)."""
    app = FakeApp()
    settings = ServeSettings(api_keys=KEY, max_body_bytes=LIMIT)
    gateway = GatewayMiddleware(app, Readiness(), settings)
    raw = [(name.encode(), value.encode()) for name, value in headers.items()]
    if key:
        raw.append((b"authorization", f"Bearer {key}".encode()))
    scope = {"type": "http", "method": method, "path": path, "headers": raw}
    pending, sent, received = list(messages), [], []

    async def receive():
        received.append(1)
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    asyncio.run(gateway(scope, receive, send))
    if not sent:
        return None, None, app, len(received)
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    if dict(sent[0]["headers"]).get(b"content-type") == b"application/json":
        body = json.loads(body)
    return sent[0]["status"], body, app, len(received)


def _chunked(sizes: list[int]) -> list[dict]:
    return [
        {"type": "http.request", "body": b"x" * size, "more_body": i < len(sizes) - 1}
        for i, size in enumerate(sizes)
    ]


def test_a_declared_length_over_the_limit_is_a_413_before_any_byte_is_read():
    status, body, app, reads = _call(_chunked([LIMIT + 1]), {"content-length": str(LIMIT + 1)})
    assert status == 413 and body["field"] == "body" and str(LIMIT) in body["error"]
    assert app.calls == 0 and reads == 0


def test_a_declared_length_at_the_limit_reaches_the_app_untouched():
    messages = _chunked([LIMIT // 2, LIMIT // 2])
    status, body, app, _ = _call(messages, {"content-length": str(LIMIT)})
    assert status == 200 and body == str(LIMIT).encode()
    assert app.messages == _chunked([LIMIT // 2, LIMIT // 2])


def test_a_chunked_body_past_the_limit_is_a_413_and_is_not_read_further():
    status, body, app, reads = _call(_chunked([1000, 1000, 1000, 1000]), {"transfer-encoding": "chunked"})
    assert status == 413 and body["field"] == "body"
    assert app.calls == 0 and reads == 3


def test_a_chunked_body_within_the_limit_reaches_the_app_whole():
    status, body, app, _ = _call(_chunked([1000, 1000, 48]), {"transfer-encoding": "chunked"})
    assert status == 200 and body == str(LIMIT).encode()
    assert app.messages == [{"type": "http.request", "body": b"x" * LIMIT, "more_body": False}]


def test_a_client_leaving_mid_body_gets_nothing_and_the_app_is_not_called():
    status, _, app, _ = _call(_chunked([1000, 1000])[:1], {"transfer-encoding": "chunked"})
    assert status is None and app.calls == 0


def test_a_content_length_that_is_not_a_number_is_a_400():
    status, body, app, _ = _call(_chunked([10]), {"content-length": "ten"})
    assert (status, body["field"], app.calls) == (400, "Content-Length", 0)


def test_the_key_is_checked_before_the_size_and_open_paths_stay_open():
    status, body, _, _ = _call(_chunked([LIMIT + 1]), {"content-length": str(LIMIT + 1)}, key=None)
    assert status == 401 and body["field"] == "Authorization"
    status, _, app, _ = _call(
        [{"type": "http.request", "body": b""}], {}, path="/livez", method="GET", key=None
    )
    assert status == 200 and app.calls == 1
    status, body, app, _ = _call([], {}, path="/readyz", method="GET", key=None)
    assert status == 503 and body["ready"] is False and app.calls == 0


def test_the_default_limit_holds_a_full_request_of_the_longest_ids():
    from serving.settings import MAX_CUSTOMERS

    longest = json.dumps({"customer_ids": ["C" * 64] * MAX_CUSTOMERS})
    assert len(longest.encode()) * 2 < ServeSettings().max_body_bytes
