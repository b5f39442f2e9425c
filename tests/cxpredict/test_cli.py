"""The MLOps commands as an engineer types them: models, promote, rollback on a trained workspace."""

import json

import pytest
from typer.testing import CliRunner

from cxpredict.cli import app

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def workspace(trained_world, copy_workspace, tmp_path_factory):
    world, _ = trained_world
    return copy_workspace(world.ws, tmp_path_factory.mktemp("cli") / "ws")


def run(*args: str):
    return CliRunner().invoke(app, [*args], catch_exceptions=False)


def test_given_trained_models_when_listing_as_json_then_every_task_has_a_champion(workspace):
    result = run("models", "--json", "--workspace", str(workspace.root))
    assert result.exit_code == 0
    listing = json.loads(result.stdout)
    tasks = {task["task"]: task for task in listing["tasks"]}
    assert set(tasks) == {"churn", "next_purchase", "unmet_needs", "value"}
    for task in tasks.values():
        aliases = {alias for version in task["versions"] for alias in version["aliases"]}
        assert "champion" in aliases, task["task"]


def test_given_a_single_champion_when_rolling_back_then_it_is_refused_and_nothing_moves(workspace):
    before = json.loads(run("models", "--json", "-w", str(workspace.root)).stdout)
    result = run("rollback", "churn", "--workspace", str(workspace.root))
    assert result.exit_code == 1
    after = json.loads(run("models", "--json", "-w", str(workspace.root)).stdout)
    assert after["tasks"][0]["versions"] == before["tasks"][0]["versions"]


def test_given_force_without_a_reason_when_promoting_then_it_exits_2_naming_the_reason(workspace):
    result = run("promote", "churn", "--force", "--workspace", str(workspace.root))
    assert result.exit_code == 2
    assert "reason" in result.stderr.lower()


def test_given_an_unknown_task_when_promoting_then_the_task_argument_is_named(tmp_path):
    result = run("promote", "loyalty", "--workspace", str(tmp_path / "ws"))
    assert result.exit_code == 2
    assert "TASK" in result.output
    assert not (tmp_path / "ws").exists()
