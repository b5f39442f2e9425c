"""Registry listing, audit trail and alias locking, on a real SQLite registry (no training needed:
versions are registered from runs that carry the params and metrics training would log)."""

from __future__ import annotations

import io
import json
import threading
import time

import mlflow
import pytest
from rich.console import Console
from typer.testing import CliRunner
from worlds import blank_database, workspace_from

from cxpredict import render
from cxpredict.cli import app
from training.commands import models_command
from training.model_registry import (
    AliasConflict,
    AuditEntry,
    RegistryBusy,
    alias_stack,
    alias_version,
    history_problems,
    move_alias,
    read_history,
    registry_lock,
    snapshot,
)
from cxpredict import tasks as task_registry
from training.tracking import resolve_tracking


def entry(seq, action, from_version, to_version, alias="champion"):
    return AuditEntry(
        seq=seq,
        at="2026-01-01T00:00:00+00:00",
        alias=alias,
        action=action,
        from_version=from_version,
        to_version=to_version,
        reason="r",
        actor="a",
    )


def test_given_promotions_and_rollbacks_when_replaying_then_rollbacks_pop_the_line_of_succession():
    entries = [
        entry(1, "initial", None, "1"),
        entry(2, "train", "1", "2", alias="challenger"),
        entry(3, "promote", "1", "2"),
        entry(4, "promote", "2", "3"),
        entry(5, "rollback", "3", "2"),
    ]

    assert alias_stack(entries) == ["1", "2"]
    assert alias_stack([*entries, entry(6, "rollback", "2", "1")]) == ["1"]
    assert alias_stack(entries, "challenger") == ["1", "2"]


def test_given_a_move_from_no_champion_when_replaying_then_the_line_restarts():
    entries = [entry(1, "initial", None, "1"), entry(2, "promote", "1", "2"), entry(3, "force", None, "4")]

    assert alias_stack(entries) == ["4"]


def test_given_a_trail_with_a_gap_when_checking_then_the_broken_link_and_the_hand_move_are_reported():
    entries = [entry(1, "initial", None, "1"), entry(2, "promote", "1", "2"), entry(3, "promote", "1", "3")]

    problems = history_problems(entries, {"champion": "5"})

    assert len(problems) == 2
    assert "audit 3" in problems[0] and "left it at 2" in problems[0]
    assert "champion is version 5" in problems[1]
    assert history_problems(entries[:2], {"champion": "2"}) == []


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """cx-churn with three versions whose runs hold training-like params and metrics."""
    template = blank_database(tmp_path_factory.mktemp("template"))
    ws = workspace_from(template, tmp_path_factory.mktemp("ws"))
    uri = resolve_tracking(ws).tracking_uri
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.create_experiment(
        "cx-churn", artifact_location=(ws.mlflow_dir / "artifacts").as_uri()
    )
    client.create_registered_model("cx-churn")
    for number, auc in enumerate((0.71, 0.74, 0.69), start=1):
        run = client.create_run(experiment)
        for key, value in {
            "as_of": "2025-09-01T00:00:00+00:00",
            "horizon_days": "90",
            "rows_train": str(1000 * number),
            "rows_test": "300",
            "feature_service": "churn",
            "features": "a,b,profile_region",
            "feature_count": "3",
            "cutoffs_train": "2025-01-01,2025-02-01",
            "cutoff_valid": "2025-03-01",
            "cutoff_test": "2025-04-01",
            "data_hash": f"hash-{number}",
            "code_version": "abc123",
        }.items():
            client.log_param(run.info.run_id, key, value)
        client.log_metric(run.info.run_id, "churn.model.ece", 0.01 * number)
        client.set_terminated(run.info.run_id)
        version = client.create_model_version(
            "cx-churn", f"runs:/{run.info.run_id}/model", run.info.run_id
        ).version
        for key, value in {
            "run_id": run.info.run_id,
            "auc_model": str(auc),
            "auc_logistic": "0.70",
            "beats_baselines": str(auc > 0.70).lower(),
        }.items():
            client.set_model_version_tag("cx-churn", version, key, value)
    move_alias(
        client, "cx-churn", "champion", "1", action="initial", reason="first", actor="ci", expected_from=None
    )
    move_alias(client, "cx-churn", "challenger", "3", action="train", reason="trained", actor="ci")
    move_alias(
        client, "cx-churn", "champion", "2", action="promote", reason="better", actor="ana", expected_from="1"
    )
    return ws, client


def test_given_a_registry_when_listing_then_each_version_shows_aliases_metrics_and_lineage(registry):
    _, client = registry

    data = snapshot(client, {s.name: s.model_name for s in task_registry.all_tasks()})

    churn = next(task for task in data["tasks"] if task["task"] == "churn")
    assert [row["version"] for row in churn["versions"]] == ["3", "2", "1"]
    assert churn["aliases"] == {"champion": "2", "challenger": "3"}
    by_version = {row["version"]: row for row in churn["versions"]}
    assert by_version["2"]["auc"] == pytest.approx(0.74) and by_version["2"]["aliases"] == ["champion"]
    assert by_version["3"]["ece"] == pytest.approx(0.03)  # from the run's <target>.model.ece
    assert by_version["1"]["rows_train"] == 1000 and by_version["3"]["rows_train"] == 3000
    assert by_version["1"]["features"] == ["a", "b", "profile_region"]
    assert by_version["1"]["cutoffs_train"] == ["2025-01-01", "2025-02-01"]
    assert by_version["2"]["data_hash"] == "hash-2" and by_version["2"]["as_of"].startswith("2025-09-01")
    assert by_version["1"]["beats_baselines"] is True and by_version["3"]["beats_baselines"] is False
    assert [entry["action"] for entry in churn["history"]] == ["initial", "train", "promote"]
    assert churn["history_problems"] == []
    others = [task for task in data["tasks"] if task["task"] != "churn"]
    assert all(task["versions"] == [] and not task["registered"] for task in others)


def test_given_a_registry_when_running_models_json_then_it_prints_the_snapshot_as_json(registry):
    ws, _ = registry

    result = CliRunner().invoke(app, ["models", "--json", "--history", "--workspace", str(ws.root)])

    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    churn = next(task for task in printed["tasks"] if task["task"] == "churn")
    assert churn["aliases"]["champion"] == "2"
    moves = [
        (e["from_version"], e["to_version"], e["actor"]) for e in churn["history"] if e["alias"] == "champion"
    ]
    assert moves == [(None, "1", "ci"), ("1", "2", "ana")]


def test_given_a_registry_when_running_models_as_a_table_then_versions_and_history_are_shown(registry):
    ws, _ = registry
    out = io.StringIO()

    Console(file=out, width=220).print(render.models(models_command(ws, history=True), history=True))
    plain = models_command(ws)

    text = out.getvalue()
    assert "churn (cx-churn)" in text and "cx-churn: alias moves" in text
    assert "0.740" in text and "hash-2" in text and "better" in text
    assert "next_purchase (cx-next-purchase): no registered version" in text
    assert all("history" not in task for task in plain["tasks"])


def test_given_a_champion_when_moving_with_a_stale_expectation_then_it_conflicts_and_nothing_changes(
    registry,
):
    _, client = registry
    before = read_history(client, "cx-churn")

    with pytest.raises(AliasConflict) as raised:
        move_alias(client, "cx-churn", "champion", "3", action="promote", reason="x", expected_from="1")

    assert raised.value.current == "2"
    assert alias_version(client, "cx-churn", "champion") == "2"
    assert read_history(client, "cx-churn") == before


def test_given_racing_threads_when_each_moves_the_champion_from_the_same_version_then_exactly_one_wins(
    registry,
):
    ws, _ = registry
    uri = resolve_tracking(ws).tracking_uri
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model("cx-race")
    source = client.get_model_version("cx-churn", "1").source
    versions = [client.create_model_version("cx-race", source).version for _ in range(6)]
    move_alias(client, "cx-race", "champion", "1", action="initial", reason="setup", expected_from=None)
    start, outcomes = threading.Barrier(5), []

    def contender(version: str) -> None:
        own = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
        start.wait()
        try:
            move_alias(
                own,
                "cx-race",
                "champion",
                version,
                action="promote",
                reason=f"to {version}",
                expected_from="1",
            )
            outcomes.append(("won", version))
        except AliasConflict:
            outcomes.append(("lost", version))

    threads = [threading.Thread(target=contender, args=(str(v),)) for v in versions[1:]]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    winners = [version for outcome, version in outcomes if outcome == "won"]
    assert len(outcomes) == 5 and len(winners) == 1
    assert alias_version(client, "cx-race", "champion") == winners[0]
    history = read_history(client, "cx-race")
    assert [(e.from_version, e.to_version) for e in history] == [(None, "1"), ("1", winners[0])]
    assert [e.seq for e in history] == [1, 2]


def test_given_a_held_lock_when_another_caller_waits_then_it_times_out_and_a_stale_lock_is_broken(registry):
    _, client = registry
    with registry_lock(client, "cx-lock-check"):
        began = time.monotonic()
        with pytest.raises(RegistryBusy), registry_lock(client, "cx-lock-check", timeout_s=0.3):
            pass
        assert time.monotonic() - began >= 0.3
        with registry_lock(client, "cx-lock-check", timeout_s=5, stale_after_s=0.0):
            holders = client.search_registered_models("name = 'cx-lock-check.lock'")
            assert len(holders) == 1
    assert client.search_registered_models("name = 'cx-lock-check.lock'") == []
