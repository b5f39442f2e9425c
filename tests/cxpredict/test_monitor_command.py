"""``cxpredict monitor``: exit codes for schedulers (0 healthy, 3 threshold crossed, 2 nothing to
monitor), the JSON and HTML reports, the ``cx-monitoring`` MLflow run, and the service's gauges."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime

import mlflow
import pandas as pd
import pytest
from typer.testing import CliRunner

from cxpredict import documents
from cxpredict import tasks as registry
from cxpredict.cli import app

pytestmark = pytest.mark.slow  # on copies of the session's trained world


def run(*args: str):
    return CliRunner().invoke(app, [*args], catch_exceptions=False)


def _scored(ws, day: str) -> None:
    from training.scoring import score_workspace

    score_workspace(ws, datetime.fromisoformat(day).replace(tzinfo=UTC), ws.root / f"scores-{day}.parquet")


@pytest.fixture(scope="module")
def healthy(trained_world, copy_workspace, tmp_path_factory):
    """A copy of the trained world with its online store materialised, scored as of 2026-08-01 (its
    horizons have passed for next purchase and churn) and 2026-11-01, then monitored as JSON."""
    from features.store import materialize_latest

    world, _ = trained_world
    ws = copy_workspace(world.ws, tmp_path_factory.mktemp("monitor-healthy") / "ws", score_history=False)
    materialize_latest(ws, end=world.features_as_of)
    _scored(ws, "2026-08-01")
    _scored(ws, "2026-11-01")
    saved = os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        result = run("monitor", "--json", "--workspace", str(ws.root))
    finally:
        if saved is not None:
            os.environ["MLFLOW_TRACKING_URI"] = saved
    return ws, result


def test_an_unchanged_world_exits_0_with_the_documented_json(healthy):
    # given the trained world as it is, when monitored
    ws, result = healthy
    # then it is healthy, and stdout holds the documented document
    assert result.exit_code == 0, result.stdout[-2000:]
    document = json.loads(result.stdout)
    assert list(document) == list(documents.MONITOR_KEYS)
    assert document["status"] == "healthy"
    tasks = set(registry.names())
    assert set(document["drifted_features"]) == tasks
    assert all(isinstance(names, list) for names in document["drifted_features"].values())
    # and realised performance is there for the 2026-08-01 scores whose horizon has passed
    assert set(document["performance"]) == tasks
    assert [row["scored_as_of"][:10] for row in document["performance"]["next_purchase"]] == ["2026-08-01"]
    assert document["performance"]["churn"][0]["auc"] > 0.7
    # and prediction drift compared the latest score output
    churn = next(task for task in document["tasks"] if task["task"] == "churn")
    assert churn["prediction_drift"]["scores_file"] == "scores-2026-11-01.parquet"
    # and both reports were written where the document says
    assert json.loads((ws.reports_dir / "monitor-2026-11-01.json").read_text())["status"] == "healthy"
    page = (ws.reports_dir / "monitor-2026-11-01.html").read_text()
    assert "Status: healthy" in page and "churn: feature drift" in page and "churn: prediction drift" in page


def test_the_run_in_cx_monitoring_holds_metrics_and_reports_but_no_customer_id(healthy):
    ws, result = healthy
    document = json.loads(result.stdout)
    client = mlflow.MlflowClient(tracking_uri=ws.tracking_uri)
    run_ = client.get_run(document["run_id"])
    assert client.get_experiment(run_.info.experiment_id).name == "cx-monitoring"
    assert "churn.drifted_features" in run_.data.metrics and "next_purchase.realised_auc" in run_.data.metrics
    artifacts = {a.path for a in client.list_artifacts(run_.info.run_id)}
    assert {"monitor-2026-11-01.html", "monitor-2026-11-01.json", "plots"} <= artifacts
    ids = pd.read_parquet(ws.reports_dir / "scores" / "scores-2026-11-01.parquet")["customer_id"].head(50)
    recorded = (
        json.dumps([run_.data.params, run_.data.tags])
        + (ws.reports_dir / "monitor-2026-11-01.json").read_text()
    )
    assert not [customer for customer in ids if customer in recorded]


def test_metrics_show_the_drift_gauges_of_the_latest_monitor_run(healthy, tmp_path):
    from tests.serving.server_fixtures import start_server

    # given a server started on the monitored workspace
    ws, result = healthy
    document = json.loads(result.stdout)
    server = start_server(ws, tmp_path / "api.log")
    try:
        # when /metrics is scraped
        text = server.client(key=None).get("/metrics").text
    finally:
        server.stop()
    # then it exports the monitor's status, the drifted features per task and the features' age
    assert "cxpredict_monitor_status 0.0" in text
    for task in document["tasks"]:
        count = len(task["feature_drift"]["drifted"])
        assert f'cxpredict_drifted_features{{task="{task["task"]}"}} {float(count)}' in text
    age = [line for line in text.splitlines() if line.startswith("cxpredict_online_features_age_seconds")]
    assert age and float(age[0].split()[-1]) > 0


def test_an_upstream_unit_change_exits_3_and_names_the_drifted_features(
    trained_world, copy_workspace, tmp_path
):
    # given the latest feature snapshot rewritten with every number tripled (a unit change upstream)
    world, _ = trained_world
    ws = copy_workspace(world.ws, tmp_path / "ws")
    for path in ws.features_dir.glob("*/snapshot_date=2026-11-01/*.parquet"):
        frame = pd.read_parquet(path)
        for column in frame.columns:
            if pd.api.types.is_float_dtype(frame[column]):
                frame[column] = frame[column] * 3
        frame.to_parquet(path, index=False)
    # when churn is monitored
    saved = os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        result = run("monitor", "--task", "churn", "--json", "--workspace", str(ws.root))
    finally:
        if saved is not None:
            os.environ["MLFLOW_TRACKING_URI"] = saved
    # then the threshold is crossed (exit 3) and the tripled features are named
    assert result.exit_code == 3, result.stdout[-2000:]
    document = json.loads(result.stdout)
    assert document["status"] == "alert"
    assert {"purchase_amount_90d", "engagement_sessions_90d"} <= set(document["drifted_features"]["churn"])
    assert "features drifted" in " ".join(document["tasks"][0]["reasons"])


def test_a_workspace_without_champions_exits_2(featurised_world, copy_workspace, tmp_path):
    ws = copy_workspace(featurised_world.ws, tmp_path / "ws")
    saved = os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        result = run("monitor", "--json", "--workspace", str(ws.root))
    finally:
        if saved is not None:
            os.environ["MLFLOW_TRACKING_URI"] = saved
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "no task" in result.stderr and "champion" in result.stderr
