"""A Bento the BentoML way: ``bentoml build`` works at the repository root, and ``python -m
serving.bento`` imports today's champions into the BentoML model store and builds a Bento that
carries them: exported to an empty BentoML home, it serves exactly those versions after the alias
moves, with the MLflow registry out of reach."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import yaml

from serving.bento import BENTOFILE, PACKAGES, PROJECT, REQUIREMENTS, _uv, bentofile, requirements
from serving.settings import PINNED_FILE, ServeSettings, pinned_versions
from serving.supervisor import stop_group
from tests.serving.server_fixtures import API_KEY, ensure_champions, free_port

READY_TIMEOUT_S = 180


def test_pinned_versions_are_parsed_and_validated(monkeypatch):
    assert pinned_versions("churn=3, next_purchase=12") == {"churn": "3", "next_purchase": "12"}
    for wrong in ("churn", "churn=latest", "loyalty=2"):
        with pytest.raises(ValueError):
            pinned_versions(wrong)
    monkeypatch.setenv("CXPREDICT_MODEL_VERSIONS", "unmet_needs=4")
    assert ServeSettings().pinned() == {"unmet_needs": "4"}


def _pins(text: str) -> set[str]:
    """``name==version`` of each requirement (comments and environment markers left out)."""
    lines = (line.split("#")[0].split(";")[0].strip() for line in text.splitlines())
    return {line for line in lines if line}


@pytest.mark.skipif(not Path(_uv()).exists(), reason="uv is not installed")
def test_the_committed_requirements_are_the_lock_exported():
    # `bentoml build` at the root installs requirements.txt: it must say what uv.lock says
    committed = (PROJECT / REQUIREMENTS).read_text()
    assert _pins(committed) == _pins(requirements()), (
        "requirements.txt is stale: uv export --frozen --no-hashes --no-dev --no-emit-project -o requirements.txt"
    )


def test_a_release_is_built_from_the_repository_bentofile_plus_its_models_and_pins():
    base = yaml.safe_load(BENTOFILE.read_text())
    versions = {"churn": "3", "next_purchase": "2"}
    models = {"churn": "cx-churn:v3-0123456789", "next_purchase": "cx-next-purchase:v2-0123456789"}
    release = bentofile(versions, models)
    for option in ("service", "name", "python", "docker", "exclude"):
        assert release[option] == base[option]
    assert release["include"] == [*base["include"], PINNED_FILE.name]
    assert release["models"] == [{"tag": tag, "alias": task} for task, tag in models.items()]
    assert {"churn_version": "3", "next_purchase_version": "2"}.items() <= release["labels"].items()
    assert {"name": "CXPREDICT_RELOAD_SECONDS", "value": "0"} in release["envs"]
    assert base["python"]["requirements_txt"] == REQUIREMENTS


def _bentoml(*args: str, env: dict[str, str], cwd: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "bentoml", *args], capture_output=True, text=True, env=env, cwd=cwd
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _sources(root: Path) -> set[str]:
    return {
        path.relative_to(root).as_posix()
        for package in PACKAGES
        for path in (root / package).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }


@pytest.mark.slow
def test_bentoml_build_at_the_repository_root_packs_the_four_packages(tmp_path):
    env = dict(os.environ, BENTOML_HOME=str(tmp_path / "bentoml"))
    env["PATH"] = os.pathsep.join([str(Path(_uv()).parent), env.get("PATH", "")])
    tag = _bentoml("build", "--output", "tag", env=env, cwd=PROJECT).strip().splitlines()[-1]
    name, version = tag.removeprefix("__tag__:").split(":")
    bento = tmp_path / "bentoml" / "bentos" / name / version
    assert _sources(bento / "src") == _sources(PROJECT)
    assert not (bento / "src" / PINNED_FILE.name).exists()
    info = yaml.safe_load((bento / "bento.yaml").read_text())
    assert info["models"] == [] and info["service"] == "serving.service:CXPredict"
    installed = (bento / "env" / "python" / "requirements.txt").read_text()
    assert _pins((PROJECT / REQUIREMENTS).read_text()) <= _pins(installed)


def _wait_ready(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"the Bento did not get ready:\n{log.read_text()[-3000:]}")


@pytest.mark.slow
def test_a_bento_carries_its_champions_and_serves_them_without_the_registry(
    private_workspace, known_ids, tmp_path, monkeypatch
):
    import bentoml
    import mlflow
    import pandas as pd

    from cxpredict import tasks as registry
    from serving.bento import build, champion_versions
    from serving.champions import load_version
    from serving.online_features import OnlineFeatures
    from serving.predictor import task_blocks
    from training.tracking import resolve_tracking, tracking_session

    home = tmp_path / "bentoml"
    monkeypatch.setenv("BENTOML_HOME", str(home))
    ws = private_workspace
    target = resolve_tracking(ws)
    champions = ensure_champions(ws)
    # when the Bento is built
    tag, versions = build(ws)
    # then it pins today's champions, in its sources and its labels
    assert versions == champions == champion_versions(ws)
    bento = home / "bentos" / Path(*tag.split(":"))
    assert json.loads((bento / "src" / PINNED_FILE.name).read_text()) == versions
    info = yaml.safe_load((bento / "bento.yaml").read_text())
    labels = {f"{task}_version": version for task, version in versions.items()}
    assert labels.items() <= info["labels"].items()
    # and it references one imported model per task, aliased by the task, listed by `bentoml models list`
    models = {model["alias"]: model["tag"] for model in info["models"]}
    assert set(models) == set(versions)
    for task, model_tag in models.items():
        assert model_tag.startswith(f"{registry.get(task).model_name}:v{versions[task]}-")
    listed = json.loads(_bentoml("models", "list", "--output", "json", env=dict(os.environ), cwd=tmp_path))
    assert {model["tag"] for model in listed} >= set(models.values())
    assert {model["module"] for model in listed if model["tag"] in models.values()} == {"bentoml.mlflow"}
    # and each stored model loads as the MLflow pyfunc model of its registered version
    ids = known_ids[:30]
    reference = {task: load_version(target, task, versions[task], "pinned") for task in versions}
    services = [model.feature_service for model in reference.values()]
    columns = OnlineFeatures(ws).read(ids, services, datetime.now(UTC)).columns
    with tracking_session(target):
        for task, model_tag in models.items():
            stored = bentoml.mlflow.load_model(model_tag).unwrap_python_model().bundle
            registered = mlflow.pyfunc.load_model(f"models:/{registry.get(task).model_name}/{versions[task]}")
            frame = pd.DataFrame({feature: columns[feature] for feature in stored.feature_names})
            assert stored.predict(frame).equals(registered.unwrap_python_model().bundle.predict(frame))
    # when the churn champion moves to a new version afterwards
    churn = registry.get("churn").model_name
    with tracking_session(target) as client:
        current = client.get_model_version_by_alias(churn, "champion")
        new = client.create_model_version(churn, current.source, current.run_id)
        client.set_registered_model_alias(churn, "champion", new.version)
    # and the Bento is exported and imported into an empty BentoML home (another machine, say)
    elsewhere = dict(os.environ, BENTOML_HOME=str(tmp_path / "elsewhere"))
    _bentoml("export", tag, str(tmp_path / "release.bento"), env=dict(os.environ), cwd=tmp_path)
    _bentoml("import", str(tmp_path / "release.bento"), env=elsewhere, cwd=tmp_path)
    imported = json.loads(_bentoml("models", "list", "--output", "json", env=elsewhere, cwd=tmp_path))
    assert {model["tag"] for model in imported} == set(models.values())
    # and the registry is out of reach: no tracking server answers, the workspace's store is gone
    shutil.move(ws.mlflow_dir, ws.root / "mlflow-moved-away")
    port = free_port()
    env = dict(elsewhere, CXPREDICT_HOME=str(ws.root), CXPREDICT_API_KEYS=API_KEY)
    env["MLFLOW_TRACKING_URI"] = f"http://127.0.0.1:{free_port()}"
    log = tmp_path / "bento.log"
    with log.open("wb") as handle:
        server = subprocess.Popen(
            [sys.executable, "-m", "bentoml", "serve", tag, "--port", str(port)],
            stdout=handle, stderr=subprocess.STDOUT, env=env, start_new_session=True, cwd=tmp_path,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, server, log)
        headers = {"Authorization": f"Bearer {API_KEY}"}
        reload = httpx.post(f"{url}/admin/reload", json={}, headers=headers, timeout=30).json()
        served = httpx.get(f"{url}/readyz", timeout=5).json()["models"]
        body = httpx.post(f"{url}/predict", json={"customer_ids": ids}, headers=headers, timeout=30).json()
    finally:
        stop_group(server)
    # then it serves the pinned versions, from its own models
    assert reload["changed"] is False
    assert {task: ref["version"] for task, ref in served.items()} == versions
    assert versions["churn"] != str(new.version)
    assert {ref["alias"] for ref in served.values()} == {"pinned"}
    assert {task: ref["version"] for task, ref in body["models"].items()} == versions
    # and its predictions are the registered versions' on the same features
    moment = datetime.fromisoformat(body["request_time"].replace("Z", "+00:00"))
    features = OnlineFeatures(ws).read(ids, services, moment)
    drivers = ServeSettings().drivers
    for task, model in reference.items():
        expected = json.loads(json.dumps(task_blocks(model, features.columns, len(ids), drivers)))
        assert [prediction[task] for prediction in body["predictions"]] == expected, task
