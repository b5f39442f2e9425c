"""The single-row fast path answers exactly what ``Booster.predict`` answers, from any thread."""

from __future__ import annotations

import gc
from concurrent.futures import ThreadPoolExecutor

import lightgbm as lgb
import numpy as np
import pytest

from training.model_bundle import RowPredictor


def _booster(objective: str, **params) -> tuple[lgb.Booster, np.ndarray]:
    rng = np.random.default_rng(7)
    X = rng.normal(size=(600, 6))
    X[rng.random(X.shape) < 0.2] = np.nan
    signal = np.nan_to_num(X[:, 0]) + 0.5 * np.nan_to_num(X[:, 1])
    y = {
        "binary": (signal > 0).astype(int),
        "multiclass": np.digitize(signal, [-0.5, 0.5]),
        "quantile": signal + rng.normal(size=len(X)),
    }[objective]
    params = {"objective": objective, "verbose": -1, "num_leaves": 7, "num_threads": 1, **params}
    return lgb.train(params, lgb.Dataset(X, y), num_boost_round=30), X


@pytest.mark.parametrize(
    "objective, params",
    [("binary", {}), ("multiclass", {"num_class": 3}), ("quantile", {"alpha": 0.9})],
)
def test_given_a_booster_then_each_row_scores_as_booster_predict_does(objective, params):
    # given a trained booster and rows with missing values
    booster, X = _booster(objective, **params)
    fast = RowPredictor(booster)

    # when each row is scored alone, then the answer is Booster.predict's, in its shape
    for i in range(0, len(X), 37):
        expected = booster.predict(X[i : i + 1])
        got = fast.predict(X[i : i + 1])
        assert got.shape == expected.shape
        np.testing.assert_array_equal(got, expected)


def test_given_threads_scoring_at_once_then_every_answer_is_its_own_rows():
    # given one predictor shared by four threads
    booster, X = _booster("binary")
    fast = RowPredictor(booster)
    expected = booster.predict(X)

    # when they score interleaved rows concurrently
    def score(offset: int) -> list[tuple[int, float]]:
        return [(i, float(fast.predict(X[i : i + 1])[0])) for _ in range(5) for i in range(offset, len(X), 4)]

    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = [pair for part in pool.map(score, range(4)) for pair in part]

    # then no answer is another row's
    assert len(answers) == 5 * len(X)
    assert all(value == expected[i] for i, value in answers)


def test_given_a_wrong_width_then_a_clear_error_and_the_predictor_still_works():
    booster, X = _booster("binary")
    fast = RowPredictor(booster)
    with pytest.raises(ValueError, match="6 features"):
        fast.predict(X[:1, :5])
    np.testing.assert_array_equal(fast.predict(X[:1]), booster.predict(X[:1]))


def test_given_predictors_dropped_then_the_booster_keeps_scoring():
    # given predictors made and dropped (their FastConfigs freed before the booster is)
    booster, X = _booster("binary")
    for _ in range(20):
        RowPredictor(booster).predict(X[:1])
    gc.collect()

    # then the booster and a new predictor still answer
    np.testing.assert_array_equal(RowPredictor(booster).predict(X[:1]), booster.predict(X[:1]))
