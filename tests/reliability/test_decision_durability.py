"""Decisions and outcomes the service acknowledged survive kill -9 of the server; an outcome counts once."""

from __future__ import annotations


import pandas as pd
import pytest

from features.decision_log import DecisionLog
from tests.serving.server_fixtures import start_server

pytestmark = pytest.mark.slow


def test_given_answered_decisions_and_outcomes_when_the_server_is_killed_then_the_log_holds_them_once(
    private_workspace, tmp_path
):
    # given a two-worker server and 300 known customers
    ids = sorted(pd.read_parquet(private_workspace.features_dir / "engagement").customer_id.unique())[:300]
    server = start_server(private_workspace, tmp_path / "server.log", workers=2)
    with server.client() as client:
        # when it decides for them in three calls and one outcome is reported three times
        answers = [
            client.post("/decide", json={"customer_ids": ids[i : i + 100]}) for i in range(0, 300, 100)
        ]
        decisions = [d for answer in answers for d in answer.json()["decisions"]]
        chosen = next(d for d in decisions if d["actions"])
        outcome = {
            "decision_id": chosen["decision_id"],
            "action": chosen["actions"][0]["action"],
            "outcome": "clicked",
        }
        reported = [client.post("/outcomes", json=outcome).json()["duplicate"] for _ in range(3)]
    server.kill()

    # then every answered decision is in the log, the holdout ones too, and the outcome once
    assert [a.status_code for a in answers] == [200] * 3
    logged = [d for d in decisions if d["decision_id"]]
    counts = DecisionLog.of(private_workspace).counts()
    assert counts["decisions"] == len(logged) > 250
    assert counts["holdout_decisions"] == sum(d["holdout"] for d in logged)
    assert all(not d["actions"] for d in logged if d["holdout"])
    assert counts["outcomes"] == 1 and reported == [False, True, True]
    for decision in decisions:
        propensities = [a["propensity"] for a in decision["actions"]]
        assert all(0 < p <= 1 for p in propensities)
