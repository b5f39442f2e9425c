"""A linear baseline that wins on validation is served from the bundle like a tree head: same
outputs on the pandas and the matrix path, exact drivers, and a save/load round trip."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from serving.predictor import ServedModel
from training.baselines import fit_logistic, fit_rf_heuristic
from training.model_bundle import ModelBundle, prepare_features

LEVELS = {"region": ("north", "south", "west")}


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(3)
    n = 4_000
    frame = pd.DataFrame(
        {
            "days_since_last_purchase": rng.exponential(60, n),
            "purchase_count_365d": rng.poisson(3, n).astype(float),
            "region": rng.choice(["north", "south", "west", None], n),
        }
    )
    frame.loc[rng.random(n) < 0.1, "days_since_last_purchase"] = np.nan
    logit = (
        0.02 * np.nan_to_num(frame["days_since_last_purchase"], nan=200) - 0.3 * frame["purchase_count_365d"]
    )
    y = (rng.random(n) < 1 / (1 + np.exp(-(logit + (frame["region"] == "west") * 0.8)))).astype(int)
    return prepare_features(frame, list(frame.columns), LEVELS), y


@pytest.fixture(scope="module", params=["logistic", "rf_heuristic"])
def bundle(request, data):
    X, y = data
    if request.param == "logistic":
        baseline = fit_logistic(X, y, 10_000, 0)
    else:
        baseline = fit_rf_heuristic(X, y, "days_since_last_purchase", "purchase_count_365d", 10_000, 0)
    head = {"name": "churn", "kind": "binary", "output": "churn_probability", "prior": float(y.mean())}
    spec = {
        "task": "churn",
        "features": list(X.columns),
        "categorical_levels": {k: list(v) for k, v in LEVELS.items()},
        "heads": [{**head, **baseline.head_fields()}],
        "risk_bands": [0.3, 0.6],
    }
    return ModelBundle(spec, {}, {"churn": baseline.pipeline}), baseline


def test_given_a_linear_head_when_predicting_then_it_equals_its_baseline(bundle, data):
    model, baseline = bundle
    X, _ = data

    np.testing.assert_allclose(model.predict(X)["churn_probability"], baseline.predict_proba(X), rtol=1e-12)


def test_given_a_linear_head_when_reading_plain_columns_then_the_matrix_path_gives_the_pandas_outputs(
    bundle, data
):
    model, _ = bundle
    X, _ = data
    sample = X.head(50)
    columns = {name: sample[name].astype(object).where(sample[name].notna(), None).tolist() for name in X}

    fast = model.outputs(model.prepare_matrix(columns, len(sample)))

    np.testing.assert_allclose(
        fast["churn_probability"], model.predict(sample)["churn_probability"], rtol=1e-12
    )
    assert list(fast["churn_risk_band"]) == list(model.predict(sample)["churn_risk_band"])


def test_given_a_linear_head_then_its_drivers_add_up_to_the_log_odds(bundle, data):
    model, baseline = bundle
    X, _ = data
    sample = X.head(200)

    contributions = model.contributions(sample)
    p = baseline.predict_proba(sample)

    np.testing.assert_allclose(contributions.sum(axis=1), np.log(p / (1 - p)), atol=1e-9)
    assert contributions.shape == (len(sample), len(model.feature_names) + 1)
    assert np.abs(contributions[:, model.feature_names.index("days_since_last_purchase")]).sum() > 0


def test_given_a_linear_head_when_saved_and_loaded_then_outputs_and_serving_drivers_are_unchanged(
    bundle, data, tmp_path
):
    model, _ = bundle
    X, _ = data
    loaded = ModelBundle.load(model.save(tmp_path / "bundle"))
    served = ServedModel.of("churn", "cx-churn", "1", "champion", "churn", loaded)
    matrix = loaded.prepare_matrix({name: X[name].head(20).astype(object).tolist() for name in X}, 20)

    pd.testing.assert_frame_equal(loaded.predict(X), model.predict(X))
    np.testing.assert_allclose(served.explain(matrix), model.contributions(X.head(20)), atol=1e-9)
