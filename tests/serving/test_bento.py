"""`python -m serving.bento` builds a Bento pinned to today's champions, and the Bento keeps serving
exactly those versions after the alias moves."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest
import yaml

from serving.settings import ServeSettings, pinned_versions
from tests.serving.server_fixtures import API_KEY, ensure_champions


def test_pinned_versions_are_parsed_and_validated(monkeypatch):
    assert pinned_versions("churn=3, next_purchase=12") == {"churn": "3", "next_purchase": "12"}
    for wrong in ("churn", "churn=latest", "loyalty=2"):
        with pytest.raises(ValueError):
            pinned_versions(wrong)
    monkeypatch.setenv("CXPREDICT_MODEL_VERSIONS", "unmet_needs=4")
    assert ServeSettings().pinned() == {"unmet_needs": "4"}


@pytest.mark.slow
def test_a_bento_serves_the_versions_it_was_built_with_after_the_alias_moves(
    private_workspace, tmp_path, monkeypatch
):
    from serving.bento import build, champion_versions
    from cxpredict import tasks as registry
    from training.tracking import resolve_tracking, tracking_session

    monkeypatch.setenv("BENTOML_HOME", str(tmp_path / "bentoml"))
    champions = ensure_champions(private_workspace)
    # when the Bento is built
    tag, versions = build(private_workspace)
    # then it pins today's champions, in its sources and its labels
    assert versions == champions == champion_versions(private_workspace)
    name, version = tag.split(":")
    bento = tmp_path / "bentoml" / "bentos" / name / version
    assert json.loads((bento / "src" / "pinned_models.json").read_text()) == versions
    labels = yaml.safe_load((bento / "bento.yaml").read_text())["labels"]
    assert {f"{task}_version": version for task, version in versions.items()}.items() <= labels.items()
    # when the churn champion moves to a new version afterwards
    with tracking_session(resolve_tracking(private_workspace)) as client:
        current = client.get_model_version_by_alias(registry.get("churn").model_name, "champion")
        new = client.create_model_version(registry.get("churn").model_name, current.source, current.run_id)
        client.set_registered_model_alias(registry.get("churn").model_name, "champion", new.version)
    # then the served Bento still answers with the pinned version
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = dict(os.environ, CXPREDICT_HOME=str(private_workspace.root), CXPREDICT_API_KEYS=API_KEY)
    env.pop("MLFLOW_TRACKING_URI", None)
    log = (tmp_path / "bento.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "bentoml", "serve", tag, "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True, cwd=tmp_path,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        ready = None
        while time.monotonic() < deadline and server.poll() is None:
            try:
                ready = httpx.get(f"{url}/readyz", timeout=2)
                if ready.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        assert ready is not None and ready.status_code == 200, (tmp_path / "bento.log").read_text()[-3000:]
        headers = {"Authorization": f"Bearer {API_KEY}"}
        reload = httpx.post(f"{url}/admin/reload", json={}, headers=headers, timeout=30).json()
        served = httpx.get(f"{url}/readyz", timeout=5).json()["models"]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(60)
    assert reload["changed"] is False
    assert {task: ref["version"] for task, ref in served.items()} == versions
    assert {ref["alias"] for ref in served.values()} == {"pinned"} and versions["churn"] != str(new.version)
