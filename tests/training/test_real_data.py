"""Real transactions-only data (CDNOW, shipped inside the ``lifetimes`` package): the first
``train`` ends with usable champions, and the models beat a BG/NBD model fitted in the same run.

The same steps a user runs on their own export: ingest a transactions file, build features, train
every task, score. Nothing here is tuned to this dataset: the defaults are the product's.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from cxpredict.cli import app
from cxpredict.workspace import resolve_workspace
from features.real_data import END, load_transactions
from training import metrics as m

pytestmark = pytest.mark.slow

AS_OF = END


@pytest.fixture(scope="module")
def cdnow(tmp_path_factory, monkeypatch_module):
    """A workspace with CDNOW ingested, featurised and trained by the command line."""
    root = tmp_path_factory.mktemp("cdnow")
    export = root / "cdnow.parquet"
    load_transactions().to_parquet(export, index=False)
    ws = resolve_workspace(root / "ws").ensure()
    runner = CliRunner()
    steps = {
        "ingest": runner.invoke(app, ["ingest", "--transactions", str(export), "-w", str(ws.root)]),
        "features": runner.invoke(app, ["features", "--as-of", f"{AS_OF:%Y-%m-%d}", "-w", str(ws.root)]),
    }
    from training.run import train_workspace

    results = train_workspace(ws, as_of=AS_OF.to_pydatetime())
    steps["score"] = runner.invoke(app, ["score", "--out", str(root / "scores.parquet"), "-w", str(ws.root)])
    return ws, steps, results, root / "scores.parquet"


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        patch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        yield patch


def _held_out(result, model: str) -> tuple[np.ndarray, np.ndarray]:
    evaluation = next(e for e in result.fitted.evaluations if e.target == result.fitted.primary)
    return evaluation.y, evaluation.predictions[model]


def test_given_real_transactions_when_training_then_every_possible_task_ends_with_a_champion(cdnow):
    ws, steps, results, scores = cdnow

    assert steps["ingest"].exit_code == 0, steps["ingest"].output
    assert steps["features"].exit_code == 0, steps["features"].output
    trained = {task: result for task, result in results.items() if result.status == "trained"}
    assert set(trained) >= {"churn", "next_purchase"}
    assert all(result.champion for result in trained.values()), {t: r.decision for t, r in trained.items()}
    assert steps["score"].exit_code == 0, steps["score"].output
    scored = pd.read_parquet(scores)
    assert scored["churn_probability"].notna().mean() > 0.99


def test_given_real_transactions_then_churn_beats_bg_nbd_fitted_in_the_same_run(cdnow):
    _, _, results, _ = cdnow
    y, model = _held_out(results["churn"], "model")
    _, btyd = _held_out(results["churn"], "btyd")

    assert m.auc(y, model) > m.auc(y, btyd)
    assert m.binary_metrics(y, model)["log_loss"] < m.binary_metrics(y, btyd)["log_loss"]


def test_given_real_transactions_then_expected_buyers_are_within_five_percent_of_actual(cdnow):
    _, _, results, _ = cdnow
    y, purchase = _held_out(results["next_purchase"], "model")

    assert abs(purchase.sum() / y.sum() - 1) <= 0.05
