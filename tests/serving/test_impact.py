"""Impact against the holdout, on the session's generated world with an effect injected into its
transactions: the interval must cover the effect we put in, and an A/A split must show none."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from serving.decisions import in_holdout
from serving.impact import measure

DECIDED_AT = pd.Timestamp("2026-08-01", tz="UTC")
AS_OF = pd.Timestamp("2026-11-01", tz="UTC")
ACTION = "retention_offer"


@pytest.fixture(scope="module")
def tables(featurised_world):
    from training.data import load_tables

    return load_tables(featurised_world.ws, AS_OF)


def _decisions(customers, share=0.5):
    out = []
    for i, customer in enumerate(customers):
        held = in_holdout(customer, share, salt="impact-test")
        chosen = [ACTION] if i % 2 == 0 else []
        out.append(
            {"decision_id": f"d-{i}", "customer_id": customer, "at": DECIDED_AT, "holdout": held,
             "actions": [] if held else chosen, "withheld": chosen if held else []}
        )  # fmt: skip
    return out


def _with_effect(tables, customers, share, amount, seed=0):
    """Treated customers given the action buy once more (``amount``) 5 days after the decision with
    probability ``share``; returns the tables and the customers who got the extra purchase."""
    rng = np.random.default_rng(seed)
    lucky = [c for c in customers if rng.random() < share]
    transactions = tables["transactions"]
    extra = transactions.iloc[:0].reindex(range(len(lucky)))
    extra["customer_id"], extra["amount"] = lucky, float(amount)
    extra["timestamp"] = pd.Series(DECIDED_AT + pd.Timedelta(days=5), index=extra.index).astype(
        transactions["timestamp"].dtype
    )
    if "returned" in extra:
        extra["returned"] = False
    merged = pd.concat([transactions, extra], ignore_index=True)
    return {**tables, "transactions": merged}, lucky


def _known(tables):
    ids = tables["transactions"].loc[
        pd.to_datetime(tables["transactions"]["timestamp"], utc=True) < DECIDED_AT
    ]
    return sorted(ids["customer_id"].dropna().unique())


def test_given_an_injected_effect_then_the_intervals_cover_it_and_exclude_zero(tables):
    from serving.impact import outcomes_after
    from training.labels import visible

    decisions = _decisions(_known(tables))
    given = [d["customer_id"] for d in decisions if ACTION in d["actions"]]
    effected, lucky = _with_effect(tables, given, share=0.3, amount=80.0)
    frame = pd.DataFrame(decisions).loc[lambda f: f["customer_id"].isin(given)]
    before = outcomes_after(frame, visible(tables, AS_OF), 30)
    after = outcomes_after(frame, visible(effected, AS_OF), 30)
    true_purchase = float((after["purchase"] - before["purchase"]).mean())
    true_revenue = float((after["revenue"] - before["revenue"]).mean())

    overall, per_action, measured, pending = measure(decisions, effected, AS_OF, horizon_days=30)

    lift = per_action[ACTION]
    assert measured == len(decisions) and pending == 0
    assert lift["purchase"].low <= true_purchase <= lift["purchase"].high
    assert lift["revenue"].low <= true_revenue <= lift["revenue"].high
    assert lift["purchase"].low > 0 and lift["revenue"].low > 0
    assert overall["purchase"].low > 0, "half the treated got the action: the policy's effect shows overall"
    assert lift["purchase"].n_control == sum(1 for d in decisions if ACTION in d["withheld"])


def test_given_no_effect_then_every_interval_holds_zero(tables):
    decisions = _decisions(_known(tables))

    overall, per_action, _, _ = measure(decisions, tables, AS_OF, horizon_days=30)

    for lifts in (overall, per_action[ACTION]):
        for kpi, lift in lifts.items():
            assert lift.low <= 0 <= lift.high, kpi


def test_given_decisions_whose_window_is_open_then_they_are_pending_and_not_measured(tables):
    late = [{**d, "at": AS_OF - pd.Timedelta(days=10)} for d in _decisions(_known(tables)[:50])]

    overall, _, measured, pending = measure(late, tables, AS_OF, horizon_days=30)

    assert (overall, measured, pending) == ({}, 0, 50)


def test_given_a_decision_log_when_running_impact_then_json_report_plot_and_mlflow_run(
    featurised_world, copy_workspace, tmp_path, monkeypatch
):
    import mlflow

    from cxpredict.cli import app
    from features.decision_log import DecisionLog
    from training.data import load_tables
    from training.tracking import resolve_tracking

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("CXPREDICT_DECISION_LOG_URL", raising=False)
    ws = copy_workspace(featurised_world.ws, tmp_path / "ws")
    decisions = _decisions(_known(load_tables(ws, AS_OF))[:400])
    log = DecisionLog.of(ws)
    log.record_decisions(
        [{**d, "at": d["at"].to_pydatetime(), "models": {}, "actions": [{"action": a} for a in d["actions"]],
          "withheld": [{"action": a} for a in d["withheld"]]} for d in decisions]
    )  # fmt: skip
    treated = next(d for d in decisions if d["actions"])
    log.record_outcome(treated["decision_id"], ACTION, "opened", datetime(2026, 8, 2, tzinfo=UTC))
    log.close()

    result = CliRunner().invoke(
        app, ["impact", "--json", "--since", "2026-07-01", "--workspace", str(ws.root)]
    )

    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["decisions"] == 400 and body["outcomes"] == 1
    assert body["holdout_decisions"] == sum(d["holdout"] for d in decisions)
    assert set(body["overall"]) == {"purchase", "retention", "revenue"} and ACTION in body["per_action"]
    report = json.loads(open(body["report"]).read())
    assert (
        report["decisions"] == 400
        and open(body["report"].replace(".json", ".png"), "rb").read(4) == b"\x89PNG"
    )
    run = mlflow.MlflowClient(tracking_uri=resolve_tracking(ws).tracking_uri).get_run(body["run_id"])
    assert run.data.metrics["decisions"] == 400 and "overall.purchase.lift" in run.data.metrics
    assert not any(d["customer_id"] in json.dumps(run.data.params) for d in decisions)
