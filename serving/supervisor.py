"""Starting and watching the API server: its environment, API keys and process (``cxpredict serve``
and the demo). The service itself is ``serving.service``."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml

from cxpredict.workspace import Workspace

READY_TIMEOUT_S = 180.0
SERVICE = "cxpredict"
"""The service's name in BentoML's configuration (``bentoml.service(name=...)``)."""
CONFIG_OVERRIDES = "BENTOML_CONFIG_OVERRIDES"
"""BentoML 1.4's configuration overrides: a JSON object merged into its configuration."""
DEPRECATED_OPTIONS = "BENTOML_CONFIG_OPTIONS"
"""The ``key.path=value ...`` overrides BentoML 1.4 deprecates (it warns at start) for ``CONFIG_OVERRIDES``."""


class PortInUse(OSError):
    """Something already listens on the port the API was asked to serve on."""


def ensure_port_free(host: str, port: int) -> None:
    """Refuse a port another process listens on (say, the server of an earlier demo still running):
    the new server could not bind it, and requests would reach the old one."""
    probe = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a closed server's TIME_WAIT is no owner
    try:
        probe.bind((host, port))
    except OSError:
        raise PortInUse(
            f"port {port} on {host} is already in use (another API server?): stop it or choose --port"
        ) from None
    finally:
        probe.close()


def api_keys_file(ws: Workspace) -> Path:
    """The workspace's API keys file, created with one random key when no key is configured.

    The key is written to a file readable by the owner only and never printed, so it does not end
    up in terminal logs; callers read it from the file."""
    path = ws.serving_dir / "api_keys"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# API keys of this workspace's server, one per line\n{secrets.token_urlsafe(24)}\n")
        path.chmod(0o600)
    return path


def first_key(env: dict[str, str]) -> str:
    """A key the server accepts, from its environment (for the demo's own request)."""
    key = (env.get("CXPREDICT_API_KEYS") or "").split(",")[0].strip()
    if key or not env.get("CXPREDICT_API_KEYS_FILE"):
        return key
    lines = Path(env["CXPREDICT_API_KEYS_FILE"]).read_text().splitlines()
    return next(line.split("#")[0].strip() for line in lines if line.split("#")[0].strip())


def default_workers() -> int:
    return max(1, min(os.cpu_count() or 1, 4))


def serve_command(port: int, host: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "bentoml",
        "serve",
        "serving.service:CXPredict",
        "--port",
        str(port),
        "--host",
        host,
    ]


def serve_environment(
    ws: Workspace, alias: str, reload_seconds: float, workers: int | None = None
) -> dict[str, str]:
    """The server's environment: workspace, alias, poll period, worker count, BentoML's home (inside
    the workspace) and API keys (a key file is created in the workspace when no key is configured)."""
    env = dict(os.environ, CXPREDICT_HOME=str(ws.root), CXPREDICT_MODEL_ALIAS=alias)
    # BentoML keeps its Prometheus multiprocess folder under BENTOML_HOME and empties it when a
    # server starts: one home per workspace, so two servers never share or delete each other's metrics.
    env["BENTOML_HOME"] = str(ws.serving_dir / "bentoml")
    env["CXPREDICT_RELOAD_SECONDS"] = str(reload_seconds)
    env[CONFIG_OVERRIDES] = config_overrides(env, workers or default_workers())
    env.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if not env.get("CXPREDICT_API_KEYS") and not env.get("CXPREDICT_API_KEYS_FILE"):
        env["CXPREDICT_API_KEYS_FILE"] = str(api_keys_file(ws))
    return env


def config_overrides(env: dict[str, str], workers: int) -> str:
    """The JSON of ``BENTOML_CONFIG_OVERRIDES``: the caller's own overrides, then those of a deprecated
    ``BENTOML_CONFIG_OPTIONS`` translated (and removed from ``env``, so BentoML has nothing to warn
    about), then the service's worker count, each winning over the ones before."""
    merged = json.loads(env.get(CONFIG_OVERRIDES) or "{}")
    for part in env.pop(DEPRECATED_OPTIONS, "").split():
        path, _, value = part.partition("=")
        _merge(merged, _nest(path.split("."), yaml.safe_load(value)))
    _merge(merged, {"services": {SERVICE: {"workers": workers}}})
    return json.dumps(merged, separators=(",", ":"))


def _nest(keys: list[str], value: object) -> dict:
    for key in reversed(keys):
        value = {key: value}
    return value


def _merge(into: dict, update: dict) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


class Server:
    """An API server in its own process group, its output appended to ``<ws>/serving/server.log``."""

    def __init__(self, ws: Workspace, env: dict[str, str], port: int, host: str = "127.0.0.1") -> None:
        ensure_port_free(host, port)
        self.url = f"http://{host}:{port}"
        self.log_path = ws.serving_dir / "server.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            serve_command(port, host),
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_answering(self, timeout_s: float = READY_TIMEOUT_S) -> bool:
        """Until ``/readyz`` answers (ready or not) or the process exits; False when it exited."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code in (200, 503):
                    return True
            except httpx.TransportError:
                time.sleep(0.5)
        return self.process.poll() is None

    def serve_until_interrupted(self, on_interrupt=lambda: None) -> None:
        """Wait in the foreground until the server exits or Ctrl-C / SIGTERM, then stop it."""

        def interrupted(*_: object) -> None:
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, interrupted)
        try:
            self.process.wait()
        except KeyboardInterrupt:
            on_interrupt()
        finally:
            self.stop()

    def stop(self) -> None:
        stop_group(self.process)
        self._log.close()


def stop_group(process: subprocess.Popen, grace_s: float = 30.0) -> None:
    """SIGTERM to the process group (graceful: requests in flight finish), SIGKILL after ``grace_s``."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
