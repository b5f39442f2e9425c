"""A real API server over HTTP on a small trained world (see tests/conftest.py for the world).

``served_workspace`` is a private copy of the trained world, materialised into its online store, with
a ``champion`` for every task. ``api`` is one server for the whole session (read-mostly tests);
tests that change the registry or break the store start their own with ``start_server``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest

from serving.supervisor import stop_group

API_KEY = "test-key-0123456789"
READY_TIMEOUT_S = 180


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Server:
    url: str
    ws: object
    process: subprocess.Popen
    log: Path

    def client(self, key: str | None = API_KEY, timeout: float = 30.0) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def _tree(self) -> list[psutil.Process]:
        """The server and every process under it (BentoML's workers lead process groups of their
        own, so signalling the server's group alone leaves them running once the server is gone)."""
        try:
            root = psutil.Process(self.process.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def kill(self) -> None:
        """SIGKILL the server and all its workers at once, as a crash of the host would."""
        for process in self._tree():
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass
        self.process.wait(10)

    def stop(self) -> None:
        tree = self._tree()
        stop_group(self.process)
        psutil.wait_procs(tree, timeout=10)
        for process in tree:
            if process.is_running():
                process.kill()


def start_server(
    ws,
    log: Path,
    *,
    reload_seconds: float = 0,
    wait_ready: bool = True,
    env: dict | None = None,
    workers: int | None = None,
) -> Server:
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "cxpredict.cli",
        "serve",
        "--workspace",
        str(ws.root),
        "--port",
        str(port),
        "--reload-seconds",
        str(reload_seconds),
        *(["--workers", str(workers)] if workers else []),
    ]
    environment = dict(os.environ, CXPREDICT_API_KEYS=f"other-key,{API_KEY}", **(env or {}))
    environment.pop("MLFLOW_TRACKING_URI", None)
    handle = log.open("wb")
    process = subprocess.Popen(
        command, stdout=handle, stderr=subprocess.STDOUT, env=environment, start_new_session=True
    )
    server = Server(f"http://127.0.0.1:{port}", ws, process, log)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            answer = httpx.get(f"{server.url}/readyz", timeout=2)
            if answer.status_code == 200 or (not wait_ready and answer.status_code == 503):
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    server.stop()
    raise RuntimeError(f"server not ready after {READY_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")


def ensure_champions(ws) -> dict[str, str]:
    """Every task gets a champion (the latest version where training left none): serving needs one."""
    from cxpredict import tasks as registry
    from training.tracking import CHAMPION, resolve_tracking, tracking_session, version_info

    target = resolve_tracking(ws)
    versions = {}
    with tracking_session(target) as client:
        for task, name in ((s.name, s.model_name) for s in registry.all_tasks()):
            info = version_info(target, task, CHAMPION)
            if info is None:
                latest = max(int(v.version) for v in client.search_model_versions(f"name='{name}'"))
                client.set_registered_model_alias(name, CHAMPION, str(latest))
                info = {"version": str(latest)}
            versions[task] = info["version"]
    return versions


@pytest.fixture(scope="session")
def served_workspace(trained_world, tmp_path_factory, copy_workspace):
    from features.store import materialize_latest

    world, _ = trained_world
    ws = copy_workspace(world.ws, tmp_path_factory.mktemp("served") / "ws")
    materialize_latest(ws, end=world.features_as_of)
    ensure_champions(ws)
    return ws


@pytest.fixture(scope="session")
def api(served_workspace, tmp_path_factory):
    server = start_server(served_workspace, tmp_path_factory.mktemp("logs") / "api.log")
    yield server
    server.stop()


@pytest.fixture()
def private_workspace(served_workspace, tmp_path, copy_workspace):
    """A copy of the served world a test may change (registry, store)."""
    ws = copy_workspace(served_workspace, tmp_path / "ws")
    return ws


@pytest.fixture(scope="session")
def known_ids(served_workspace) -> list[str]:
    """Customers with features in the online store and profiling consent, in a fixed order."""
    from features.store import open_store
    from features.online import OnlineReader, EVENT_TIME
    from training.data import known_customers, withheld_consent
    from datetime import UTC, datetime

    features_as_of = datetime(2026, 11, 1, tzinfo=UTC)
    refused = withheld_consent(served_workspace, features_as_of)
    ids = [c for c in known_customers(served_workspace, features_as_of).tolist() if c not in refused]
    stamps = OnlineReader(open_store(served_workspace)).read(
        ids, "churn", datetime.now(UTC), event_times=True
    )[EVENT_TIME]
    return [c for c, stamp in zip(ids, stamps, strict=True) if stamp is not None]


def bundle_of(ws, task: str):
    """The champion's ModelBundle straight from the registry (the reference the API must agree with)."""
    from training.tracking import load_model, resolve_tracking

    return load_model(resolve_tracking(ws), task).unwrap_python_model().bundle
