"""Feast's own CLI on the repository, as its users run it: ``feast -c features/feature_repo ui``
serves Feast's web UI over a workspace, and without ``CXPREDICT_HOME`` every command says in one
line what to set instead of ending in a traceback."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import click
import httpx
import pytest
from feast.infra.registry.file import FileRegistryStore
from feast.repo_config import RegistryConfig

from cxpredict.workspace import HOME_VARIABLE
from features import store as feature_store
from features.feature_repo.definitions import REALTIME_VIEW
from features.feature_repo.workspace_registry import (
    MESSAGE,
    WorkspaceNotSet,
    WorkspaceRegistryStore,
    require_home,
)

FEAST = Path(sys.executable).with_name("feast")
REPO = Path(feature_store.__file__).parent / "feature_repo"
PROJECT = "cxpredict"
UI_START_TIMEOUT_S = 120


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_given_an_unexpanded_path_when_the_registry_store_is_built_then_workspace_not_set(tmp_path):
    config = RegistryConfig(path="${CXPREDICT_HOME}/feast/registry.db")

    with pytest.raises(WorkspaceNotSet) as raised:
        WorkspaceRegistryStore(config, tmp_path)

    assert isinstance(raised.value, click.ClickException) and isinstance(raised.value, RuntimeError)
    assert raised.value.format_message() == MESSAGE


def test_given_an_expanded_path_when_the_registry_store_is_built_then_it_is_feasts_file_store(tmp_path):
    path = tmp_path / "feast" / "registry.db"

    store = WorkspaceRegistryStore(RegistryConfig(path=str(path)), tmp_path)

    assert isinstance(store, FileRegistryStore)
    assert store._filepath == path
    with pytest.raises(FileNotFoundError, match="feast apply"):
        store.get_registry_proto()


@pytest.mark.parametrize("value", [None, ""])
def test_given_cxpredict_home_unset_or_empty_when_required_then_workspace_not_set(value, monkeypatch):
    if value is None:
        monkeypatch.delenv(HOME_VARIABLE, raising=False)
    else:
        monkeypatch.setenv(HOME_VARIABLE, value)

    with pytest.raises(WorkspaceNotSet, match=f"^{HOME_VARIABLE} is not set: export {HOME_VARIABLE}="):
        require_home()


@pytest.mark.slow
@pytest.mark.parametrize(
    "command",
    [["feature-views", "list"], ["apply"], ["ui", "--host", "127.0.0.1", "--port", "0"]],
    ids=["feature-views-list", "apply", "ui"],
)
def test_given_cxpredict_home_unset_when_feast_runs_on_the_repo_then_one_line_says_what_to_set(
    command, tmp_path
):
    env = {name: value for name, value in os.environ.items() if name != HOME_VARIABLE}

    run = subprocess.run(
        [str(FEAST), "-c", str(REPO), *command],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip

    assert run.returncode == 1, run.stdout + run.stderr
    assert "Traceback" not in run.stderr
    assert [line for line in run.stderr.splitlines() if line.strip()] == [f"Error: {MESSAGE}"]
    assert not (REPO / "${CXPREDICT_HOME}").exists()


@pytest.mark.slow
def test_given_a_featurised_workspace_when_feast_ui_runs_then_it_serves_the_page_and_the_repository(
    featurised_world, copy_workspace, tmp_path
):
    ws = copy_workspace(featurised_world.ws, tmp_path / "ws")
    expected_views = {view.name for view in feature_store.open_store(ws).list_feature_views()}
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "feast-ui.log"
    command = [str(FEAST), "-c", str(REPO), "ui", "--host", "127.0.0.1", "--port", str(port)]
    with open(log, "w") as handle:
        server = subprocess.Popen(
            command, stdout=handle, stderr=subprocess.STDOUT, cwd=tmp_path, start_new_session=True,
            env={**os.environ, HOME_VARIABLE: str(ws.root)},
        )  # fmt: skip
    try:
        projects = None
        deadline = time.monotonic() + UI_START_TIMEOUT_S
        while projects is None and time.monotonic() < deadline:
            assert server.poll() is None, log.read_text()[-3000:]
            try:
                projects = httpx.get(f"{base}/projects-list.json", timeout=5)
            except httpx.HTTPError:
                time.sleep(0.5)
        assert projects is not None, "feast ui did not answer: " + log.read_text()[-3000:]
        assert projects.status_code == 200, projects.text
        assert [project["id"] for project in projects.json()["projects"]] == [PROJECT]

        page = httpx.get(f"{base}/", timeout=10)
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "<title>Feast" in page.text
        scripts = re.findall(r'<script[^>]* src="([^"]+)"', page.text)
        assert scripts, page.text[:2000]
        for script in scripts:
            assert httpx.get(f"{base}/{script.lstrip('/')}", timeout=10).status_code == 200, script

        views = httpx.get(f"{base}/api/v1/feature_views", params={"project": PROJECT}, timeout=30)
        assert views.status_code == 200, views.text
        served = {view["spec"]["name"] for view in views.json()["featureViews"]}
        assert REALTIME_VIEW in expected_views and expected_views <= served
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
