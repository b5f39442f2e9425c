"""Model quality against the generated world's ground truth, behaviour, explanations and tuning.

Calibration bound: ECE <= 0.02 over 10 equal-frequency bins, measured on the held-out cutoff of the
~18,000-customer world (~18,000 rows; the bin means' sampling noise is below ~0.01 there).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training.explain import contributions, drivers, global_importance
from training.pipeline import build_dataset, fit_task

TARGETS = {"churn": "churn", "next_purchase": "purchase"}

pytestmark = pytest.mark.slow  # end-to-end: trains on a generated world


@pytest.mark.parametrize("task", ["churn", "next_purchase"])
def test_given_the_generated_world_when_training_then_the_model_nears_the_oracle_and_beats_baselines(
    quality, task
):
    fitted = quality[task].fitted
    target = TARGETS[task]
    model, oracle = fitted.metric(target, "model", "auc"), fitted.metric(target, "oracle", "auc")
    heuristic = fitted.metric(target, "rf_heuristic", "auc")
    logistic = fitted.metric(target, "logistic", "auc")

    assert model >= 0.95 * oracle, (model, oracle)
    assert model >= heuristic + 0.03, (model, heuristic)
    assert model >= logistic, (model, logistic)
    assert fitted.metric(target, "model", "auc_ratio_to_oracle") == pytest.approx(model / oracle)
    assert fitted.beats_baselines()


@pytest.mark.parametrize("task", ["churn", "next_purchase"])
def test_given_the_generated_world_when_training_then_probabilities_are_calibrated(quality, task):
    fitted = quality[task].fitted
    target = TARGETS[task]

    assert fitted.metric(target, "model", "rows") >= 15_000
    assert fitted.metric(target, "model", "ece") <= 0.02
    assert fitted.metric(target, "model", "brier") < fitted.metric(target, "rf_heuristic", "brier")


def test_given_next_purchase_when_evaluating_days_and_category_then_they_beat_naive_predictions(quality):
    fitted = quality["next_purchase"].fitted

    days = fitted.metrics.loc[fitted.metrics["target"] == "days_to_next"]
    mae = days.loc[days["metric"] == "mae"].set_index("model")["value"]
    assert mae["model"] < mae["train_median"]
    assert 0.65 <= fitted.metric("days_to_next", "model", "interval_coverage") <= 0.95  # nominal 0.8
    assert fitted.metric("next_category", "model", "top3_accuracy") > fitted.metric(
        "next_category", "popularity", "top3_accuracy"
    )


def test_given_next_purchase_outputs_then_intervals_are_ordered_and_categories_ranked(quality):
    result = quality["next_purchase"]
    out = result.fitted.bundle.predict(result.dataset.test.X.head(500))

    assert (out["expected_days_low"] <= out["expected_days_to_purchase"]).all()
    assert (out["expected_days_to_purchase"] <= out["expected_days_high"]).all()
    assert (out["next_category_1_probability"] >= out["next_category_2_probability"]).all()
    assert out["purchase_probability"].between(0, 1).all()


def _mean_churn(fitted, X):
    return float(fitted.bundle.predict(X)["churn_probability"].mean())


def test_given_customers_when_their_last_purchase_is_more_recent_then_churn_risk_falls(quality):
    fitted = quality["churn"].fitted
    X = quality["churn"].dataset.test.X
    lapsed = X.loc[X["days_since_last_purchase"] > 60]

    recent = lapsed.assign(days_since_last_purchase=5.0, days_since_last_event=2.0)

    assert _mean_churn(fitted, recent) < _mean_churn(fitted, lapsed) - 0.05


def test_given_customers_when_unresolved_tickets_are_added_then_churn_risk_rises(quality):
    fitted = quality["churn"].fitted
    X = quality["churn"].dataset.test.X
    active = X.loc[X["days_since_last_event"] < 30]

    troubled = active.assign(service_tickets_unresolved=active["service_tickets_unresolved"] + 2)

    assert _mean_churn(fitted, troubled) > _mean_churn(fitted, active)


def test_given_the_same_features_under_other_customer_ids_then_predictions_are_identical(quality):
    result = quality["churn"]
    frame = pd.concat([result.dataset.test.keys, result.dataset.test.X], axis=1).head(300)
    renamed = frame.assign(customer_id=[f"X{index}" for index in range(len(frame))])

    pd.testing.assert_frame_equal(result.fitted.bundle.predict(frame), result.fitted.bundle.predict(renamed))
    assert "customer_id" not in result.fitted.bundle.feature_names


def test_given_a_model_when_explaining_then_contributions_sum_to_the_raw_score(quality):
    fitted = quality["churn"].fitted
    X = quality["churn"].dataset.test.X.head(200)
    booster = fitted.bundle.boosters["churn"]

    shap = contributions(booster, X)

    np.testing.assert_allclose(shap.sum(axis=1), booster.predict(X, raw_score=True), rtol=1e-6, atol=1e-6)


def test_given_customers_when_asking_drivers_then_top_k_are_ordered_by_impact_with_input_values(quality):
    fitted = quality["churn"].fitted
    X = quality["churn"].dataset.test.X.head(50)

    table = drivers(fitted.bundle, X, k=3)

    assert len(table) == 150 and table.groupby("row")["rank"].apply(list).map(lambda r: r == [1, 2, 3]).all()
    strength = table["impact"].abs().to_numpy().reshape(50, 3)
    assert (np.diff(strength, axis=1) <= 1e-12).all()
    first = table.iloc[0]
    expected = X.iloc[0][first["feature"]]
    assert first["value"] == expected or (pd.isna(first["value"]) and pd.isna(expected))


def test_given_a_model_when_ranking_global_importance_then_recency_of_activity_leads(quality):
    fitted = quality["churn"].fitted
    X = quality["churn"].dataset.test.X.head(500)

    table = global_importance(fitted.bundle.boosters["churn"], X, fitted.bundle.feature_names)

    assert set(table.columns) == {"feature", "gain", "gain_share", "mean_abs_shap"}
    assert table["gain_share"].sum() == pytest.approx(1.0)
    assert table["feature"].iloc[0] in {"days_since_last_event", "days_since_last_purchase"}


def test_given_tune_trials_when_fitting_then_optuna_searches_on_the_validation_cutoff(small_world, kit):
    config = kit.config(tune_trials=2, tasks=("churn",))
    dataset, needs = build_dataset("churn", small_world.tables, kit.features_for(small_world.tables), config)

    fitted = fit_task("churn", dataset, needs, config)

    assert fitted.params["tune_trials"] == 2 and fitted.params["tune_target"] == "churn"
    assert 0.5 < fitted.params["tune_valid_auc"] <= 1.0
    assert fitted.params["lgbm_num_leaves"] != config.lightgbm.num_leaves or (
        fitted.params["lgbm_learning_rate"] != config.lightgbm.learning_rate
    )
