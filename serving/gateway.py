"""ASGI middleware in front of the BentoML app: API keys, a body-size limit, and a readiness answer
that says why.

Every path except the open ones (health, metrics, API docs) needs ``Authorization: Bearer <key>``;
keys are compared as SHA-256 digests in constant time and never logged. ``/readyz`` is answered
here because BentoML's own only says "not ready": an MLOps engineer needs to read which part is
missing (feature store, a task's champion). No body larger than ``ServeSettings.max_body_bytes``
reaches BentoML (which would read it whole into memory): 413 ``{"error", "field": "body"}``.
Building the middleware (once per server worker, after BentoML configured logging) also installs
the log redaction of ``serving.logs``, so a refused request's values never reach the log.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable

from serving.logs import install_log_redaction
from serving.settings import ServeSettings, digest

OPEN_PATHS = frozenset({"/livez", "/healthz", "/metrics", "/docs", "/docs.json", "/", "/favicon.ico"})
OPEN_PREFIXES = ("/static_content/",)
READY_PATH = "/readyz"


class Readiness:
    """Filled by the service instance when it starts: ``report()`` -> (ready, details)."""

    def __init__(self) -> None:
        self.report: Callable[[], tuple[bool, dict]] = lambda: (
            False,
            {"reasons": ["the service is starting"]},
        )


async def _send_json(send, status: int, body: dict, headers: tuple = ()) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


class GatewayMiddleware:
    def __init__(self, app, readiness: Readiness, settings: ServeSettings | None = None) -> None:
        settings = settings or ServeSettings()
        self.app = app
        self.readiness = readiness
        self.digests = settings.key_digests()
        self.max_body = settings.max_body_bytes
        install_log_redaction()

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
