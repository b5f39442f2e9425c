"""ASGI middleware in front of the BentoML app: API keys, a body-size limit, a readiness answer
that says why, and the API docs.

Every path except the open ones (health, metrics, API docs) needs ``Authorization: Bearer <key>``;
keys are compared as SHA-256 digests in constant time and never logged. ``/readyz`` is answered
here because BentoML's own only says "not ready": an MLOps engineer needs to read which part is
missing (feature store, a task's champion). No body larger than ``ServeSettings.max_body_bytes``
reaches BentoML (which would read it whole into memory): 413 ``{"error", "field": "body"}``.
Building the middleware (once per server worker, after BentoML configured logging) also installs
the log redaction of ``serving.logs``, so a refused request's values never reach the log.

Docs: ``/docs.json`` is the document the service hands in (``openapi``: BentoML's, completed by
``serving.openapi``), built on first request and kept; ``/docs`` is a Swagger UI page over it, drawn
with the Swagger UI assets BentoML serves under ``/static_content/`` (BentoML's own page stays at
``/``). Starlette's plain-text 404 and 405 become JSON ``{"error", "field": null}`` like every other
error of the API.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Callable

from serving.logs import install_log_redaction
from serving.settings import ServeSettings, digest

DOCS_PATH = "/docs"
DOCUMENT_PATH = "/docs.json"
OPEN_PATHS = frozenset({"/livez", "/healthz", "/metrics", DOCS_PATH, DOCUMENT_PATH, "/", "/favicon.ico"})
OPEN_PREFIXES = ("/static_content/",)
READY_PATH = "/readyz"
PLAIN_ERRORS = {404: "this server has no such endpoint", 405: "this endpoint does not accept this method"}
"""Starlette's plain-text answers the gateway turns into JSON errors."""

log = logging.getLogger("cxpredict.serving")

SWAGGER_PAGE = b"""<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>CX Predict API</title>
  <link rel="stylesheet" href="./static_content/swagger-ui.css">
  <link rel="icon" type="image/png" href="./static_content/favicon-light-32x32.png">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="./static_content/swagger-ui-bundle.js"></script>
  <script>
    window.onload = function () {
      window.ui = SwaggerUIBundle({
        url: "./docs.json",
        dom_id: "#swagger-ui",
        deepLinking: true,
        presets: [SwaggerUIBundle.presets.apis],
        layout: "BaseLayout",
      });
    };
  </script>
</body>
</html>
"""
"""Relative links, so the page also works behind a proxy that serves the API under a path prefix."""


class Readiness:
    """Filled by the service instance when it starts: ``report()`` -> (ready, details)."""

    def __init__(self) -> None:
        self.report: Callable[[], tuple[bool, dict]] = lambda: (
            False,
            {"reasons": ["the service is starting"]},
        )


async def _send(send, status: int, payload: bytes, media_type: bytes, headers: tuple = ()) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", media_type),
                (b"content-length", str(len(payload)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


async def _send_json(send, status: int, body: dict, headers: tuple = ()) -> None:
    await _send(send, status, json.dumps(body).encode(), b"application/json", headers)


def _json_errors(send):
    """``send`` with Starlette's plain-text 404 and 405 (unknown path or method) replaced by JSON
    errors; the 405's ``Allow`` header is kept."""
    replaced = False

    async def sending(message) -> None:
        nonlocal replaced
        if message["type"] == "http.response.start" and message["status"] in PLAIN_ERRORS:
            headers = message.get("headers", ())
            media = next((value for name, value in headers if name.lower() == b"content-type"), b"")
            if media.startswith(b"text/plain"):
                replaced = True
                kept = tuple((name, value) for name, value in headers if name.lower() == b"allow")
                status = message["status"]
                await _send_json(send, status, {"error": PLAIN_ERRORS[status], "field": None}, kept)
                return
        if replaced and message["type"] == "http.response.body":
            return
        await send(message)

    return sending


class GatewayMiddleware:
    def __init__(
        self,
        app,
        readiness: Readiness,
        settings: ServeSettings | None = None,
        openapi: Callable[[], dict] | None = None,
    ) -> None:
        """``openapi`` builds the document ``/docs.json`` serves (None: BentoML's own answers)."""
        settings = settings or ServeSettings()
        self.app = app
        self.readiness = readiness
        self.digests = settings.key_digests()
        self.max_body = settings.max_body_bytes
        self.openapi = openapi
        self._document: bytes | None = None
        install_log_redaction()

    async def _send_document(self, send) -> None:
        """The OpenAPI document, built once (it depends only on the code and the task registry)."""
        if self._document is None:
            try:
                self._document = json.dumps(self.openapi(), separators=(",", ":")).encode()
            except Exception:
                log.exception("the OpenAPI document could not be built")
                await _send_json(
                    send, 500, {"error": "the OpenAPI document could not be built", "field": None}
                )
                return
        await _send(send, 200, self._document, b"application/json")

    def _authorised(self, scope) -> bool:
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                scheme, _, token = value.decode("latin-1").partition(" ")
                if scheme.lower() != "bearer" or not token.strip():
                    return False
                offered = digest(token.strip())
                return any(hmac.compare_digest(offered, known) for known in self.digests)
        return False

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        if path == READY_PATH:
            ready, details = self.readiness.report()
            await _send_json(send, 200 if ready else 503, {"ready": ready, **details})
            return
        if path in (DOCS_PATH, DOCUMENT_PATH) and scope.get("method") in ("GET", "HEAD"):
            if path == DOCS_PATH:
                await _send(send, 200, SWAGGER_PAGE, b"text/html; charset=utf-8")
                return
            if self.openapi is not None:
                await self._send_document(send)
                return
        if path in OPEN_PATHS or path.startswith(OPEN_PREFIXES) or scope.get("method") == "OPTIONS":
            await self._bounded(scope, receive, send)
            return
        if not self._authorised(scope):
            error = (
                "missing or invalid API key" if self.digests else "no API keys are configured on this server"
            )
            await _send_json(
                send,
                401,
                {"error": error, "field": "Authorization"},
                ((b"www-authenticate", b'Bearer realm="cxpredict"'),),
            )
            return
        await self._bounded(scope, receive, send)

    async def _bounded(self, scope, receive, send) -> None:
        """The app, never given more than ``max_body`` bytes of body.

        A declared Content-Length above the limit is refused before a byte is read (the server
        guarantees no more than a declared length arrives). A chunked body is read here up to the
        limit, then handed on whole, or refused as soon as it passes the limit (the server discards
        the rest). A client that leaves mid-body gets nothing."""
        chunked = False
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                if not value.strip().isdigit():
                    await _send_json(
                        send, 400, {"error": "Content-Length must be a byte count", "field": "Content-Length"}
                    )
                    return
                if int(value) > self.max_body:
                    await self._too_large(send)
                    return
            elif name == b"transfer-encoding":
                chunked = True
        send = _json_errors(send)
        if not chunked:
            await self.app(scope, receive, send)
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_body:
                await self._too_large(send)
                return
            if not message.get("more_body", False):
                break
        pending = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def replay():
            return pending.pop() if pending else await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, send) -> None:
        error = f"the request body is larger than the {self.max_body} bytes this server accepts"
        await _send_json(send, 413, {"error": error, "field": "body"})
