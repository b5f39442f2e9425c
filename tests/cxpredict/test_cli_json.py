"""Machine-readable output: ``--json`` on train, evaluate, score and promote prints one JSON document
on stdout with the keys its help documents and nothing else there (progress and library chatter go
to stderr); ``models --card`` prints the card's Markdown unwrapped."""

import json

import pytest
from typer.testing import CliRunner

from cxpredict import documents
from cxpredict import tasks as registry
from cxpredict.cli import app

pytestmark = pytest.mark.slow  # on a copy of the session's trained world


@pytest.fixture(scope="module")
def workspace(trained_world, copy_workspace, tmp_path_factory):
    world, _ = trained_world
    return copy_workspace(world.ws, tmp_path_factory.mktemp("cli-json") / "ws")


def run(*args: str):
    return CliRunner().invoke(app, [*args], catch_exceptions=False)


def document(result) -> dict:
    """The one JSON document on stdout (``json.loads`` fails on anything else there)."""
    return json.loads(result.stdout)


def test_given_a_training_that_prints_when_training_as_json_then_stdout_holds_only_the_document(
    trained_world, workspace, monkeypatch
):
    # given a training that reports progress and prints to stdout, as libraries do
    _, results = trained_world

    def noisy_training(ws, tasks, as_of, horizon_days, tune, progress):
        progress("training", 1, 2, "churn: fitting")
        print("[LightGBM] [Warning] chatter on stdout")
        return {task: results[task] for task in tasks}

    monkeypatch.setattr("training.run.train_workspace", noisy_training)

    # when training as JSON
    result = run("train", "all", "--json", "-w", str(workspace.root))

    # then stdout is one document with the documented keys, and the chatter went to stderr
    assert result.exit_code == 0, result.output
    tasks = document(result)["tasks"]
    assert [task["task"] for task in tasks] == list(results)
    for task in tasks:
        assert list(task) == list(documents.TRAIN_KEYS)
        gate = registry.get(task["task"]).gate_metric
        assert task["status"] == "trained" and task["metrics"]["model"][gate] > 0.5
    assert "chatter" in result.stderr


def test_given_registered_champions_when_evaluating_as_json_then_each_task_has_the_documented_keys(
    workspace,
):
    result = run("evaluate", "--json", "-w", str(workspace.root))

    assert result.exit_code == 0, result.output
    listing = document(result)
    assert list(listing) == ["tasks"]
    for task in listing["tasks"]:
        assert list(task) == list(documents.EVALUATE_KEYS)
        assert task["status"] == "evaluated" and task["alias"] == "champion"
        assert 0.5 < task["metrics"]["model"][registry.get(task["task"]).gate_metric] <= 1


def test_given_champions_when_scoring_as_json_then_the_summary_names_the_file(workspace, tmp_path):
    out = tmp_path / "scores.csv"

    result = run("score", "--out", str(out), "--json", "-w", str(workspace.root))

    assert result.exit_code == 0, result.output
    summary = document(result)
    assert list(summary) == list(documents.SCORE_KEYS)
    assert summary["path"] == str(out) and out.exists()
    assert summary["customers"] > 0 and "churn_probability" in summary["columns"]


def test_given_the_challenger_when_promoting_as_json_then_the_decision_is_one_document(workspace):
    result = run("promote", "churn", "--json", "-w", str(workspace.root))

    decision = document(result)
    assert list(decision) == list(documents.PROMOTE_KEYS)
    assert result.exit_code == decision["exit_code"]
    assert all(set(check) >= {"name", "passed"} for check in decision["checks"])


def test_given_a_refusal_when_promoting_as_json_then_stdout_is_empty_and_the_reason_on_stderr(workspace):
    result = run("promote", "churn", "--force", "--json", "-w", str(workspace.root))

    assert result.exit_code == 2
    assert result.stdout == ""
    assert "reason" in result.stderr.lower()


@pytest.mark.parametrize(
    ("command", "keys"),
    [
        ("train", documents.TRAIN_KEYS),
        ("evaluate", documents.EVALUATE_KEYS),
        ("score", documents.SCORE_KEYS),
        ("promote", documents.PROMOTE_KEYS),
        ("ingest", documents.INGEST_KEYS),
    ],
)
def test_given_a_command_with_json_then_its_help_documents_the_keys(command, keys):
    result = CliRunner().invoke(app, [command, "--help"], terminal_width=200)

    assert result.exit_code == 0
    for key in keys:
        assert key in result.output, (command, key)


def test_given_a_registered_version_when_printing_its_card_then_stdout_is_the_card_unchanged(workspace):
    from training.commands import card_command

    card = card_command(workspace, "churn", "1")
    assert max(len(line) for line in card.splitlines()) > 150  # wider than the piped console

    result = run("models", "--card", "churn", "1", "-w", str(workspace.root))

    assert result.exit_code == 0
    assert result.stdout == card


def test_given_a_card_with_a_long_table_row_when_printed_to_a_file_then_the_row_is_not_wrapped(
    tmp_path, monkeypatch
):
    row = "| " + " | ".join(f"cell {n:03d} with some text" for n in range(12)) + " |"
    header = "| " + " | ".join(f"h{n}" for n in range(12)) + " |"
    card = f"# Model card: cx-churn version 7\n\n{header}\n{row}\n"
    assert len(row) > 300
    monkeypatch.setattr("training.commands.card_command", lambda ws, task, version: card)

    result = run("models", "--card", "churn", "7", "-w", str(tmp_path / "ws"))

    assert result.exit_code == 0
    assert result.stdout == card
