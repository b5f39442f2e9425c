"""Request values stay out of the server log: a filter for the records BentoML writes on refused requests.

BentoML logs every exception raised while it handles a request, traceback included
(``_bentoml_impl.server.app.ServiceAppFactory.api_endpoint_wrapper`` calls
``bentoml._internal.server.http_app.log_exception``, logger ``bentoml._internal.server.http_app``, level
ERROR). For a body that fails the input schema the exception is a pydantic ``ValidationError``, whose
text quotes each offending value (``input_value='a@b.com'``): an email address sent by mistake as a
customer id would be written to the log on every refused request.

``install_log_redaction()`` (idempotent, called when the gateway is built in each server worker) makes:

- a refused request (input ``ValidationError``, a 4xx ``BentoMLException`` or Starlette
  ``HTTPException``, an unreadable body) one WARNING line, ``request refused: POST /events:
  ValidationError, 1 error: customer_id (string_pattern_mismatch)``: route, error type and field
  locations, never values nor traceback (the client's mistake, not the server's: no ERROR);
- any other record keep its text and traceback, with every pydantic ``input_value=...`` cut out.
"""

from __future__ import annotations

import logging
import re
import traceback

SOURCE_LOGGER = "bentoml._internal.server.http_app"
"""Where BentoML's ``log_exception`` writes (``Exception on <path> [<method>]`` with ``exc_info``)."""
HANDLER_LOGGERS = ("", "bentoml", "uvicorn.error")
"""Loggers whose handlers also get the filter, for records logged elsewhere that quote input values."""
INPUT_MODEL = "Input"
"""The name BentoML gives the model it validates a request's keyword arguments with."""
MAX_LOCATIONS = 10
REDACTED = "input_value=<redacted>"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


def scrub(text: str) -> str:
    """``text`` with the value of every pydantic ``input_value=`` removed (to the line's last
    ``, input_type=``, else to the end of the line: a value's repr never spans lines)."""
    if "input_value=" not in text:
        return text
    lines = []
    for line in text.split("\n"):
        start = line.find("input_value=")
        if start >= 0:
            end = line.rfind(", input_type=")
            line = line[:start] + REDACTED + (line[end:] if end > start else "")
        lines.append(line)
    return "\n".join(lines)


def _location(loc: tuple) -> str:
    """A field location from names and list positions only: a dict key is the client's data."""
    parts = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif isinstance(item, str) and _NAME.match(item):
            parts.append(f".{item}" if parts else item)
        else:
            parts.append("[<key>]")
    return "".join(parts) or "body"


def _request_error(exc: BaseException) -> str | None:
    """The one-line description of ``exc`` when it is the client's fault (None: a server error)."""
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        if exc.title != INPUT_MODEL:
            return None
        errors = exc.errors(include_url=False, include_context=False, include_input=False)
        shown = [f"{_location(e['loc'])} ({e['type']})" for e in errors[:MAX_LOCATIONS]]
        if len(errors) > MAX_LOCATIONS:
            shown.append(f"and {len(errors) - MAX_LOCATIONS} more")
        count = f"{len(errors)} error{'s' if len(errors) != 1 else ''}"
        return f"ValidationError, {count}: {', '.join(shown)}"
    from bentoml.exceptions import BentoMLException

    if isinstance(exc, BentoMLException) and int(exc.error_code) < 500:
        return f"{type(exc).__name__} (HTTP {int(exc.error_code)})"
    from starlette.exceptions import HTTPException
    from starlette.formparsers import MultiPartException
    from starlette.requests import ClientDisconnect

    if isinstance(exc, HTTPException) and exc.status_code < 500:  # e.g. a multipart body without boundary
        return f"{type(exc).__name__} (HTTP {exc.status_code})"
    if isinstance(exc, (ClientDisconnect, MultiPartException)):
        return type(exc).__name__
    return None


class RedactionFilter(logging.Filter):
    """Rewrites records in place (never drops one): see the module docstring for the contract."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        summary = _request_error(exc) if exc is not None else None
        if summary is not None:
            if record.msg == "Exception on %s [%s]" and isinstance(record.args, tuple) and record.args:
                path, method = (str(arg) for arg in record.args[:2])
                summary = f"request refused: {method} {path}: {summary}"
            else:
                summary = f"request refused: {summary}"
            record.msg, record.args = summary, ()
            record.exc_info, record.exc_text, record.stack_info = None, None, None
            if record.levelno > logging.WARNING:
                record.levelno, record.levelname = logging.WARNING, logging.getLevelName(logging.WARNING)
                if hasattr(record, "levelname_bracketed"):  # set by BentoML's own handler filter
                    record.levelname_bracketed = f"[{record.levelname}]"
            return True
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is the logging module's to report
            return True
        if "input_value=" in message:
            record.msg, record.args = scrub(message), ()
        if record.exc_info and record.exc_info[1] is not None:
            text = record.exc_text or "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
            if "input_value=" in text:
                record.exc_info, record.exc_text = None, scrub(text)
        elif record.exc_text:
            record.exc_text = scrub(record.exc_text)
        return True


def install_log_redaction() -> RedactionFilter:
    """Put one ``RedactionFilter`` on BentoML's request-error logger and on the handlers of the root,
    ``bentoml`` and ``uvicorn.error`` loggers as configured now (call it after BentoML configured
    logging: handlers added later are not covered). Safe to call more than once."""
    targets: list[logging.Filterer] = [logging.getLogger(SOURCE_LOGGER)]
    for name in HANDLER_LOGGERS:
        targets += logging.getLogger(name).handlers
    existing = next((f for target in targets for f in target.filters if isinstance(f, RedactionFilter)), None)
    redaction = existing or RedactionFilter()
    for target in targets:
        if not any(isinstance(f, RedactionFilter) for f in target.filters):
            target.addFilter(redaction)
    return redaction
