"""A task added from outside the product (``toy_task``: one module plus one registry entry) goes
through the ordinary commands — train, promote, score — with no other change anywhere."""

from __future__ import annotations

import pandas as pd
import pytest
import toy_task
from typer.testing import CliRunner

from cxpredict import tasks as registry
from cxpredict.cli import app
from training.tracking import resolve_tracking, tracking_session

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def toy_world(trained_world, copy_workspace, tmp_path_factory):
    """The trained world (every built-in task has a champion) with the toy task registered."""
    world, _ = trained_world
    ws = copy_workspace(world.ws, tmp_path_factory.mktemp("toy") / "ws")
    registry.register(toy_task.SPEC)
    yield ws, world
    registry.unregister(toy_task.NAME)


def run(*args: str):
    return CliRunner().invoke(app, list(args))


def test_given_a_registered_toy_task_when_trained_promoted_and_scored_then_it_works_like_a_built_in(
    toy_world,
):
    ws, world = toy_world
    root = ["--workspace", str(ws.root)]

    trained = run("train", "big-basket", "--as-of", f"{world.train_as_of:%Y-%m-%d}", *root)
    promoted = run("promote", "big-basket", "--version", "1", "--force", "--reason", "toy task check", *root)
    scored = run("score", "--out", str(ws.reports_dir / "toy.parquet"), *root)

    assert trained.exit_code == 0, trained.output
    assert "big-basket — held-out cutoff" in trained.stdout
    assert promoted.exit_code == 0, promoted.output
    with tracking_session(resolve_tracking(ws)) as client:
        champion = client.get_model_version_by_alias("cx-big-basket", "champion")
        run_params = client.get_run(champion.tags["run_id"]).data.params
    assert str(champion.version) == "1" and champion.tags["feature_service"] == "big_basket"
    assert run_params["label_definition"] == toy_task.SPEC.label_definition
    assert set(run_params["features"].split(",")) & {"days_since_last_purchase"}
    assert scored.exit_code == 0, scored.output
    scores = pd.read_parquet(ws.reports_dir / "toy.parquet")
    assert {"churn_probability", toy_task.OUTPUT} <= set(scores.columns)
    probability = scores[toy_task.OUTPUT].dropna()
    assert len(probability) > 0.9 * len(scores) and probability.between(0, 1).all()
    assert probability.std() > 0.01  # a real model, not a constant prior


def test_given_the_toy_task_when_asking_for_an_unknown_one_then_the_choices_include_it(toy_world):
    ws, _ = toy_world

    result = run("train", "no-such-task", "--workspace", str(ws.root))

    assert result.exit_code == 2
    assert "big-basket" in result.output
