"""A custom SQL feature view, end to end: built beside the families, trained on by the task it names,
and explained in the drivers the API returns over HTTP."""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serving"))
from server_fixtures import API_KEY, start_server  # noqa: E402

ACTIVITY_SQL = """-- name: activity
-- tasks: churn
-- description: days since the last purchase or engagement event, whichever is later
SELECT customer_id, date_diff('day', max(moment), $as_of) AS days_since_any_activity
FROM (
  SELECT customer_id, timestamp AS moment FROM transactions
  UNION ALL
  SELECT customer_id, timestamp AS moment FROM events
)
GROUP BY customer_id
"""


@pytest.mark.slow
def test_given_a_custom_view_for_churn_when_trained_and_served_then_it_is_a_model_feature_and_a_driver(
    featurised_world, copy_workspace, tmp_path
):
    from features.snapshots import build_features
    from features.store import apply_repo, materialize_latest
    from training.run import train_workspace

    # given the world with one custom view for churn
    ws = copy_workspace(featurised_world.ws, tmp_path / "ws")
    (ws.root / "features.d").mkdir()
    (ws.root / "features.d" / "activity.sql").write_text(ACTIVITY_SQL)
    summary = build_features(ws, featurised_world.features_as_of)
    assert summary.custom_views == ["activity"] and summary.refused == []
    assert summary.snapshots_built == 0, "the families' snapshots are kept: only the view is new"
    apply_repo(ws)
    # when churn is trained
    saved = os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        results = train_workspace(
            ws,
            tasks=["churn"],
            as_of=featurised_world.train_as_of,
            lightgbm={"num_threads": 1},
            shap_sample=200,
        )
    finally:
        if saved is not None:
            os.environ["MLFLOW_TRACKING_URI"] = saved
    churn = results["churn"]
    # then the model reads the custom feature
    assert churn.status == "trained" and churn.champion, churn.reason
    assert "days_since_any_activity" in churn.fitted.bundle.feature_names
    # and /predict explains churn with it
    materialize_latest(ws, end=featurised_world.features_as_of)
    server = start_server(ws, tmp_path / "api.log", wait_ready=False, workers=1)
    try:
        predictions = _churn_predictions(server.url, _known(ws, featurised_world.features_as_of)[:200])
    finally:
        server.stop()
    drivers = Counter(driver["feature"] for p in predictions for driver in p["churn"]["drivers"])
    assert drivers["days_since_any_activity"] > 0, drivers.most_common(8)


def _churn_predictions(url: str, ids: list[str], timeout_s: float = 120) -> list[dict]:
    """The churn answers of ``/predict`` once the server holds the churn model (the other tasks have
    none here, so ``/readyz`` stays 503)."""
    deadline = time.monotonic() + timeout_s
    while True:
        answer = httpx.post(
            f"{url}/predict",
            json={"customer_ids": ids},
            headers={"Authorization": f"Bearer {API_KEY}"},
            timeout=60,
        )
        if answer.status_code == 200 and all(p.get("churn") for p in answer.json()["predictions"]):
            return answer.json()["predictions"]
        if time.monotonic() > deadline:
            raise AssertionError(f"no churn answers from /predict: {answer.status_code} {answer.text[:300]}")
        time.sleep(0.5)


def _known(ws, as_of) -> list[str]:
    from training.data import known_customers, withheld_consent

    refused = withheld_consent(ws, as_of)
    return [c for c in known_customers(ws, as_of).tolist() if c not in refused]
