"""Metric functions against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from training import metrics as m


def test_given_known_scores_when_computing_auc_then_it_matches_the_pair_count():
    y = np.array([0, 0, 1, 1])
    p = np.array([0.1, 0.4, 0.35, 0.8])  # 3 of 4 positive/negative pairs ordered correctly

    assert m.auc(y, p) == pytest.approx(0.75)
    assert np.isnan(m.auc(np.ones(4), p))


def test_given_calibrated_bins_when_computing_ece_then_it_is_zero():
    p = np.repeat([0.1, 0.5, 0.9], 10)
    y = np.concatenate([[1] + [0] * 9, [1] * 5 + [0] * 5, [1] * 9 + [0]])

    assert m.expected_calibration_error(y, p, bins=3) == pytest.approx(0.0)


def test_given_overconfident_predictions_when_computing_ece_then_it_is_the_gap():
    y = np.array([1, 0] * 50)
    p = np.full(100, 0.9)

    assert m.expected_calibration_error(y, p) == pytest.approx(0.4)


def test_given_a_perfect_ranking_when_computing_lift_then_top_decile_lift_is_one_over_base_rate():
    y = np.array([1] * 10 + [0] * 90)
    p = np.linspace(1, 0, 100)

    assert m.lift_at(y, p, 0.1) == pytest.approx(10.0)
    assert m.binary_metrics(y, p)["lift_top_decile"] == pytest.approx(10.0)


def test_given_predictions_when_computing_regression_metrics_then_values_match():
    y = np.array([1.0, 5.0, 10.0, 40.0])

    assert m.mae(y, np.array([2.0, 5.0, 7.0, 40.0])) == pytest.approx(1.0)
    assert m.interval_coverage(y, np.array([0, 6, 5, 0]), np.array([2, 9, 10, 30])) == pytest.approx(0.5)


def test_given_ranked_labels_when_computing_top_k_accuracy_then_hits_anywhere_in_the_top_count():
    truth = np.array(["a", "b", "c"], dtype=object)
    ranked = np.array([["a", "x"], ["x", "b"], ["x", "y"]], dtype=object)

    assert m.top_k_accuracy(truth, ranked) == pytest.approx(2 / 3)
    assert m.top_k_accuracy(truth, ranked[:, :1]) == pytest.approx(1 / 3)


def test_given_model_and_oracle_metrics_then_the_ratio_is_model_auc_over_oracle_auc():
    out = m.with_oracle({"auc": 0.9}, {"auc": 0.95, "brier": 0.1, "rows": 10.0})

    assert out["auc_ratio_to_oracle"] == pytest.approx(0.9 / 0.95)
    assert out["oracle_brier"] == 0.1 and "oracle_rows" not in out


def test_given_probabilities_when_computing_binary_metrics_then_every_documented_metric_is_present():
    rng = np.random.default_rng(0)
    p = rng.uniform(size=2_000)
    y = (rng.uniform(size=2_000) < p).astype(int)

    out = m.binary_metrics(y, p)

    documented = {"auc", "pr_auc", "log_loss", "brier", "ece", "lift_top_decile", "positive_rate", "rows"}
    assert set(out) == documented
    assert out["ece"] < 0.04 and 0.7 < out["auc"] < 0.9
