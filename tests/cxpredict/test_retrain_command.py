"""``cxpredict retrain``: on a fresh workspace it trains and promotes every task; run again with
nothing new, it trains nothing, registers nothing and moves nothing."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime

import mlflow
import pytest
from typer.testing import CliRunner

from cxpredict import documents
from cxpredict import tasks as registry
from cxpredict.cli import app
from features.decision_log import DecisionLog

pytestmark = pytest.mark.slow  # trains every task of a 2,500-customer world once


def _retrain(ws, *extra: str):
    saved = os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        return CliRunner().invoke(
            app,
            ["retrain", "--as-of", "2026-11-01", "--reason", "nightly", "--json", "--workspace", str(ws.root),
             *extra],
            catch_exceptions=False,
        )  # fmt: skip
    finally:
        if saved is not None:
            os.environ["MLFLOW_TRACKING_URI"] = saved


def _registry_state(ws) -> dict[str, tuple[list[str], str | None]]:
    client = mlflow.MlflowClient(tracking_uri=ws.tracking_uri, registry_uri=ws.tracking_uri)
    state = {}
    for spec in registry.all_tasks():
        found = client.search_model_versions(f"name='{spec.model_name}'")
        versions = [str(v) for v in sorted(int(v.version) for v in found)]
        try:
            champion = str(client.get_model_version_by_alias(spec.model_name, "champion").version)
        except mlflow.exceptions.MlflowException:
            champion = None
        state[spec.name] = (versions, champion)
    return state


@pytest.fixture(scope="module")
def retrained_twice(featurised_world, copy_workspace, tmp_path_factory):
    """A fresh copy of the featurised world (no model yet), retrained twice with no new data."""
    ws = copy_workspace(featurised_world.ws, tmp_path_factory.mktemp("retrain") / "ws")
    first = _retrain(ws)
    after_first = _registry_state(ws)
    second = _retrain(ws)
    return ws, first, after_first, second


@pytest.fixture(scope="module")
def retrained_after_decisions(retrained_twice):
    """The same workspace once /decide has logged decisions before the as-of date."""
    ws = retrained_twice[0]
    log = DecisionLog.of(ws)
    try:
        log.record_decisions(
            [
                {"decision_id": f"d-retrain-{i}", "customer_id": f"C{i:06d}",
                 "at": datetime(2026, 10, 20, tzinfo=UTC), "holdout": i % 5 == 0,
                 "actions": [{"action": "retention_offer", "propensity": 0.8}], "models": {}}
                for i in range(40)
            ]
        )  # fmt: skip
    finally:
        log.engine.dispose()
    return ws, _retrain(ws)


def test_a_first_retrain_trains_and_promotes_every_task(retrained_twice):
    ws, first, after_first, _ = retrained_twice
    assert first.exit_code == 0, first.stdout[-2000:]
    document = json.loads(first.stdout)
    assert list(document) == list(documents.RETRAIN_KEYS)
    trained = {move["task"] for move in document["tasks"] if move["status"] == "trained"}
    assert {"churn", "next_purchase", "unmet_needs"} <= trained
    assert {move["task"] for move in document["tasks"]} == set(registry.names())
    # then each trained task has a champion: the version this run registered, and the summary says so
    for move in (move for move in document["tasks"] if move["status"] == "trained"):
        versions, champion = after_first[move["task"]]
        assert move["moved"] and move["champion_before"] is None
        assert champion == move["new_version"] == move["champion_after"] == versions[-1]
        assert move["why"]
    assert set(document["moved"]) == trained


def test_a_second_retrain_with_nothing_new_trains_and_moves_nothing(retrained_twice):
    ws, _, after_first, second = retrained_twice
    assert second.exit_code == 0, second.stdout[-2000:]
    document = json.loads(second.stdout)
    assert {m["task"] for m in document["tasks"] if m["status"] == "unchanged"} >= {
        "churn",
        "next_purchase",
        "unmet_needs",
    }
    assert {m["status"] for m in document["tasks"]} <= {"unchanged", "unavailable"}
    assert document["moved"] == []
    assert all(m["new_version"] is None for m in document["tasks"])
    assert all("same data" in m["why"] for m in document["tasks"] if m["status"] == "unchanged")
    # and the registry is exactly as the first run left it: no new version, no alias moved
    assert _registry_state(ws) == after_first


def test_logged_decisions_do_not_make_models_that_ignore_the_log_stale(
    retrained_twice, retrained_after_decisions
):
    # given a workspace whose models are current, when decisions are logged and retrain runs again
    _, _, after_first, _ = retrained_twice
    ws, third = retrained_after_decisions
    assert third.exit_code == 0, third.stdout[-2000:]
    document = json.loads(third.stdout)
    # then no task that does not learn from the decision log is trained again
    readers = {spec.name for spec in registry.all_tasks() if spec.reads_decision_log}
    statuses = {m["task"]: m["status"] for m in document["tasks"] if m["task"] not in readers}
    assert set(statuses.values()) <= {"unchanged", "unavailable"}, statuses
    assert {"churn", "next_purchase", "unmet_needs"} <= {t for t, s in statuses.items() if s == "unchanged"}
    assert _registry_state(ws) == after_first
