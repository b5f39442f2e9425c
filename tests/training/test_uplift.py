"""The uplift task: labels from the decision log, Qini with intervals, and a model that finds who an
action changes on a generated world whose true uplift is known."""

from __future__ import annotations


import numpy as np
import pandas as pd
import pytest

from cxpredict import tasks as registry
from training import labels as L
from training.tasks import uplift

CUTOFFS = [pd.Timestamp(f"2026-{m:02d}-01", tz="UTC") for m in (3, 4, 5)]
AS_OF = pd.Timestamp("2026-06-15", tz="UTC")


def _tables(decisions: list[tuple], purchases: list[tuple]) -> dict[str, pd.DataFrame]:
    treatments = pd.DataFrame(decisions, columns=["customer_id", "timestamp", "arm", "propensity"])
    treatments.insert(0, "decision_id", [f"d{i}" for i in range(len(treatments))])
    treatments["timestamp"] = pd.to_datetime(treatments["timestamp"], utc=True)
    tx = pd.DataFrame(purchases, columns=["customer_id", "timestamp", "amount"])
    tx["timestamp"] = pd.to_datetime(tx["timestamp"], utc=True)
    tx["order_id"] = [f"o{i}" for i in range(len(tx))]
    return {"transactions": tx, L.TREATMENTS: treatments}


def test_given_logged_decisions_then_each_customer_month_keeps_its_first_decision_and_matured_windows_only():
    tables = _tables(
        [
            ("A", "2026-03-02T10:00Z", "retention_offer", 0.2),
            ("A", "2026-03-20T10:00Z", "cross_sell", 0.2),  # same month: the first decision counts
            ("B", "2026-03-05T10:00Z", "control", None),
            ("A", "2026-04-03T10:00Z", "control", None),
            ("C", "2026-06-01T10:00Z", "win_back", 0.2),  # window ends after as_of: not matured
            ("D", "2026-02-10T10:00Z", "win_back", 0.2),  # before the first cutoff
        ],
        [("A", "2026-03-10T12:00Z", 20.0), ("B", "2026-04-20T12:00Z", 5.0), ("A", "2026-05-30T12:00Z", 9.0)],
    )
    found = uplift.labels(tables, CUTOFFS, 28, AS_OF).frame.sort_values(["customer_id", "event_timestamp"])
    assert list(zip(found["customer_id"], found["event_timestamp"].dt.strftime("%m"), found["arm"])) == [
        ("A", "03", "retention_offer"),
        ("A", "04", "control"),
        ("B", "03", "control"),
    ]
    assert found["purchased"].tolist() == [1, 0, 0]  # B bought 46 days after its decision: outside H
    assert found["propensity"].iloc[0] == pytest.approx(0.2) and np.isnan(found["propensity"].iloc[1])


def test_given_no_decision_log_or_no_control_group_then_the_task_is_unavailable_with_the_reason():
    bare = _tables([], [("A", "2026-03-10T12:00Z", 20.0)])
    with pytest.raises(L.LabelsUnavailable, match="no logged decisions"):
        uplift.labels({"transactions": bare["transactions"]}, CUTOFFS, 28, AS_OF)
    treated_only = _tables([("A", "2026-03-02T10:00Z", "retention_offer", 0.2)], [])
    treated_only["transactions"] = bare["transactions"]
    with pytest.raises(L.LabelsUnavailable, match="control"):
        uplift.labels(treated_only, CUTOFFS, 28, AS_OF)


def test_given_a_ranking_by_the_true_effect_then_its_gain_beats_random_and_its_reverse_loses():
    rng = np.random.default_rng(0)
    tau = rng.normal(0.02, 0.05, 5000)
    assert uplift.true_gain_area(tau, tau) > 0
    assert uplift.true_gain_area(tau, -tau) < 0
    assert abs(uplift.true_gain_area(tau, rng.random(5000))) < 0.1 * uplift.true_gain_area(tau, tau)


def test_given_outcomes_driven_by_a_known_effect_then_the_qini_interval_excludes_zero_and_ranks_the_truth_first():
    rng = np.random.default_rng(1)
    n = 6000
    x = rng.random(n)
    treated = rng.random(n) < 0.5
    y = (rng.random(n) < 0.2 + 0.3 * treated * (x > 0.5)).astype(int)
    found = uplift.bootstrap_qini(y, treated, {"model": x, "random": rng.random(n)}, seed=0, resamples=100)
    assert found["model"]["low"] > 0
    assert found["model_vs_random"]["low"] > 0
    assert found["random"]["low"] < 0 < found["random"]["high"]


def test_given_the_registry_then_uplift_is_opt_in_but_reachable_by_name(monkeypatch):
    monkeypatch.delenv(registry.OPT_IN_ENV, raising=False)
    assert "uplift" not in registry.names()
    assert registry.get("uplift").gate_metric == "qini"
    assert registry.get("uplift").model_name == "cx-uplift"
    monkeypatch.setenv(registry.OPT_IN_ENV, "uplift")
    assert registry.names()[-1] == "uplift"


# ---- a generated world with a campaign history (tests/conftest.py: campaign_world) -------------
@pytest.fixture(scope="module")
def trained_uplift(campaign_world):
    ws, results = campaign_world
    return ws, results["uplift"]


def _metric(result, action: str, model: str, metric: str) -> float:
    rows = result.metrics
    hit = rows[(rows.target == action) & (rows.model == model) & (rows.metric == metric)]
    return float(hit["value"].iloc[0])


@pytest.mark.slow
def test_given_a_campaign_history_then_uplift_trains_and_registers_one_effect_head_per_action(trained_uplift):
    ws, result = trained_uplift
    assert result.status == "trained", result.reason
    assert result.model_version == "1"
    heads = result.fitted.bundle.spec["heads"]
    assert sorted(h["action"] for h in heads) == sorted(
        ["cross_sell", "retention_offer", "service_recovery_callback", "win_back"]
    )
    assert {h["kind"] for h in heads} == {"effect"}
    import mlflow

    from training.tracking import resolve_tracking, tracking_session

    with tracking_session(resolve_tracking(ws)):
        model = mlflow.pyfunc.load_model(result.model_uri)
    sample = result.dataset.test.X.head(50)
    predicted = model.predict(sample.astype({c: object for c in sample.select_dtypes("category")}))
    assert {f"uplift_{h['action']}" for h in heads} <= set(predicted.columns)
    assert np.isfinite(predicted.filter(like="uplift_").to_numpy()).all()


@pytest.mark.slow
def test_given_an_uplift_challenger_then_the_gate_judges_it_by_qini_and_policy_value(trained_uplift):
    from training.commands import promote_command

    # given the registered uplift version, when the gate runs on the workspace's evaluation cutoff
    ws, result = trained_uplift
    outcome = promote_command(ws, "uplift", version=result.model_version)
    if result.champion:  # training already made it champion: nothing to judge
        assert outcome.champion_after == result.model_version and not outcome.moved
        return
    # then it is judged by the uplift checks (not AUC or calibration) and moves only if all pass
    names = [check.name for check in outcome.checks]
    assert {"Qini", "policy value (off-policy)", "label definition", "feature service"} <= set(names)
    assert not {"AUC", "calibration (ECE)"} & set(names)
    assert outcome.moved == all(check.passed for check in outcome.checks)
    assert outcome.metrics["candidate"]["rows"] > 0


@pytest.mark.slow
def test_given_the_true_uplift_then_the_model_ranks_it_better_than_risk_targeting(trained_uplift):
    """Direction and ranking: the effects that the features reveal best (unresolved service trouble,
    price sensitivity) are found, in the right sign, and the model's targeting gains more true uplift
    than targeting the customers least likely to buy."""
    _, result = trained_uplift
    for action in ("service_recovery_callback", "retention_offer"):
        model = _metric(result, action, "model", "true_gain_ratio_to_oracle")
        risk = _metric(result, action, "risk_targeting", "true_gain_ratio_to_oracle")
        assert model > max(risk, 0.15), (action, model, risk)
        assert _metric(result, action, "model", "predicted_uplift") > 0
    assert _metric(result, "service_recovery_callback", "model", "true_gain_ratio_to_oracle") > 0.45


@pytest.mark.slow
def test_given_logged_decisions_then_off_policy_estimates_cover_the_true_value_of_the_models_policy(
    trained_uplift,
):
    _, result = trained_uplift

    def policy(metric: str) -> float:
        return _metric(result, uplift.POLICY, "model", metric)

    truth = policy("true_value")
    for estimator in ("ope_ipw", "ope_snipw", "ope_dr"):
        assert policy(f"{estimator}_low") <= truth <= policy(f"{estimator}_high"), estimator
    assert policy("logging_value_low") <= policy("true_logging_value") <= policy("logging_value_high")
    # the oracle's best policy bounds every other one
    assert policy("true_oracle_value") >= max(truth, policy("true_logging_value"))
