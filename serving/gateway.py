"""ASGI middleware in front of the BentoML app: API keys, and a readiness answer that says why.

Every path except the open ones (health, metrics, API docs) needs ``Authorization: Bearer <key>``;
keys are compared as SHA-256 digests in constant time and never logged. ``/readyz`` is answered
here because BentoML's own only says "not ready": an MLOps engineer needs to read which part is
missing (feature store, a task's champion).
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable

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
        self.app = app
        self.readiness = readiness
        self.digests = (settings or ServeSettings()).key_digests()

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
            await self.app(scope, receive, send)
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
        await self.app(scope, receive, send)
